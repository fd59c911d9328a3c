//! CPU oracle for the FP8 GEMM (and the same kernels' bf16 grouped GEMM): f64 on the
//! dequantized (or widened) inputs.
//!
//! `out[i, j] = Σ_k deq(a)[i, k] · deq(b)[j, k] (+ bias[j]) (+ residual[i, j])`, where
//! `deq = fp8 · scale` with each operand's own scale layout (reference::quant::Quantized).
//! Every product of two e4m3 values times two f32 scales is exact in f64, so the only error
//! here is f64 summation. Also returns `Σ_k |deq(a) · deq(b)|` per element: the GPU's
//! accumulation error is bounded relative to it (check::matmul_fp8).

use super::quant::Quantized;
use crate::DType;

/// The reference result of one GEMM.
#[derive(Clone, Debug)]
pub struct MatmulRef {
    /// `[m, n]`, row-major.
    pub out: Vec<f64>,
    /// `[m, n]`: Σ_k |a·b| (the scale of the accumulation error).
    pub magnitude: Vec<f64>,
}

/// `D = A · Bᵀ (+ bias) (+ residual)`: a `[m, k]`, b `[n, k]` (both K-major, as quantized),
/// bias `[n]`, residual `[m, n]` in the output dtype.
pub fn matmul_fp8<O: DType>(a: &Quantized, b: &Quantized, bias: Option<&[O]>, residual: Option<&[O]>) -> MatmulRef {
    assert_eq!(b.cols, a.cols, "a is [m, k] and b is [n, k]");
    matmul_f64(&a.dequantize(), &b.dequantize(), a.cols, bias, residual)
}

