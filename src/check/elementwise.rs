//! Element-wise family: `glu` against [`crate::reference::mlp`]'s activation formula,
//! `select_rows` against [`crate::reference::elementwise::select_rows`], `argmax_rows`
//! against [`crate::reference::elementwise::argmax`] and `sample_rows` against
//! [`crate::reference::elementwise::sample_row`], on fresh random inputs with poisoned
//! outputs. Used by tests/elementwise.rs and `warpcore check`.

use super::{compare, compare_exact, compare_ints, gather_rows, outside_rows, tolerance, CheckResult, Rng};
use crate::ops::elementwise as ops;
use crate::reference::elementwise as reference;
use crate::reference::mlp::GluActivation;
use crate::{DType, Device, IndexType, Result, TensorView, TensorViewMut};
use half::{bf16, f16};

/// gate and up as the two halves of one fused gate_up row (`[gate | up | gap]`, row stride
/// `2 · cols + in_gap`), out rows at `out_stride`; both views start `offset` elements into
/// their buffers (an odd offset or gap exercises the scalar path).
#[derive(Clone, Copy, Debug)]
pub struct GluCase {
    /// Rows (tokens).
    pub rows: usize,
    /// Columns of gate, up and out (the MLP's intermediate size).
    pub cols: usize,
    /// Elements after each fused `[gate | up]` row before the next.
    pub in_gap: usize,
    /// Row stride of out, in elements (>= cols).
    pub out_stride: usize,
    /// Elements before the first row of both views.
    pub offset: usize,
    /// The gate activation.
    pub act: GluActivation,
    /// Seed of the random inputs.
    pub seed: u64,
}

impl GluCase {
    /// A dense fused gate_up buffer and a dense output.
    pub fn dense(rows: usize, cols: usize, act: GluActivation, seed: u64) -> Self {
        Self { rows, cols, in_gap: 0, out_stride: cols, offset: 0, act, seed }
    }
    fn in_stride(&self) -> usize {
        2 * self.cols + self.in_gap
    }
}

/// `glu` against the reference: the written rows within bf16/f16/f32 tolerance of
/// `act(gate) · up` in f64, the rest of the output still poison.
pub fn check_glu<T: DType>(dev: &Device, case: &GluCase) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    let in_host: Vec<T> = rng.vec(c.offset + c.rows * c.in_stride(), -6.0, 6.0);
    let out_host = vec![T::NAN; c.offset + c.rows * c.out_stride];
    let input = dev.upload(&in_host)?;
    let mut out = dev.upload(&out_host)?;
    ops::glu(
        dev,
        &TensorView::new(input.slice(c.offset..), [c.rows, c.cols], [c.in_stride(), 1])?,
        &TensorView::new(input.slice(c.offset + c.cols..), [c.rows, c.cols], [c.in_stride(), 1])?,
        &mut TensorViewMut::new(out.slice_mut(c.offset..), [c.rows, c.cols], [c.out_stride, 1])?,
        c.act,
    )?;
    let got = dev.download(&out)?;
    let gate = gather_rows(&in_host, c.offset, c.rows, c.cols, c.in_stride());
    let up = gather_rows(&in_host, c.offset + c.cols, c.rows, c.cols, c.in_stride());
    let want: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| c.act.apply(g.to_f64()) * u.to_f64()).collect();
    let rest = |b: &[T]| outside_rows(b, c.offset, c.rows, c.cols, c.out_stride);
    Ok(CheckResult {
        op: "glu",
        dtype: T::NAME,
        shape: format!("[{}, {}] {:?} gap {} out stride {} offset {}", c.rows, c.cols, c.act, c.in_gap, c.out_stride, c.offset),
        comparisons: vec![
            compare("out", &gather_rows(&got, c.offset, c.rows, c.cols, c.out_stride), &want, tolerance::<T>()).in_rows(c.cols),
            compare_exact("outside out (untouched)", &rest(&got), &rest(&out_host)),
        ],
    })
}

