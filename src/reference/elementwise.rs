//! References of the element-wise family: `select_rows`, `argmax` and `sample_row` here;
//! `glu`'s is [`super::mlp::glu`] (the formula [`super::mlp::GluActivation::apply`] defines, in
//! f64).

/// `out[i, :] = src[indices[i], :]` over dense rows of `cols`; an index outside
/// `[0, src_rows)` yields `None` for its row (the kernel leaves that row untouched).
pub fn select_rows<T: Copy>(src: &[T], cols: usize, indices: &[i64]) -> Vec<Option<Vec<T>>> {
    let src_rows = src.len() / cols.max(1);
    indices
        .iter()
        .map(|&i| (i >= 0 && (i as usize) < src_rows).then(|| src[i as usize * cols..][..cols].to_vec()))
        .collect()
}

/// The index of the largest value (greedy decoding; `argmax_rows` per row): strictly greater
/// wins, so ties go to the lower index; NaN never wins; no value above -inf gives 0.
pub fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
}

/// Most logits per row of [`sample_row`] / `sample_rows`: 2^23, so that the fixed-point
/// weights (at most 2^40 each) sum below 2^63.
pub const MAX_SAMPLE_COLS: usize = 1 << 23;

/// The fixed-point weight of a finite logit `v` in a row whose largest is `max`:
/// `trunc(det_exp((v − max) / t) · 2^40)` ([`super::det_exp`]: the kernel's bits; the largest
/// logit weighs exactly 2^40). Integer weights make every sum exact and order-free.
pub fn sample_weight(v: f32, max: f32, t: f32) -> u64 {
    (super::det_exp((v - max) / t) * 1_099_511_627_776.0f32) as u64
}

/// A token drawn from one row of logits (`sample_rows` per row; the model's `Sampler`):
/// - `t` not > 0 (NaN included): no draw, the greedy token ([`argmax`]);
/// - the finite logits (a row with none: [`argmax`]), at temperature `t` > 0, weighted by
///   [`sample_weight`], ranked by descending logit (ties: lower id first);
/// - `top_k` > 0 keeps the k best; `top_p` < 1 then keeps the shortest rank prefix whose weight
///   reaches `ceil(top_p · total)` (at least one token: `top_p` <= 0 keeps the best-ranked; NaN
///   keeps all);
/// - the token is the first id, in ascending id order, whose inclusive prefix of kept weight
///   exceeds `floor(u · mass)` (`u` in [0, 1); the target is clamped into `[0, mass − 1]`).
///
/// O(row) plus a sort of the tokens kept: top-k is a selection; top-p ranks the best k
/// candidates, k doubling from 64, until their prefix reaches its target.
pub fn sample_row(row: &[f32], t: f32, top_k: usize, top_p: f32, u: f32) -> u32 {
    if t.is_nan() || t <= 0.0 {
        return argmax(row);
    }
    let mut kept: Vec<usize> = (0..row.len()).filter(|&i| row[i].is_finite()).collect();
    if kept.is_empty() {
        return argmax(row);
    }
    let max = kept.iter().map(|&i| row[i]).fold(f32::NEG_INFINITY, f32::max);
    let w = |i: usize| sample_weight(row[i], max, t);
    let rank = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    if top_k > 0 && top_k < kept.len() {
        kept.select_nth_unstable_by(top_k - 1, rank);
        kept.truncate(top_k);
    }
    if top_p < 1.0 {
        let total: u64 = kept.iter().map(|&i| w(i)).sum();
        let need = ((top_p as f64 * total as f64).ceil() as u64).max(1);
        kept = rank_prefix(kept, &w, &rank, need);
    }
    kept.sort_unstable();
    let mass: u64 = kept.iter().map(|&i| w(i)).sum();
    // In integers: above 2^53, (mass − 1) as f64 rounds up to mass. (NaN → 0, ±inf saturate.)
    let target = ((u as f64 * mass as f64).floor() as u64).min(mass - 1);
    let mut prefix = 0;
    for &i in &kept {
        prefix += w(i);
        if prefix > target {
            return i as u32;
        }
    }
    kept[kept.len() - 1] as u32 // unreachable: target < mass
}

