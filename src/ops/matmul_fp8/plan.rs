//! The FP8 GEMM's planner: the problem (`MatmulFp8Problem`), the tile configurations the
//! kernels are built for, and the pure host functions that pick one per shape.

/// How the wgmma kernel accumulates over k.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accumulation {
    /// One tensor-core accumulator over all of k; scales in the epilogue.
    Fast,
    /// Each 128-k partial product added into f32 registers; scales in the epilogue.
    Promoted,
    /// Each 128-k partial product times its block scales, added into f32 registers.
    BlockScaled,
}

impl Accumulation {
    /// A problem's mode: block-scaled when a scale is fine-grained (A 1×128 or B 128×128), else
    /// fast when `fast` (asked for; bf16 operands always, their products being exact), else
    /// promoted.
    pub fn of(block_scaled: bool, fast: bool) -> Self {
        match (block_scaled, fast) {
            (true, _) => Accumulation::BlockScaled,
            (false, true) => Accumulation::Fast,
            (false, false) => Accumulation::Promoted,
        }
    }
}

/// The operands' element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmInput {
    /// FP8 e4m3 with scales: n a multiple of 128; a tile wider than the rest of n (256, 192 or
    /// 160 columns) computes the columns past n from zeros (or the next group's B rows) and
    /// does not store them.
    E4m3,
    /// bf16, unscaled (fast accumulation, no cluster pairs): any n (a multiple of 8); the last
    /// n-tile's columns past n are computed and not stored.
    Bf16,
}

/// The problem, independent of how it is tiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulFp8Problem {
    /// Rows of A (all groups together when grouped).
    pub m: usize,
    /// Columns of D (per group).
    pub n: usize,
    /// The reduction length (columns of A and B).
    pub k: usize,
    /// How the wgmma kernel accumulates over k (decides which tiles exist).
    pub accumulation: Accumulation,
    /// 0 for one GEMM; the number of groups of a grouped GEMM (1 or more), whose sizes the host
    /// does not know.
    pub groups: usize,
    /// The operands' element type.
    pub input: GemmInput,
    /// D (and bias, residual) in bf16; false: f32.
    pub out_bf16: bool,
    /// A residual is added in the epilogue.
    pub residual: bool,
}

impl MatmulFp8Problem {
    /// Whether the TMA-store epilogue can write this problem with `block_m` × `block_n` tiles:
    /// e4m3 operands, bf16 out, no residual, one GEMM (a TMA box would write a grouped tile's
    /// rows past its group), 128-row tiles of whole 64-column boxes (the configurations built).
    pub fn tma_store_fits(&self, block_m: usize, block_n: usize) -> bool {
        self.input == GemmInput::E4m3 && self.out_bf16 && !self.residual && self.groups == 0 && block_m == 128 && block_n.is_multiple_of(64)
    }

    /// An upper bound on the m-tiles of `block_m` rows, over every split of m rows into the
    /// groups (each group's last tile may be partial): ceil(m / block_m) + min(groups, m) − 1,
    /// exact for one GEMM or one group. The kernels use the same bound (`max_units`, matmul_fp8.cuh).
    pub fn m_tiles(&self, block_m: usize) -> usize {
        if self.m == 0 {
            return 0;
        }
        self.m.div_ceil(block_m).saturating_add(self.groups.max(1).min(self.m) - 1)
    }

    /// The kernels' k-steps: 128 bytes of k each (128 e4m3 or 64 bf16 values; the last bf16
    /// step zero-filled past k).
    pub fn k_steps(&self) -> usize {
        let bytes = if self.input == GemmInput::E4m3 { 1 } else { 2 };
        self.k.saturating_mul(bytes).div_ceil(128)
    }

    /// Whether the kernels can run this problem in `splits` k-slices (split-k): one GEMM (not
    /// grouped), at least one k-step per slice, and the f32 partials, `splits · m · n`, within
    /// the [`SPLIT_K_WORKSPACE_FLOATS`] the device keeps for them. Pairs and the TMA-store
    /// epilogue are the tile's business ([`check_sm90_tile`]).
    pub fn split_k_fits(&self, splits: usize) -> bool {
        splits >= 2
            && self.groups == 0
            && splits <= self.k_steps()
            && splits.checked_mul(self.m).and_then(|v| v.checked_mul(self.n)).is_some_and(|v| v <= SPLIT_K_WORKSPACE_FLOATS)
    }
}

