//! Dense projections for the CPU model path: `y = x · Wᵀ (+ b)`, f64 accumulation.

/// x `[m, k]`, weight `[n, k]` (the checkpoint layout: out_features × in_features; f32, or a
/// 16-bit type as stored), optional bias `[n]` → `[m, n]`.
pub fn linear<W: Weight>(x: &[f32], weight: &[W], bias: Option<&[f32]>, k: usize) -> Vec<f32> {
    assert!(k > 0 && x.len().is_multiple_of(k) && weight.len().is_multiple_of(k), "x [m, {k}] and weight [n, {k}]");
    let n = weight.len() / k;
    assert!(bias.is_none_or(|b| b.len() == n), "bias must be [{n}]");
    products(x, weight, k, |j, dot| (dot + bias.map_or(0.0, |b| b[j] as f64)) as f32)
}

/// The element types of a weight matrix: f32, the 16-bit types checkpoints store (bf16, f16),
/// and BitNet's ternary values (i8). Each widens to f32 exactly.
pub trait Weight: Copy + Sync {
    /// `row` as f32: itself, or widened into `buf`.
    fn as_f32<'a>(row: &'a [Self], buf: &'a mut Vec<f32>) -> &'a [f32];
}
impl Weight for f32 {
    fn as_f32<'a>(row: &'a [f32], _: &'a mut Vec<f32>) -> &'a [f32] {
        row
    }
}
impl Weight for half::bf16 {
    fn as_f32<'a>(row: &'a [Self], buf: &'a mut Vec<f32>) -> &'a [f32] {
        buf.clear();
        buf.extend(row.iter().map(|v| f32::from_bits((v.to_bits() as u32) << 16)));
        buf
    }
}
impl Weight for half::f16 {
    fn as_f32<'a>(row: &'a [Self], buf: &'a mut Vec<f32>) -> &'a [f32] {
        use half::slice::HalfFloatSliceExt;
        buf.resize(row.len(), 0.0);
        row.convert_to_f32_slice(buf);
        buf
    }
}
impl Weight for i8 {
    fn as_f32<'a>(row: &'a [i8], buf: &'a mut Vec<f32>) -> &'a [f32] {
        buf.clear();
        buf.extend(row.iter().map(|&v| v as f32));
        buf
    }
}

/// `finish(j, Σ_c x[i, c] · w[j, c])` for every row i of x `[m, k]` and row j of w `[n, k]` →
/// `[m, n]`, each dot product in f64 (eight running sums, added pairwise at the end). The
/// columns are split over the machine's threads when the product is large (a real
/// checkpoint's projection: the CPU model path is otherwise minutes per token); each thread
/// takes its weight rows one at a time against a block of rows of x, so that a weight row is
/// read from memory once per block. The result does not depend on the split.
pub(crate) fn products<W: Weight>(x: &[f32], w: &[W], k: usize, finish: impl Fn(usize, f64) -> f32 + Sync) -> Vec<f32> {
    let (m, n) = (x.len() / k, w.len() / k);
    const PER_THREAD: usize = 1 << 18; // multiply-adds (about 0.1 ms) below which a thread is not worth starting
    const ROWS: usize = 32; // rows of x per pass over the weights
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min((m * n * k).div_ceil(PER_THREAD)).max(1);
    let cols = n.div_ceil(threads).max(1);
    // Columns [j0, j1), column by column: [j1 - j0][m].
    let part = |j0: usize, j1: usize| -> Vec<f32> {
        let mut t = vec![0.0f32; (j1 - j0) * m];
        let mut buf = Vec::new();
        for i0 in (0..m).step_by(ROWS) {
            for j in j0..j1 {
                let wj = W::as_f32(&w[j * k..][..k], &mut buf);
                for i in i0..(i0 + ROWS).min(m) {
                    t[(j - j0) * m + i] = finish(j, dot(&x[i * k..][..k], wj));
                }
            }
        }
        t
    };
    let parts: Vec<(usize, Vec<f32>)> = if threads == 1 {
        vec![(0, part(0, n))]
    } else {
        std::thread::scope(|scope| {
            let part = &part;
            let handles: Vec<_> = (0..n).step_by(cols).map(|j0| (j0, scope.spawn(move || part(j0, (j0 + cols).min(n))))).collect();
            handles.into_iter().map(|(j0, h)| (j0, h.join().expect("a linear thread panicked"))).collect()
        })
    };
    let mut out = vec![0.0f32; m * n];
    for (j0, t) in parts {
        for (c, col) in t.chunks_exact(m.max(1)).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[i * n + j0 + c] = v;
            }
        }
    }
    out
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    const L: usize = 8; // independent sums: the adds overlap instead of waiting on each other
    let mut acc = [0.0f64; L];
    let (a8, b8) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f64 = a8.remainder().iter().zip(b8.remainder()).map(|(&p, &q)| p as f64 * q as f64).sum();
    for (p, q) in a8.zip(b8) {
        for l in 0..L {
            acc[l] += p[l] as f64 * q[l] as f64;
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_with_bias() {
        // x [2, 3], W [2, 3]
        let x = [1.0, 2.0, 3.0, -1.0, 0.0, 1.0];
        let w = [1.0, 0.0, 0.0, 0.5, 0.5, 0.5];
        assert_eq!(linear(&x, &w, None, 3), vec![1.0, 3.0, -1.0, 0.0]);
        assert_eq!(linear(&x, &w, Some(&[1.0, -1.0]), 3), vec![2.0, 2.0, 0.0, -1.0]);
    }

    #[test]
    fn threads_split_a_large_product_where_its_outputs_belong() {
        // 3 × 700 outputs of k = 4099 (odd: a tail after the 8-wide sums): 8.6 M multiply-adds,
        // split over every thread the machine has; each output against a plain f64 sum.
        let (m, n, k) = (3, 700, 4099);
        let val = |i: usize| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5;
        let x: Vec<f32> = (0..m * k).map(val).collect();
        let w: Vec<f32> = (0..n * k).map(|i| val(i + 17)).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
        let y = linear(&x, &w, Some(&bias), k);
        assert_eq!(y.len(), m * n);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|c| x[i * k + c] as f64 * w[j * k + c] as f64).sum::<f64>() + j as f64;
                let got = y[i * n + j] as f64;
                assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "[{i}, {j}]: {got} vs {want}");
            }
        }
    }
}