/// The shortest prefix of `idx` in `rank` order whose weight reaches `need` (all of `idx` if
/// none does), in rank order: the best k ranked, k doubling from 64 (no sort of all of `idx`).
fn rank_prefix(mut idx: Vec<usize>, w: &dyn Fn(usize) -> u64, rank: &dyn Fn(&usize, &usize) -> std::cmp::Ordering, need: u64) -> Vec<usize> {
    let mut k = idx.len().min(64);
    loop {
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, rank);
        }
        idx[..k].sort_unstable_by(rank);
        let mut acc = 0;
        if let Some(j) = idx[..k].iter().position(|&i| {
            acc += w(i);
            acc >= need
        }) {
            idx.truncate(j + 1);
            return idx;
        }
        if k == idx.len() {
            return idx;
        }
        k = (2 * k).min(idx.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_nan_and_infinities() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN, 0.5]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -1e30, f32::INFINITY, f32::INFINITY]), 2);
    }

    /// sample_row against a direct statement of its rule: a full sort by rank, the prefix by
    /// cumulative weight, the draw in id order; on tie-heavy rows with NaN and ±inf, every
    /// setting, many draws.
    #[test]
    fn sample_row_is_its_rule_stated_with_a_full_sort() {
        let mut rng = crate::check::Rng::new(31);
        for (vocab, spread) in [(3000usize, 6.0), (3000, 0.3), (200, 3.0), (5, 1.0), (1, 1.0)] {
            let mut row: Vec<f32> = (0..vocab).map(|_| (rng.uniform(-spread, spread) * 8.0).round() as f32 / 8.0).collect();
            if vocab > 10 {
                row[3] = f32::NAN;
                row[7] = f32::INFINITY;
                row[9] = f32::NEG_INFINITY;
            }
            for (t, top_k, top_p) in [(1.0f32, 0usize, 1.0f32), (0.7, 0, 0.9), (1.3, 40, 1.0), (0.8, 50, 0.5), (1.0, 1, 1.0), (0.5, 0, 1e-6), (2.0, vocab, 0.999)] {
                let finite: Vec<usize> = (0..vocab).filter(|&i| row[i].is_finite()).collect();
                let max = finite.iter().map(|&i| row[i]).fold(f32::NEG_INFINITY, f32::max);
                let w = |i: usize| sample_weight(row[i], max, t);
                let mut ranked = finite.clone();
                ranked.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                if top_k > 0 {
                    ranked.truncate(top_k);
                }
                let total: u64 = ranked.iter().map(|&i| w(i)).sum();
                let need = ((top_p as f64 * total as f64).ceil() as u64).max(1);
                let mut acc = 0;
                let n = if top_p < 1.0 { ranked.iter().position(|&i| { acc += w(i); acc >= need }).map_or(ranked.len(), |j| j + 1) } else { ranked.len() };
                let mut kept = ranked[..n].to_vec();
                kept.sort_unstable();
                let mass: u64 = kept.iter().map(|&i| w(i)).sum();
                for d in 0..50 {
                    let u = (d as f32 + 0.5) / 50.0;
                    let target = (u as f64 * mass as f64).floor() as u64;
                    let mut pre = 0;
                    let want = kept.iter().find(|&&i| { pre += w(i); pre > target }).copied().unwrap() as u32;
                    assert_eq!(sample_row(&row, t, top_k, top_p, u), want, "vocab {vocab} t {t} k {top_k} p {top_p} u {u}");
                }
            }
        }
        // Nothing finite: argmax's choice; the largest logit weighs 2^40; u out of range is clamped.
        assert_eq!(sample_weight(-30.0, 0.0, 1.0), 0, "below e^-27.7 a weight truncates to 0");
        assert_eq!(sample_row(&[f32::NAN, f32::INFINITY, f32::INFINITY], 1.0, 0, 1.0, 0.3), 1);
        assert_eq!(sample_row(&[f32::NAN, f32::NEG_INFINITY], 1.0, 0, 1.0, 0.3), 0);
        assert_eq!(sample_weight(2.5, 2.5, 0.7), 1 << 40);
        assert_eq!(sample_row(&[0.0, 0.0, 0.0], 1.0, 0, 1.0, 1.5), 2);
        assert_eq!(sample_row(&[0.0, 0.0, 0.0], 1.0, 0, 1.0, f32::NAN), 0);
        // A mass above 2^53 (8192 equal logits: 2^53 exactly, then more): u just below 1 and
        // beyond it take the last token, not none.
        let flat = vec![0.25f32; 8193];
        assert_eq!(sample_row(&flat, 1.0, 0, 1.0, 1.0 - f32::EPSILON / 2.0), 8192);
        assert_eq!(sample_row(&flat, 1.0, 0, 1.0, f32::INFINITY), 8192);
        // Per-row settings as sample_rows sanitizes them: temperature not > 0 is greedy (argmax,
        // +inf and all); top_p <= 0 keeps the best-ranked finite logit (ties: the lower id);
        // top_p NaN keeps all.
        let row = [0.5f32, 2.0, f32::NAN, 2.0, f32::INFINITY, -1.0];
        for t in [0.0f32, -0.0, -2.0, f32::NAN, f32::NEG_INFINITY] {
            assert_eq!(sample_row(&row, t, 3, 0.5, 0.9), argmax(&row), "t {t}");
        }
        for (p, u) in [(0.0f32, 0.99f32), (-1.0, 0.5), (f32::NEG_INFINITY, 0.0)] {
            assert_eq!(sample_row(&row, 1.0, 0, p, u), 1, "top_p {p}");
        }
        for u in [0.1f32, 0.5, 0.9] {
            assert_eq!(sample_row(&row, 1.0, 0, f32::NAN, u), sample_row(&row, 1.0, 0, 1.0, u));
        }
    }

    #[test]
    fn selects_repeats_and_skips_out_of_range() {
        let src: Vec<u32> = (0..12).collect(); // 4 rows of 3
        let got = select_rows(&src, 3, &[2, 0, 2, -1, 4]);
        assert_eq!(got, vec![Some(vec![6, 7, 8]), Some(vec![0, 1, 2]), Some(vec![6, 7, 8]), None, None]);
    }
}