/// The f32 partial sums split-k may use (16 MiB, allocated by a `Device` at its first split-k
/// GEMM and kept): `k_splits · m · n` at most. The planner splits only problems with too few
/// tiles to fill the GPU and keeps tiles × slices ≤ SMs, so `k_splits · m · n` ≤ SMs ×
/// block_m × block_n: on an H200 at most 1.1 M floats with 64 × 128 tiles and 4.3 M with
/// 128 × 256 ones (where that would not fit, it takes fewer slices).
pub const SPLIT_K_WORKSPACE_FLOATS: usize = 1 << 22;
/// The most k-slices the planner makes of a tile (each slice's partials are written and read
/// once more: past a few slices per SM that costs more than the idle SMs gain).
const MAX_SPLITS: usize = 16;
/// The planner splits k only where the tiles fill at most 1/SPLIT_BELOW of the SMs: above that
/// they already stream at near the GPU's bandwidth if one SM pulls 4.06 TB/s ÷ 33 ≈ 120 GB/s,
/// and the reduction's launch (≈ 2 µs) would cost more than the idle SMs gain. A prediction
/// (docs/matmul_fp8.md): `bench --tune` times every slice count wherever the tiles leave SMs idle.
const SPLIT_BELOW: usize = 4;
/// The fewest k-steps the planner gives a slice: a slice streams its operands through the
/// CTA's TMA ring, and a slice of one step leaves it nothing to overlap.
const MIN_SLICE_STEPS: usize = 2;

/// How a problem is tiled and scheduled (the kernels' template choice plus the schedule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileConfig {
    /// Rows of D per tile (64 or 128).
    pub block_m: usize,
    /// Columns of D per tile (128, 160, 192 or 256).
    pub block_n: usize,
    /// Tile order: groups of `group_m` m-tiles, m fastest inside a group (L2 reuse).
    pub group_m: usize,
    /// CTAs launched (the wgmma kernel is persistent: at most one per SM), whole clusters.
    pub num_ctas: usize,
    /// CTAs per cluster along m (wgmma kernel): 1, or 2 for a pair of 128-row tiles sharing
    /// one B tile, each CTA loading half of it by TMA multicast (half the L2→SM traffic for B).
    pub cluster_m: usize,
    /// The wgmma kernel's TMA-store epilogue: bf16 results staged in shared memory and stored
    /// by TMA while the consumers go on to the next tile ([`MatmulFp8Problem::tma_store_fits`]).
    /// false: the consumers store through an f32 staging buffer themselves.
    pub tma_store: bool,
    /// k-slices per tile (split-k, both kernels): 1 = none. s ≥ 2 runs each tile as s units,
    /// each over a contiguous 1/s of the k-steps (on s SMs where the tiles alone leave SMs
    /// idle), writing f32 partials that a second kernel sums and finishes (scales, bias,
    /// residual, one rounding). One GEMM only, no pairs, no TMA store
    /// ([`MatmulFp8Problem::split_k_fits`]).
    pub k_splits: usize,
}

impl TileConfig {
    /// The same tiles without split-k: one unit per tile, on the split grid's CTAs divided by
    /// its slices (at least one).
    pub fn unsplit(self) -> TileConfig {
        TileConfig { k_splits: 1, num_ctas: (self.num_ctas / self.k_splits.max(1)).max(1), ..self }
    }
}

/// "128x256 c2 g4 ctas132" (+ " tma-store", + " k8"): tile, CTAs per cluster, tile-order group,
/// grid, the TMA-store epilogue, k-slices per tile.
impl std::fmt::Display for TileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} c{} g{} ctas{}", self.block_m, self.block_n, self.cluster_m, self.group_m, self.num_ctas)?;
        if self.tma_store {
            f.write_str(" tma-store")?;
        }
        if self.k_splits > 1 {
            write!(f, " k{}", self.k_splits)?;
        }
        Ok(())
    }
}

/// (block_m, block_n, accumulation) the wgmma kernel is built for (matmul_fp8_sm90.cu):
/// promotion keeps a second accumulator set, so only the fast mode has 256-column tiles (and
/// promotion's widest is 192: 96 + 96 accumulators per thread; block scales' 160, whose tiles
/// span two of B's scale blocks). Every 128-row e4m3 configuration is also built as cluster
/// pairs; bf16 operands have the fast configurations, without pairs.
pub const SM90_TILES: &[(usize, usize, Accumulation)] = &[
    (128, 256, Accumulation::Fast),
    (128, 128, Accumulation::Fast),
    (64, 128, Accumulation::Fast),
    (128, 192, Accumulation::Promoted),
    (128, 160, Accumulation::Promoted),
    (128, 128, Accumulation::Promoted),
    (64, 128, Accumulation::Promoted),
    (128, 160, Accumulation::BlockScaled),
    (128, 128, Accumulation::BlockScaled),
    (64, 128, Accumulation::BlockScaled),
];
/// Configurations that [`plan_sm90`] does not pick until an H200 run has timed them
/// (`warpcore bench --tune` times them beside the plan's pick; docs/matmul_fp8.md has the
/// prediction): the 128×192 and 128×160 promoted tiles and the 128×160 block-scaled one
/// (2026-11-30). The planner also keeps to e4m3 tiles that divide n until tails are measured.
/// Built only with [`TUNING_BUILT`].
pub const UNMEASURED: &[(usize, usize, Accumulation)] =
    &[(128, 192, Accumulation::Promoted), (128, 160, Accumulation::Promoted), (128, 160, Accumulation::BlockScaled)];