/// `num_rows` rows chosen from a table of `src_rows` rows of `cols` (src rows at `src_stride`,
/// out rows at `out_stride`, both from `offset`); `bad_every > 0` makes every bad_every-th index
/// out of range (−1 or src_rows), whose row must stay poison.
#[derive(Clone, Copy, Debug)]
pub struct SelectCase {
    /// Rows in the source table.
    pub src_rows: usize,
    /// Rows selected (indices, and rows of out).
    pub num_rows: usize,
    /// Elements per row.
    pub cols: usize,
    /// Row stride of the source, in elements.
    pub src_stride: usize,
    /// Row stride of out, in elements.
    pub out_stride: usize,
    /// Elements before the first row of both views.
    pub offset: usize,
    /// Every `bad_every`-th index is out of range (0: none).
    pub bad_every: usize,
    /// Seed of the random inputs.
    pub seed: u64,
}

impl SelectCase {
    /// Dense rows, every index in range.
    pub fn dense(src_rows: usize, num_rows: usize, cols: usize, seed: u64) -> Self {
        Self { src_rows, num_rows, cols, src_stride: cols, out_stride: cols, offset: 0, bad_every: 0, seed }
    }
}

/// `select_rows` against the reference, bit-exact (a copy): selected rows equal their source,
/// rows of out-of-range indices and everything outside the rows untouched.
pub fn check_select_rows<T: DType, I: IndexType + TryFrom<i64>>(dev: &Device, case: &SelectCase) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    let src_host: Vec<T> = rng.vec(c.offset + c.src_rows * c.src_stride, -4.0, 4.0);
    let indices: Vec<i64> = (0..c.num_rows)
        .map(|i| {
            if c.bad_every > 0 && i % c.bad_every == c.bad_every - 1 {
                if i % 2 == 0 {
                    -1
                } else {
                    c.src_rows as i64
                }
            } else {
                (rng.next_u64() % c.src_rows.max(1) as u64) as i64
            }
        })
        .collect();
    let idx_host: Vec<I> = indices.iter().map(|&i| I::try_from(i).ok().expect("indices fit the index type")).collect();
    let out_host = vec![T::NAN; c.offset + c.num_rows * c.out_stride];
    let src = dev.upload(&src_host)?;
    let idx = dev.upload(&idx_host)?;
    let mut out = dev.upload(&out_host)?;
    ops::select_rows(
        dev,
        &TensorView::new(src.slice(c.offset..), [c.src_rows, c.cols], [c.src_stride, 1])?,
        &TensorView::contiguous(idx.as_view(), [c.num_rows])?,
        &mut TensorViewMut::new(out.slice_mut(c.offset..), [c.num_rows, c.cols], [c.out_stride, 1])?,
    )?;
    let got = dev.download(&out)?;
    let dense_src = gather_rows(&src_host, c.offset, c.src_rows, c.cols, c.src_stride);
    let want: Vec<T> = reference::select_rows(&dense_src, c.cols, &indices)
        .into_iter()
        .enumerate()
        .flat_map(|(r, row)| row.unwrap_or_else(|| out_host[c.offset + r * c.out_stride..][..c.cols].to_vec()))
        .collect();
    let rest = |b: &[T]| outside_rows(b, c.offset, c.num_rows, c.cols, c.out_stride);
    Ok(CheckResult {
        op: "select_rows",
        dtype: T::NAME,
        shape: format!(
            "{} of {} rows x {} ({}) strides {}/{} offset {} bad every {}",
            c.num_rows,
            c.src_rows,
            c.cols,
            I::NAME,
            c.src_stride,
            c.out_stride,
            c.offset,
            c.bad_every
        ),
        comparisons: vec![
            compare_exact("out (copied rows; skipped rows keep the poison)", &gather_rows(&got, c.offset, c.num_rows, c.cols, c.out_stride), &want),
            compare_exact("outside out (untouched)", &rest(&got), &rest(&out_host)),
        ],
    })
}

