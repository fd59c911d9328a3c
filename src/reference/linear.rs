//! Dense projections for the CPU model path: `y = x · Wᵀ (+ b)`, f64 accumulation.

/// x `[m, k]`, weight `[n, k]` (the checkpoint layout: out_features × in_features; f32, or a
/// 16-bit type as stored), optional bias `[n]` → `[m, n]`.
pub fn linear<W: Copy + Into<f64> + Sync>(x: &[f32], weight: &[W], bias: Option<&[f32]>, k: usize) -> Vec<f32> {
    assert!(k > 0 && x.len() % k == 0 && weight.len() % k == 0, "x [m, {k}] and weight [n, {k}]");
    let n = weight.len() / k;
    assert!(bias.is_none_or(|b| b.len() == n), "bias must be [{n}]");
    products(x, weight, k, |j, dot| (dot + bias.map_or(0.0, |b| b[j] as f64)) as f32)
}

/// `finish(j, Σ_c x[i, c] · w[j, c])` for every row i of x `[m, k]` and row j of w `[n, k]` →
/// `[m, n]`, each dot product in f64 (eight running sums, added pairwise at the end). The
/// outputs are split into contiguous runs over the machine's threads when the product is large
/// (a real checkpoint's projection: the CPU model path is otherwise minutes per token); the
/// result does not depend on the split.
pub(crate) fn products<W: Copy + Into<f64> + Sync>(x: &[f32], w: &[W], k: usize, finish: impl Fn(usize, f64) -> f32 + Sync) -> Vec<f32> {
    let (m, n) = (x.len() / k, w.len() / k);
    let mut out = vec![0.0f32; m * n];
    let fill = |first: usize, run: &mut [f32]| {
        for (e, o) in (first..).zip(run.iter_mut()) {
            let (i, j) = (e / n, e % n);
            *o = finish(j, dot(&x[i * k..][..k], &w[j * k..][..k]));
        }
    };
    const PER_THREAD: usize = 1 << 22; // multiply-adds below which a thread is not worth starting
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min((m * n * k).div_ceil(PER_THREAD)).max(1);
    if threads == 1 {
        fill(0, &mut out);
        return out;
    }
    let run = (m * n).div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, chunk) in out.chunks_mut(run).enumerate() {
            let fill = &fill;
            scope.spawn(move || fill(t * run, chunk));
        }
    });
    out
}

fn dot<W: Copy + Into<f64>>(a: &[f32], b: &[W]) -> f64 {
    const L: usize = 8; // independent sums: the adds overlap instead of waiting on each other
    let mut acc = [0.0f64; L];
    let (a8, b8) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f64 = a8.remainder().iter().zip(b8.remainder()).map(|(&p, &q)| p as f64 * q.into()).sum();
    for (p, q) in a8.zip(b8) {
        for l in 0..L {
            acc[l] += p[l] as f64 * q[l].into();
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