/// Whether this build has the configurations only a tuner runs (the `matmul-fp8-tuning`
/// feature): the [`UNMEASURED`] tiles and the TMA-store epilogue ([`TileConfig::tma_store`]).
/// Without it [`sm90_candidates`] leaves them out and [`check_sm90_tile`] refuses them.
pub const TUNING_BUILT: bool = cfg!(feature = "matmul-fp8-tuning");

/// Whether `t` is one of the [`UNMEASURED`] configurations for accumulation `acc`.
pub fn is_unmeasured(acc: Accumulation, t: &TileConfig) -> bool {
    UNMEASURED.contains(&(t.block_m, t.block_n, acc))
}

/// The mma.sync kernel's one tile.
pub const SM80_TILE: (usize, usize) = (128, 128);
/// m-tiles per group in the tile order.
const GROUP_M: usize = 8;

/// Relative tensor-core efficiency the planner assumes per tile shape: 128×256 (two consumer
/// warpgroups of m64n256) is the reference; 128×128 loses to the smaller wgmma N and more B
/// traffic per FLOP; a 64-row tile has one consumer warpgroup, which cannot keep the tensor
/// cores busy on its own. Predictions to check on the H200 (docs/matmul_fp8.md).
fn tile_efficiency(block_m: usize, block_n: usize) -> f64 {
    match (block_m, block_n) {
        (128, 256) => 1.0,
        (128, 192) => 0.95,
        (128, 160) => 0.93,
        (128, 128) => 0.9,
        _ => 0.6,
    }
}

/// The gain the planner assumes for a cluster pair over two lone CTAs: a pair reads its B tile
/// from L2 once instead of twice (32 instead of 48 KB per 128×256 stage and CTA), which matters
/// where L2→SM bandwidth limits the large shapes. A prediction (docs/matmul_fp8.md), to be
/// replaced by the H200's number: `warpcore bench` times the bar shapes with and without pairs.
/// Grouped GEMMs have no pairs (a pair's tiles could belong to different groups).
const PAIR_GAIN: f64 = 1.1;

/// The built (block_m, block_n, cluster_m) shapes that can run `p` on `sm_count` SMs: the
/// accumulation's tiles (any block_n: the last n-tile may be partial; the [`UNMEASURED`] ones
/// only if [`TUNING_BUILT`]), pairs only of 128-row e4m3 tiles of one GEMM (a grouped GEMM's
/// pair could straddle two groups) on at least 2 SMs.
fn sm90_shapes(p: &MatmulFp8Problem, sm_count: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let bf16 = p.input == GemmInput::Bf16;
    SM90_TILES
        .iter()
        .filter(move |&&tile @ (_, _, acc)| acc == p.accumulation && (TUNING_BUILT || !UNMEASURED.contains(&tile)))
        .flat_map(|&(bm, bn, _)| [(bm, bn, 1), (bm, bn, 2)])
        .filter(move |&(bm, _, cm)| cm == 1 || (bm == 128 && sm_count >= 2 && p.groups == 0 && !bf16))
}

/// The persistent grid of a shape: one CTA per unit up to one per SM, in whole clusters.
fn num_ctas(p: &MatmulFp8Problem, sm_count: usize, bm: usize, bn: usize, cm: usize) -> usize {
    let units = p.m_tiles(bm).max(1).div_ceil(cm).saturating_mul(p.n.div_ceil(bn).max(1));
    units.min(sm_count.max(1) / cm) * cm
}