/// `rows` rows of `cols` logits at row stride `stride` (from `offset`); `special` plants ties,
/// NaN, ±inf and all-NaN / all--inf rows (rows cycle through them), else plain random values.
#[derive(Clone, Copy, Debug)]
pub struct ArgmaxCase {
    /// Rows of logits.
    pub rows: usize,
    /// Logits per row (the vocabulary size).
    pub cols: usize,
    /// Row stride of the logits, in elements.
    pub stride: usize,
    /// Elements before the first row.
    pub offset: usize,
    /// Plant ties, NaN and ±inf (see above).
    pub special: bool,
    /// Seed of the random inputs.
    pub seed: u64,
}

impl ArgmaxCase {
    /// Dense rows at offset 0.
    pub fn dense(rows: usize, cols: usize, special: bool, seed: u64) -> Self {
        Self { rows, cols, stride: cols, offset: 0, special, seed }
    }
}

/// `argmax_rows` against [`reference::argmax`], exact; the output's guard element (after the
/// rows) untouched.
pub fn check_argmax_rows(dev: &Device, case: &ArgmaxCase) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    let mut host: Vec<f32> = rng.vec(c.offset + c.rows * c.stride, -30.0, 30.0);
    if c.special {
        for r in 0..c.rows {
            let row = &mut host[c.offset + r * c.stride..][..c.cols];
            let pick = |rng: &mut Rng| (rng.next_u64() % c.cols as u64) as usize;
            match r % 6 {
                // A tie for the maximum: the lower index must win.
                0 => {
                    let (a, b) = (pick(&mut rng), pick(&mut rng));
                    row[a] = 1e30;
                    row[b] = 1e30;
                }
                // NaN everywhere but one value.
                1 => {
                    let keep = pick(&mut rng);
                    row.iter_mut().enumerate().for_each(|(i, v)| if i != keep { *v = f32::NAN });
                }
                2 => row.fill(f32::NAN),
                3 => row.fill(f32::NEG_INFINITY),
                // +inf twice among NaNs and ordinary values.
                4 => {
                    for _ in 0..3 {
                        let i = pick(&mut rng);
                        row[i] = f32::NAN;
                    }
                    let (a, b) = (pick(&mut rng), pick(&mut rng));
                    row[a] = f32::INFINITY;
                    row[b] = f32::INFINITY;
                }
                // The maximum in the last column.
                _ => row[c.cols - 1] = 1e30,
            }
        }
    }
    let x = dev.upload(&host)?;
    let poison = -7i32;
    let mut out = dev.upload(&vec![poison; c.rows + 1])?;
    ops::argmax_rows(dev, &TensorView::new(x.slice(c.offset..), [c.rows, c.cols], [c.stride, 1])?, &mut TensorViewMut::contiguous(out.slice_mut(..c.rows), [c.rows])?)?;
    let got = dev.download(&out)?;
    let want: Vec<i32> = (0..c.rows).map(|r| reference::argmax(&host[c.offset + r * c.stride..][..c.cols]) as i32).collect();
    Ok(CheckResult {
        op: "argmax_rows",
        dtype: "f32",
        shape: format!("[{}, {}] stride {} offset {}{}", c.rows, c.cols, c.stride, c.offset, if c.special { " ties/NaN/inf" } else { "" }),
        comparisons: vec![compare_ints("out", &got[..c.rows], &want), compare_ints("guard after out (untouched)", &got[c.rows..], &[poison])],
    })
}