/// The GEMM of f64 operands (dequantized e4m3, or widened bf16): a `[m, k]`, b `[n, k]`,
/// bias `[n]`, residual `[m, n]`. Rows are split across threads.
pub fn matmul_f64<O: DType>(da: &[f64], db: &[f64], k: usize, bias: Option<&[O]>, residual: Option<&[O]>) -> MatmulRef {
    let (m, n) = (da.len().checked_div(k).unwrap_or(0), db.len().checked_div(k).unwrap_or(0));
    assert!(da.len() == m * k && db.len() == n * k, "a is [m, k] and b is [n, k]");
    assert!(bias.is_none_or(|v| v.len() == n) && residual.is_none_or(|v| v.len() == m * n));
    let mut out = vec![0.0; m * n];
    let mut magnitude = vec![0.0; m * n];
    if m == 0 || n == 0 {
        return MatmulRef { out, magnitude };
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(m);
    let rows_per = m.div_ceil(threads);
    std::thread::scope(|scope| {
        for (c, (o, g)) in out.chunks_mut(rows_per * n).zip(magnitude.chunks_mut(rows_per * n)).enumerate() {
            scope.spawn(move || {
                for (r, (orow, grow)) in o.chunks_mut(n).zip(g.chunks_mut(n)).enumerate() {
                    let i = c * rows_per + r;
                    let arow = &da[i * k..(i + 1) * k];
                    for j in 0..n {
                        let brow = &db[j * k..(j + 1) * k];
                        let (mut s, mut mag) = (0.0f64, 0.0f64);
                        for (x, y) in arow.iter().zip(brow) {
                            let p = x * y;
                            s += p;
                            mag += p.abs();
                        }
                        orow[j] = s;
                        grow[j] = mag;
                    }
                }
            });
        }
    });
    for i in 0..m {
        for j in 0..n {
            let v = &mut out[i * n + j];
            if let Some(bias) = bias {
                *v += bias[j].to_f64();
            }
            if let Some(res) = residual {
                *v += res[i * n + j].to_f64();
            }
        }
    }
    MatmulRef { out, magnitude }
}

/// Each group's rows of a grouped GEMM (ops::matmul_fp8::matmul_fp8_grouped) with `m` rows:
/// the offsets clamped into `[0, m]` and made non-decreasing, as the kernels read them
/// (`lo_g = max(offsets[g], hi_(g−1))`, `hi_g = max(lo_g, offsets[g + 1])`).
pub fn group_rows(offsets: &[i32], m: usize) -> Vec<std::ops::Range<usize>> {
    let clamp = |v: i32| (v.max(0) as usize).min(m);
    let mut hi = 0;
    offsets
        .windows(2)
        .map(|w| {
            let lo = clamp(w[0]).max(hi);
            hi = clamp(w[1]).max(lo);
            lo..hi
        })
        .collect()
}

/// The grouped FP8 GEMM: `matmul_grouped` on the dequantized operands.
pub fn matmul_fp8_grouped<O: DType>(a: &Quantized, b: &Quantized, offsets: &[i32], bias: Option<&[O]>, residual: Option<&[O]>) -> (MatmulRef, Vec<Option<usize>>) {
    assert_eq!(b.cols, a.cols, "a is [m, k] and b is [groups · n, k]");
    matmul_grouped(&a.dequantize(), &b.dequantize(), a.cols, offsets, bias, residual)
}

/// The grouped GEMM (ops::matmul_fp8::matmul_grouped; the FP8 one through
/// `matmul_fp8_grouped`): group g's rows of a `[m, k]` (`group_rows`) times b's rows
/// `g·n..(g + 1)·n` of `[groups · n, k]` (+ bias `[groups · n]`'s same rows, + residual `[m, n]`).
/// Rows in no group are 0 in the result and `None` in the returned row → group map (the kernels
/// leave them untouched).
pub fn matmul_grouped<O: DType>(a: &[f64], b: &[f64], k: usize, offsets: &[i32], bias: Option<&[O]>, residual: Option<&[O]>) -> (MatmulRef, Vec<Option<usize>>) {
    let m = a.len().checked_div(k).unwrap_or(0);
    let groups = offsets.len().saturating_sub(1);
    let b_rows = b.len().checked_div(k).unwrap_or(0);
    assert!(groups > 0 && b_rows.is_multiple_of(groups) && a.len() == m * k && b.len() == b_rows * k, "a is [m, k] and b is [groups · n, k]");
    let n = b_rows / groups;
    assert!(bias.is_none_or(|v| v.len() == groups * n) && residual.is_none_or(|v| v.len() == m * n));
    let mut result = MatmulRef { out: vec![0.0; m * n], magnitude: vec![0.0; m * n] };
    let mut group_of = vec![None; m];
    for (g, rows) in group_rows(offsets, m).into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let part = matmul_f64(
            &a[rows.start * k..rows.end * k],
            &b[g * n * k..(g + 1) * n * k],
            k,
            bias.map(|v| &v[g * n..(g + 1) * n]),
            residual.map(|v| &v[rows.start * n..rows.end * n]),
        );
        result.out[rows.start * n..rows.end * n].copy_from_slice(&part.out);
        result.magnitude[rows.start * n..rows.end * n].copy_from_slice(&part.magnitude);
        group_of[rows].fill(Some(g));
    }
    (result, group_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;
    use crate::ops::quant::ScaleGranularity::{self, *};
    use crate::reference::quant::{e4m3_error_bound, quantize_f32};

    fn plain(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        (0..m * n).map(|i| (0..k).map(|l| a[(i / n) * k + l] as f64 * b[(i % n) * k + l] as f64).sum()).collect()
    }

    #[test]
    fn quantized_gemm_tracks_the_float_gemm_within_the_quantization_error() {
        let (m, n, k) = (9, 256, 384);
        let mut rng = Rng::new(5);
        // Rows and columns of very different magnitudes, so the scale layouts matter.
        let a: Vec<f32> = (0..m * k).map(|i| (rng.uniform(-1.0, 1.0) * 10f64.powi((i / k) as i32 % 7 - 3)) as f32).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (rng.uniform(-1.0, 1.0) * 10f64.powi((i % k / 128) as i32 - 1)) as f32).collect();
        let want = plain(&a, &b, m, n, k);
        let pairs: [(ScaleGranularity, ScaleGranularity); 6] =
            [(PerTensor, PerTensor), (PerRow, PerRow), (PerRow, PerTensor), (Group128, Block128), (PerTensor, Block128), (Group128, PerTensor)];
        for (ga, gb) in pairs {
            let qa = quantize_f32(&a, m, k, ga);
            let qb = quantize_f32(&b, n, k, gb);
            let got = matmul_fp8::<f32>(&qa, &qb, None, None);
            // |Σ (a + ea)(b + eb) − Σ ab| ≤ Σ |a||eb| + |b||ea| + |ea||eb|, with the per-element
            // quantization bounds of each operand.
            for i in 0..m {
                for j in 0..n {
                    let mut bound = 0.0;
                    for l in 0..k {
                        let (x, y) = (a[i * k + l] as f64, b[j * k + l] as f64);
                        let ea = e4m3_error_bound(x, qa.scale_at(i, l) as f64);
                        let eb = e4m3_error_bound(y, qb.scale_at(j, l) as f64);
                        bound += x.abs() * eb + y.abs() * ea + ea * eb;
                    }
                    let e = (got.out[i * n + j] - want[i * n + j]).abs();
                    assert!(e <= bound * 1.0001 + 1e-300, "{ga:?}×{gb:?} ({i}, {j}): error {e} > bound {bound}");
                }
            }
        }
    }

    #[test]
    fn broadcast_layouts_agree() {
        // Per-row A with per-tensor B equals the same codes with B's scale broadcast per row.
        let (m, n, k) = (3, 128, 256);
        let mut rng = Rng::new(6);
        let a: Vec<f32> = (0..m * k).map(|_| rng.uniform(-2.0, 2.0) as f32).collect();
        let b: Vec<f32> = (0..n * k).map(|_| rng.uniform(-2.0, 2.0) as f32).collect();
        let qa = quantize_f32(&a, m, k, PerRow);
        let qb = quantize_f32(&b, n, k, PerTensor);
        let mut qb_rows = qb.clone();
        qb_rows.granularity = PerRow;
        qb_rows.scale = vec![qb.scale[0]; n];
        let x = matmul_fp8::<f32>(&qa, &qb, None, None).out;
        let y = matmul_fp8::<f32>(&qa, &qb_rows, None, None).out;
        assert_eq!(x, y);
    }

    #[test]
    fn group_rows_clamp_and_order_the_offsets() {
        assert_eq!(group_rows(&[0, 3, 3, 10], 10), [0..3, 3..3, 3..10]);
        // Negative, decreasing and past-m offsets, as the kernels read them.
        assert_eq!(group_rows(&[-5, -1, 50, 20, 1000], 100), [0..0, 0..50, 50..50, 50..100]);
        assert_eq!(group_rows(&[4, 9], 6), [4..6]);
    }

    #[test]
    fn a_grouped_gemm_takes_each_groups_b_rows_and_bias() {
        let (m, n, k) = (11, 128, 256);
        let mut rng = Rng::new(9);
        let a: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let b: Vec<f32> = (0..3 * n * k).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let (qa, qb) = (quantize_f32(&a, m, k, Group128), quantize_f32(&b, 3 * n, k, Block128));
        let bias: Vec<f32> = (0..3 * n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let residual: Vec<f32> = (0..m * n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        // Rows 0 and 10 in no group; group 1 empty.
        let offsets = [1, 4, 4, 10];
        let (got, group_of) = matmul_fp8_grouped(&qa, &qb, &offsets, Some(&bias), Some(&residual));
        let (da, db) = (qa.dequantize(), qb.dequantize());
        for i in 0..m {
            let g = [None, Some(0), Some(0), Some(0), Some(2), Some(2), Some(2), Some(2), Some(2), Some(2), None][i];
            assert_eq!(group_of[i], g, "row {i}");
            for j in 0..n {
                let want = g.map_or(0.0, |g| {
                    (0..k).map(|l| da[i * k + l] * db[(g * n + j) * k + l]).sum::<f64>() + bias[g * n + j] as f64 + residual[i * n + j] as f64
                });
                assert!((got.out[i * n + j] - want).abs() <= 1e-12 * want.abs().max(1.0), "({i}, {j})");
            }
        }
    }

    #[test]
    fn bias_and_residual_are_added() {
        let (m, n, k) = (2, 128, 128);
        // Exactly representable: scales 448 / 448 = 1 and 224 / 448 = 0.5, codes 448.
        let a = quantize_f32(&vec![448.0; m * k], m, k, PerTensor);
        let b = quantize_f32(&vec![224.0; n * k], n, k, PerRow);
        let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
        let res: Vec<f32> = (0..m * n).map(|i| -(i as f32)).collect();
        let r = matmul_fp8(&a, &b, Some(&bias), Some(&res));
        for i in 0..m * n {
            assert_eq!(r.out[i], 448.0 * 224.0 * 128.0 + (i % n) as f64 - i as f64);
            assert_eq!(r.magnitude[i], 448.0 * 224.0 * 128.0);
        }
    }
}