/// Picks the wgmma kernel's tile for a problem on a GPU with `sm_count` SMs: the configuration
/// with the least modelled time `waves · block_m · block_n / efficiency`, where waves =
/// ceil(units / slots) (so small-m problems take 64-row tiles and more CTAs, large ones the
/// 128×256 tile; bf16 n tails count as whole tiles; e4m3 tiles must divide n, and the
/// [`UNMEASURED`] ones are left to `bench --tune`). A 128-row tile may run as cluster pairs (units of two m-tiles, SMs / 2
/// slots, efficiency × `PAIR_GAIN`): pairs win unless they cost a wave (an odd m-tile count
/// leaves half a pair idle). `cluster` forces the pair choice (see [`super::MatmulFp8Config`]); None
/// when forcing pairs leaves no configuration. Ties go to the larger tile (listed first).
/// Then, for one GEMM whose tiles fill at most a quarter of the SMs, split-k (`k_splits`,
/// `plan_splits`: slices on the idle SMs).
/// `warpcore bench --tune` times every configuration of [`sm90_candidates`] against this pick.
pub fn plan_sm90(p: &MatmulFp8Problem, sm_count: usize, cluster: Option<usize>) -> Option<TileConfig> {
    let sms = sm_count.max(1);
    let mut best: Option<(f64, TileConfig)> = None;
    let planned = |bm: usize, bn: usize| !UNMEASURED.contains(&(bm, bn, p.accumulation)) && (p.input == GemmInput::Bf16 || p.n.is_multiple_of(bn));
    for (bm, bn, cm) in sm90_shapes(p, sms).filter(|&(bm, bn, _)| planned(bm, bn)) {
        let m_tiles = p.m_tiles(bm).max(1);
        let allowed = match cluster {
            Some(c) => c == cm,
            None => cm == 1 || m_tiles >= 2,
        };
        if !allowed {
            continue;
        }
        let units = m_tiles.div_ceil(cm).saturating_mul(p.n.div_ceil(bn).max(1));
        let gain = if cm == 2 { PAIR_GAIN } else { 1.0 };
        let cost = units.div_ceil(sms / cm) as f64 * (bm * bn) as f64 / (tile_efficiency(bm, bn) * gain);
        if best.is_none_or(|(c, _)| cost < c) {
            let t = TileConfig { block_m: bm, block_n: bn, group_m: GROUP_M / cm, num_ctas: num_ctas(p, sms, bm, bn, cm), cluster_m: cm, tma_store: false, k_splits: 1 };
            best = Some((cost, t));
        }
    }
    best.map(|(_, t)| {
        let splits = if t.cluster_m == 1 { plan_splits(p, sms, t.block_m, t.block_n) } else { 1 };
        TileConfig { k_splits: splits, num_ctas: t.num_ctas * splits, ..t }
    })
}

/// Split-k for a tile of `bm` × `bn` (a pure function of the problem, like the rest of the plan):
/// 1 unless the tiles fill at most a quarter of the `sms` SMs ([`SPLIT_BELOW`]); then as many
/// k-slices per tile as fill them (tiles × slices ≤ sms), at most [`MAX_SPLITS`], each of at
/// least [`MIN_SLICE_STEPS`] k-steps, and within the workspace. A decode-sized GEMM (m ≤ 64)
/// with n = 2048 has 16 tiles of 64 × 128: its weights would stream through 16 SMs, each
/// pulling what one CTA's TMA ring keeps in flight (docs/matmul_fp8.md, "Split-k").
fn plan_splits(p: &MatmulFp8Problem, sms: usize, bm: usize, bn: usize) -> usize {
    let tiles = p.m_tiles(bm).max(1).saturating_mul(p.n.div_ceil(bn).max(1));
    if p.groups != 0 || SPLIT_BELOW.saturating_mul(tiles) > sms {
        return 1;
    }
    let most = (sms / tiles).min(MAX_SPLITS).min(p.k_steps() / MIN_SLICE_STEPS);
    (2..=most).rev().find(|&s| p.split_k_fits(s)).unwrap_or(1)
}