/// `sample_rows`: `rows` rows of `cols` logits (row stride `stride`), settings, and uniforms
/// (drawn from the seed; row r's is 0 or just below 1 for r % 7 == 0 or 1). `special` makes the
/// rows awkward: ties on a 1/8 grid, NaN / ±inf / ±0, all-equal and nothing-finite rows.
#[derive(Clone, Copy, Debug)]
pub struct SampleCase {
    /// Rows of logits (sequences).
    pub rows: usize,
    /// Logits per row (the vocabulary size).
    pub cols: usize,
    /// Row stride of the logits, in elements.
    pub stride: usize,
    /// Softmax temperature (> 0) for every row.
    pub temperature: f32,
    /// Tokens kept per row (0: all).
    pub top_k: usize,
    /// Nucleus threshold in (0, 1] (1: all).
    pub top_p: f32,
    /// Awkward rows (see above).
    pub special: bool,
    /// Each row its own settings (`sample_rows_each`), drawn from [`ROW_SETTINGS`] (the case's
    /// temperature, top_k and top_p are not used).
    pub per_row: bool,
    /// Seed of the logits and the uniforms.
    pub seed: u64,
}

impl SampleCase {
    /// Dense ordinary rows, one setting `(temperature, top_k, top_p)` for all of them.
    pub fn new(rows: usize, cols: usize, (temperature, top_k, top_p): (f32, usize, f32), seed: u64) -> Self {
        Self { rows, cols, stride: cols, temperature, top_k, top_p, special: false, per_row: false, seed }
    }
}

/// Per-row settings a batch of requests may hold, sanitized on the device: greedy rows
/// (temperature 0, negative, NaN), temperatures 0.05–2 and +inf (equal weights), top_k
/// negative / 0 / small / large, top_p NaN, <= 0, tiny, usual, 1 and above 1.
pub const ROW_SETTINGS: ([f32; 8], [i32; 6], [f32; 8]) = (
    [0.0, -1.0, f32::NAN, 0.05, 0.7, 1.0, 2.0, f32::INFINITY],
    [-3, 0, 1, 5, 300, i32::MAX],
    [f32::NAN, -0.5, 0.0, 1e-6, 0.5, 0.9, 1.0, 1.5],
);

/// `sample_rows` against [`reference::sample_row`], exact (the same token: the weights are the
/// same bits on both sides); the output's guard element untouched.
pub fn check_sample_rows(dev: &Device, case: &SampleCase) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    // LM-like rows: a few plausible tokens well above a wide tail.
    let mut host: Vec<f32> = (0..c.rows * c.stride).map(|i| if i % 97 == 0 { rng.uniform(8.0, 14.0) as f32 } else { rng.uniform(-4.0, 4.0) as f32 }).collect();
    if c.special {
        for r in 0..c.rows {
            let row = &mut host[r * c.stride..][..c.cols];
            match r % 4 {
                0 => row.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 8.0),
                1 => {
                    for (i, v) in row.iter_mut().enumerate() {
                        *v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 0.125][i % 6];
                    }
                }
                2 => row.fill(1.5),
                _ => row.fill(f32::NAN),
            }
        }
    }
    let uniforms: Vec<f32> = (0..c.rows).map(|r| match r % 7 { 0 => 0.0, 1 => 1.0 - f32::EPSILON / 2.0, _ => rng.uniform(0.0, 1.0) as f32 }).collect();
    let (x, u) = (dev.upload(&host)?, dev.upload(&uniforms)?);
    let poison = -7i32;
    let mut out = dev.upload(&vec![poison; c.rows + 1])?;
    let xv = TensorView::new(x.as_view(), [c.rows, c.cols], [c.stride, 1])?;
    let uv = TensorView::contiguous(u.as_view(), [c.rows])?;
    let mut ov = TensorViewMut::contiguous(out.slice_mut(..c.rows), [c.rows])?;
    // Each row's (temperature, top_k, top_p).
    let settings: Vec<(f32, i32, f32)> = if c.per_row {
        let (ts, ks, ps) = ROW_SETTINGS;
        let pick = |rng: &mut Rng, n: usize| (rng.next_u64() % n as u64) as usize;
        (0..c.rows).map(|_| (ts[pick(&mut rng, ts.len())], ks[pick(&mut rng, ks.len())], ps[pick(&mut rng, ps.len())])).collect()
    } else {
        vec![(c.temperature, c.top_k.min(i32::MAX as usize) as i32, c.top_p); c.rows]
    };
    if c.per_row {
        let t = dev.upload(&settings.iter().map(|s| s.0).collect::<Vec<_>>())?;
        let k = dev.upload(&settings.iter().map(|s| s.1).collect::<Vec<_>>())?;
        let p = dev.upload(&settings.iter().map(|s| s.2).collect::<Vec<_>>())?;
        let (tv, kv, pv) = (TensorView::contiguous(t.as_view(), [c.rows])?, TensorView::contiguous(k.as_view(), [c.rows])?, TensorView::contiguous(p.as_view(), [c.rows])?);
        ops::sample_rows_each(dev, &xv, &uv, ops::RowSampleConfig { temperature: &tv, top_k: &kv, top_p: &pv }, &mut ov)?;
    } else {
        let cfg = ops::SampleConfig { temperature: c.temperature, top_k: c.top_k, top_p: c.top_p };
        ops::sample_rows(dev, &xv, &uv, cfg, &mut ov)?;
    }
    let got = dev.download(&out)?;
    let want: Vec<i32> = (0..c.rows)
        .map(|r| {
            let (t, k, p) = settings[r];
            reference::sample_row(&host[r * c.stride..][..c.cols], t, k.max(0) as usize, p, uniforms[r]) as i32
        })
        .collect();
    let what = if c.per_row { "settings per row".to_string() } else { format!("T {} top_k {} top_p {}", c.temperature, c.top_k, c.top_p) };
    Ok(CheckResult {
        op: if c.per_row { "sample_rows_each" } else { "sample_rows" },
        dtype: "f32",
        shape: format!("[{}, {}] stride {} {what}{}", c.rows, c.cols, c.stride, if c.special { " ties/NaN/inf" } else { "" }),
        comparisons: vec![compare_ints("out", &got[..c.rows], &want), compare_ints("guard after out (untouched)", &got[c.rows..], &[poison])],
    })
}