/// Every configuration the wgmma kernel can run `p` with on `sm_count` SMs, for a tuner to time
/// (`warpcore bench --tune`): each built shape of `sm90_shapes` with m-tile groups of half,
/// once and twice the planner's (in units: a pair's group counts pairs), on the planner's grid;
/// and, where it fits and [`TUNING_BUILT`], the same shape with the TMA-store epilogue at the
/// planner's group.
/// [`plan_sm90`]'s choice is among them.
pub fn sm90_candidates(p: &MatmulFp8Problem, sm_count: usize) -> Vec<TileConfig> {
    let sms = sm_count.max(1);
    let mut out = Vec::new();
    for (bm, bn, cm) in sm90_shapes(p, sms) {
        let t = TileConfig { block_m: bm, block_n: bn, group_m: GROUP_M / cm, num_ctas: num_ctas(p, sms, bm, bn, cm), cluster_m: cm, tma_store: false, k_splits: 1 };
        for group_m in [GROUP_M / 2 / cm, GROUP_M / cm, 2 * GROUP_M / cm] {
            out.push(TileConfig { group_m, ..t });
        }
        if TUNING_BUILT && p.tma_store_fits(bm, bn) {
            out.push(TileConfig { tma_store: true, ..t });
        }
        // Split-k where the tiles leave SMs idle: the listed slice counts up to two waves and the
        // plan's own count for this tile (e.g. 5 for 24 tiles on 132 SMs), one CTA per unit up
        // to one per SM.
        let tiles = p.m_tiles(bm).max(1).saturating_mul(p.n.div_ceil(bn).max(1));
        if cm == 1 && tiles < sms {
            let planned = plan_splits(p, sms, bm, bn);
            let listed = SPLIT_CANDIDATES.iter().copied().filter(|&s| tiles * s <= 2 * sms && p.split_k_fits(s));
            let mut counts: Vec<usize> = listed.chain((planned > 1).then_some(planned)).collect();
            counts.sort_unstable();
            counts.dedup();
            for splits in counts {
                out.push(TileConfig { k_splits: splits, num_ctas: (tiles * splits).min(sms), ..t });
            }
        }
    }
    out
}

/// The k-slice counts `bench --tune` times where a shape's tiles leave SMs idle.
const SPLIT_CANDIDATES: &[usize] = &[2, 3, 4, 6, 8, 12, 16];

/// Whether the wgmma kernel can run `p` with a configuration given by the caller
/// ([`super::MatmulFp8Config::tile`]) instead of the planner: Err names what is wrong. Any
/// `group_m` ≥ 1 (more than the m-tiles: one group of them all) and any grid of whole clusters (`num_ctas`; the launcher runs at most one CTA
/// per unit and, with pairs, as many clusters as the GPU co-schedules) is accepted.
pub fn check_sm90_tile(p: &MatmulFp8Problem, t: &TileConfig) -> Result<(), &'static str> {
    if !SM90_TILES.contains(&(t.block_m, t.block_n, p.accumulation)) {
        return Err("tile (block_m × block_n not built for this accumulation: see SM90_TILES)");
    }
    if !TUNING_BUILT && (is_unmeasured(p.accumulation, t) || t.tma_store) {
        return Err("tile (the UNMEASURED tiles and tma_store are built only with the `matmul-fp8-tuning` feature)");
    }
    if !(t.cluster_m == 1 || (t.cluster_m == 2 && sm90_shapes(p, 2).any(|s| s == (t.block_m, t.block_n, 2)))) {
        return Err("tile (cluster_m: 1, or 2 with 128-row e4m3 tiles of one GEMM)");
    }
    if t.group_m < 1 || t.group_m > i32::MAX as usize {
        return Err("tile (group_m: at least 1)");
    }
    if t.num_ctas < t.cluster_m || !t.num_ctas.is_multiple_of(t.cluster_m) || t.num_ctas > i32::MAX as usize {
        return Err("tile (num_ctas: whole clusters, at least one)");
    }
    if t.tma_store && !p.tma_store_fits(t.block_m, t.block_n) {
        return Err("tile (tma_store: e4m3 operands, bf16 out, no residual, one GEMM, 128-row tiles, block_n a multiple of 64)");
    }
    if t.k_splits == 0 {
        return Err("tile (k_splits: at least 1)");
    }
    if t.k_splits > 1 && (t.cluster_m != 1 || t.tma_store || !p.split_k_fits(t.k_splits)) {
        return Err("tile (k_splits: one GEMM, no pairs, no TMA store, at most one slice per k-step, k_splits · m · n within SPLIT_K_WORKSPACE_FLOATS)");
    }
    Ok(())
}

/// The mma.sync kernel's plan on a GPU with `sm_count` SMs: its one tile, one CTA per tile
/// (grouped: per tile of the bound, the CTAs past the groups' tiles exit at once), and split-k
/// by the same rule as [`plan_sm90`]'s (then one CTA per tile and k-slice).
pub fn plan_sm80(p: &MatmulFp8Problem, sm_count: usize) -> TileConfig {
    let (bm, bn) = SM80_TILE;
    let tiles = p.m_tiles(bm).saturating_mul(p.n.div_ceil(bn));
    let splits = plan_splits(p, sm_count.max(1), bm, bn);
    TileConfig { block_m: bm, block_n: bn, group_m: GROUP_M, num_ctas: tiles.saturating_mul(splits), cluster_m: 1, tma_store: false, k_splits: splits }
}