/// The cases `warpcore check` runs: model shapes and awkward ones, every activation and dtype.
pub fn check_all(dev: &Device) -> Result<Vec<CheckResult>> {
    fn per_dtype<T: DType>(dev: &Device, out: &mut Vec<CheckResult>) -> Result<()> {
        for (i, act) in [GluActivation::Silu, GluActivation::GeluTanh, GluActivation::SquaredRelu].into_iter().enumerate() {
            let s = i as u64 * 10;
            out.push(check_glu::<T>(dev, &GluCase::dense(32, 8192, act, s + 1))?);
            out.push(check_glu::<T>(dev, &GluCase::dense(1, 14336, act, s + 2))?);
            out.push(check_glu::<T>(dev, &GluCase { rows: 7, cols: 989, in_gap: 3, out_stride: 1001, offset: 1, act, seed: s + 3 })?);
            out.push(check_glu::<T>(dev, &GluCase { rows: 5, cols: 768, in_gap: 16, out_stride: 776, offset: 8, act, seed: s + 4 })?);
        }
        out.push(check_select_rows::<T, i32>(dev, &SelectCase::dense(1000, 64, 2048, 5))?);
        out.push(check_select_rows::<T, i64>(dev, &SelectCase { bad_every: 3, ..SelectCase::dense(50, 17, 4096, 6) })?);
        out.push(check_select_rows::<T, i32>(
            dev,
            &SelectCase { src_rows: 9, num_rows: 11, cols: 111, src_stride: 113, out_stride: 117, offset: 1, bad_every: 4, seed: 7 },
        )?);
        Ok(())
    }
    let mut out = Vec::new();
    per_dtype::<bf16>(dev, &mut out)?;
    per_dtype::<f16>(dev, &mut out)?;
    per_dtype::<f32>(dev, &mut out)?;
    out.push(check_select_rows::<crate::F8E4M3, i32>(
        dev,
        &SelectCase { src_rows: 20, num_rows: 9, cols: 61, src_stride: 67, out_stride: 61, offset: 3, bad_every: 5, seed: 8 },
    )?);
    // Greedy tokens: Llama 3's vocabulary at batch 1 and 32, and awkward rows.
    out.push(check_argmax_rows(dev, &ArgmaxCase::dense(1, 128256, false, 9))?);
    out.push(check_argmax_rows(dev, &ArgmaxCase::dense(32, 128256, true, 10))?);
    out.push(check_argmax_rows(dev, &ArgmaxCase { rows: 13, cols: 1025, stride: 1031, offset: 3, special: true, seed: 11 })?);
    out.push(check_argmax_rows(dev, &ArgmaxCase::dense(6, 1, true, 12))?);
    // Sampled tokens: Llama 3's vocabulary at batch 1 and 32 with common settings, and awkward rows.
    for (i, settings) in [(1.0f32, 0usize, 1.0f32), (0.7, 0, 0.9), (0.8, 50, 0.95), (1.0, 1, 1.0)].into_iter().enumerate() {
        out.push(check_sample_rows(dev, &SampleCase::new(32, 128256, settings, 20 + i as u64))?);
    }
    out.push(check_sample_rows(dev, &SampleCase::new(1, 128256, (0.6, 40, 0.9), 24))?);
    out.push(check_sample_rows(dev, &SampleCase { stride: 8200, special: true, ..SampleCase::new(12, 8193, (1.3, 100, 0.5), 25) })?);
    // An engine's batch: every row its own settings, greedy rows among them.
    out.push(check_sample_rows(dev, &SampleCase { per_row: true, ..SampleCase::new(32, 128256, (1.0, 0, 1.0), 26) })?);
    out.push(check_sample_rows(dev, &SampleCase { stride: 8200, special: true, per_row: true, ..SampleCase::new(24, 8193, (1.0, 0, 1.0), 27) })?);
    Ok(out)
}

/// Without a GPU: the references' own properties (SiLU GLU with up = 1 is x·σ(x), which is odd
/// around the shift x − x·σ(x) = x·σ(−x); squared-ReLU GLU is 0 for negative gates; selecting
/// every row in order is the identity).
pub fn check_references() -> Vec<CheckResult> {
    let mut rng = Rng::new(11);
    let x: Vec<f32> = rng.vec(4096, -8.0, 8.0);
    let ones = vec![1.0f32; x.len()];
    let silu = crate::reference::mlp::glu(&x, &ones, GluActivation::Silu);
    let neg: Vec<f32> = x.iter().map(|v| -v).collect();
    let silu_neg = crate::reference::mlp::glu(&neg, &ones, GluActivation::Silu);
    // silu(x) − silu(−x) = x.
    let diff: Vec<f32> = silu.iter().zip(&silu_neg).map(|(a, b)| a - b).collect();
    let relu2 = crate::reference::mlp::glu(&x, &ones, GluActivation::SquaredRelu);
    let relu2_want: Vec<f64> = x.iter().map(|&v| if v < 0.0 { 0.0 } else { (v as f64) * (v as f64) }).collect();
    let src: Vec<f32> = rng.vec(64 * 16, -1.0, 1.0);
    let identity: Vec<f32> = reference::select_rows(&src, 16, &(0..64).collect::<Vec<i64>>()).into_iter().flatten().flatten().collect();
    vec![CheckResult {
        op: "reference::elementwise",
        dtype: "f64",
        shape: "[4096]".into(),
        comparisons: vec![
            compare("silu(x) − silu(−x) = x", &diff, &x.iter().map(|&v| v as f64).collect::<Vec<_>>(), tolerance::<f32>()),
            compare("relu2 GLU = max(x, 0)²", &relu2, &relu2_want, tolerance::<f32>()),
            compare_exact("select_rows of 0..n = identity", &identity, &src),
        ],
    }]
}
