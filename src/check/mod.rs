//! GPU-against-reference checking, shared by the test suite and `warpcore check`.
//!
//! One place defines the tolerances per dtype, how outputs are compared (NaN never passes),
//! the random inputs (fresh per seed, never zeros) and the NaN poison written into outputs
//! before a run so that an element the kernel failed to write fails the check.

#[cfg(feature = "attention")]
pub mod attention;
#[cfg(feature = "elementwise")]
pub mod elementwise;
#[cfg(feature = "rope")]
pub mod kv_cache;
#[cfg(feature = "moe-routing")]
pub mod moe_routing;
#[cfg(feature = "matmul-fp8")]
pub mod matmul_fp8;
#[cfg(feature = "matmul-fp8")]
pub mod matmul_grouped;
#[cfg(feature = "matmul-ternary")]
pub mod matmul_ternary;
#[cfg(feature = "quant-fp8")]
pub mod quant;
#[cfg(feature = "rms-norm")]
pub mod rms_norm;
#[cfg(feature = "rope")]
pub mod rope;

use crate::DType;
use std::fmt;

/// Elementwise bound |got − want| ≤ atol + rtol·|want|, and a bound on the relative
/// Frobenius error ‖got − want‖ / ‖want‖ over the whole output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute part of the elementwise bound.
    pub atol: f64,
    /// Relative part of the elementwise bound (times |want|).
    pub rtol: f64,
    /// Bound on the relative Frobenius error of the whole output.
    pub frobenius: f64,
}

/// The tolerance for outputs stored in `T` after f32 math: a few units in the last place of T
/// (bf16 has 8 significant bits, f16 11, f32 24). Written once, used by every op's check.
pub fn tolerance<T: DType>() -> Tolerance {
    match T::NAME {
        "bf16" => Tolerance { atol: 1.6e-2, rtol: 1.6e-2, frobenius: 1e-2 },
        "f16" => Tolerance { atol: 2e-3, rtol: 2e-3, frobenius: 2e-3 },
        // 3 mantissa bits: half an ulp is 1/16 relative.
        "e4m3" => Tolerance { atol: 1.0 / 64.0, rtol: 1.0 / 16.0, frobenius: 5e-2 },
        _ => Tolerance { atol: 1e-5, rtol: 1e-5, frobenius: 1e-5 },
    }
}

/// How one output compared with its reference.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// What was compared ("out", "residual", "padding", ...).
    pub what: &'static str,
    /// Elements compared.
    pub len: usize,
    /// Elements outside the bound (NaN counts).
    pub failures: usize,
    /// Largest |got − want| over the elements.
    pub max_abs_err: f64,
    /// ‖got − want‖ / ‖want‖ over all elements (equal infinities count as no error).
    pub rel_frobenius: f64,
    /// The bound on rel_frobenius (∞ for exact comparisons, which count failures instead).
    pub frobenius_limit: f64,
    /// The first failing element: (index, got, want).
    pub first_failure: Option<(usize, f64, f64)>,
    /// The indices of the first [`MAX_RECORDED`] failing elements, for the failure map.
    pub failing: Vec<usize>,
    /// Row length of the compared elements when they form rows (set by [`Comparison::in_rows`]):
    /// a failing comparison then also prints which rows and which columns failed.
    pub row_len: Option<usize>,
}

/// How many failing indices a [`Comparison`] keeps for its failure map.
pub const MAX_RECORDED: usize = 1 << 16;

impl Comparison {
    /// No element outside the bound and the Frobenius error within its limit.
    pub fn passed(&self) -> bool {
        self.failures == 0 && self.rel_frobenius <= self.frobenius_limit
    }

    /// Marks the compared elements as rows of `cols` (row-major): a failure then reports the
    /// failing rows and columns as ranges, which is where a layout bug shows its shape (a wrong
    /// swizzle fails columns in a repeating pattern, a wrong tile offset whole row blocks).
    pub fn in_rows(mut self, cols: usize) -> Self {
        self.row_len = (cols > 0).then_some(cols);
        self
    }

    fn record(&mut self, i: usize, got: f64, want: f64) {
        self.failures += 1;
        self.first_failure.get_or_insert((i, got, want));
        if self.failing.len() < MAX_RECORDED {
            self.failing.push(i);
        }
    }

    /// The failing rows and columns as ranges (`None` without [`Comparison::in_rows`] or
    /// failures), from the first [`MAX_RECORDED`] failures.
    pub fn failure_map(&self) -> Option<String> {
        let cols = self.row_len?;
        if self.failing.is_empty() {
            return None;
        }
        let rows: Vec<usize> = self.failing.iter().map(|&i| i / cols).collect();
        let mut columns: Vec<usize> = self.failing.iter().map(|&i| i % cols).collect();
        columns.sort_unstable();
        let sample = if self.failures > self.failing.len() { format!(" (the first {} failures)", self.failing.len()) } else { String::new() };
        Some(format!(
            "failing rows (of {} columns each): {}; failing columns: {}{sample}",
            cols,
            ranges(&rows),
            ranges(&columns)
        ))
    }
}

/// Sorted indices as ranges with their count: "3 in 0, 5–6"; the first 8 ranges, then the number
/// of the rest.
fn ranges(sorted: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &v in sorted {
        match runs.last_mut() {
            Some((_, hi)) if v <= *hi + 1 => *hi = (*hi).max(v),
            _ => runs.push((v, v)),
        }
    }
    let distinct: usize = runs.iter().map(|(lo, hi)| hi - lo + 1).sum();
    let shown: Vec<String> = runs.iter().take(8).map(|&(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}–{hi}") }).collect();
    let more = if runs.len() > 8 { format!(", … ({} more ranges, last ending at {})", runs.len() - 8, runs[runs.len() - 1].1) } else { String::new() };
    format!("{distinct} in {}{more}", shown.join(", "))
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} of {} outside bound, max |err| {:.3e}, rel Frobenius {:.3e}",
            self.what, self.failures, self.len, self.max_abs_err, self.rel_frobenius
        )?;
        if let Some((i, g, w)) = self.first_failure {
            write!(f, " (first at {i}: got {g}, want {w})")?;
        }
        if let Some(map) = self.failure_map() {
            write!(f, "\n    {map}")?;
        }
        Ok(())
    }
}

/// Compares `got` with the f64 reference `want` under `tol`.
pub fn compare<T: DType>(what: &'static str, got: &[T], want: &[f64], tol: Tolerance) -> Comparison {
    let bound: Vec<f64> = want.iter().map(|w| tol.atol + tol.rtol * w.abs()).collect();
    compare_bounded(what, got, want, &bound, tol.frobenius)
}

/// Compares `got` with `want` under a bound per element, |got − want| ≤ `bound[i]` (NaN never
/// passes), and the relative Frobenius error under `frobenius`. For outputs whose error model
/// is per element (a GEMM's accumulation error scales with Σ|a·b|, a quantized value's with its
/// block scale).
pub fn compare_bounded<T: DType>(what: &'static str, got: &[T], want: &[f64], bound: &[f64], frobenius: f64) -> Comparison {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    assert_eq!(bound.len(), want.len(), "{what}: bound length mismatch");
    let mut c = Comparison { what, len: got.len(), frobenius_limit: frobenius, ..Default::default() };
    let (mut err2, mut ref2) = (0.0, 0.0);
    for (i, ((g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let g = g.to_f64();
        // Equal values (including equal infinities, e.g. lse = −∞ of an empty row) are exact.
        let err = if g == w { 0.0 } else { (g - w).abs() };
        err2 += err * err;
        if w.is_finite() {
            ref2 += w * w;
        }
        let ok = err <= b; // false for NaN
        if !ok {
            c.record(i, g, w);
        }
        if err.is_nan() || err > c.max_abs_err {
            c.max_abs_err = if err.is_nan() { f64::NAN } else { err };
        }
    }
    c.rel_frobenius = if ref2 > 0.0 { (err2 / ref2).sqrt() } else { err2.sqrt() };
    c
}

/// The relative Frobenius error of each row of `cols` elements under `limit`: the check for
/// outputs whose rows differ in scale by decades (a GEMM whose operand rows carry their own
/// exponents), where one wrong row of small values vanishes in the whole output's norm and in a
/// per-element bound as loose as fast accumulation's. A failure is a row: its index, then
/// ‖got row‖ and ‖want row‖; `rel_frobenius` is the worst row's.
pub fn compare_row_frobenius<T: DType>(what: &'static str, got: &[T], want: &[f64], cols: usize, limit: f64) -> Comparison {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    let mut c = Comparison { what, len: got.len().checked_div(cols).unwrap_or(0), frobenius_limit: limit, ..Default::default() };
    for (r, (g, w)) in got.chunks(cols.max(1)).zip(want.chunks(cols.max(1))).enumerate().take(c.len) {
        let (mut err2, mut ref2, mut got2) = (0.0, 0.0, 0.0);
        for (g, &w) in g.iter().zip(w) {
            let g = g.to_f64();
            let err = if g == w { 0.0 } else { (g - w).abs() };
            err2 += err * err;
            got2 += g * g;
            if w.is_finite() {
                ref2 += w * w;
            }
        }
        let rel = if ref2 > 0.0 { (err2 / ref2).sqrt() } else { err2.sqrt() };
        if !(rel <= limit) {
            c.record(r, got2.sqrt(), ref2.sqrt());
        }
        if rel.is_nan() || rel > c.rel_frobenius {
            c.rel_frobenius = if rel.is_nan() { f64::NAN } else { rel };
        }
        c.max_abs_err = c.max_abs_err.max(err2.sqrt());
    }
    c
}

/// Bit-exact comparison (values the kernel must store exactly, and memory it must not touch).
pub fn compare_exact<T: DType>(what: &'static str, got: &[T], want: &[T]) -> Comparison {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    let mut c = Comparison { what, len: got.len(), frobenius_limit: f64::INFINITY, ..Default::default() };
    // Bits, not values: a stray NaN over NaN poison, or −0 for +0, is a change. (Before
    // 2026-12-03 any NaN equalled the poison.)
    let bits = |x: &T| -> &[u8] {
        // SAFETY: every DType is a plain float or byte code (no padding, no pointers).
        unsafe { std::slice::from_raw_parts((x as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
    };
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = bits(g) == bits(w);
        if !same {
            c.record(i, g.to_f64(), w.to_f64());
            c.max_abs_err = c.max_abs_err.max((g.to_f64() - w.to_f64()).abs());
        }
    }
    c
}

/// Exact comparison of integer outputs (ids, offsets, positions, counts).
pub fn compare_ints(what: &'static str, got: &[i32], want: &[i32]) -> Comparison {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    let mut c = Comparison { what, len: got.len(), ..Default::default() };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g != w {
            c.record(i, g as f64, w as f64);
            c.max_abs_err = c.max_abs_err.max((g as f64 - w as f64).abs());
        }
    }
    c
}

/// Deterministic xorshift64* generator: fresh inputs from a seed, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; the same seed gives the same sequence (0 is fine).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// `n` values uniform in [lo, hi), rounded to T; exact zeros are nudged away so that an
    /// input is never accidentally all zeros.
    pub fn vec<T: DType>(&mut self, n: usize, lo: f64, hi: f64) -> Vec<T> {
        (0..n)
            .map(|_| {
                let v = self.uniform(lo, hi);
                T::from_f64(if v == 0.0 { 1e-3 } else { v })
            })
            .collect()
    }
}

/// The result of checking one op at one shape.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// The op checked, e.g. "rms_norm".
    pub op: &'static str,
    /// The element type's short name, e.g. "bf16".
    pub dtype: &'static str,
    /// The case's description: shape and options.
    pub shape: String,
    /// One per output compared (and per property checked: untouched memory, invariants).
    pub comparisons: Vec<Comparison>,
}

impl CheckResult {
    /// Every comparison passed.
    pub fn passed(&self) -> bool {
        self.comparisons.iter().all(Comparison::passed)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}: {}", self.op, self.dtype, self.shape, if self.passed() { "PASS" } else { "FAIL" })?;
        for c in &self.comparisons {
            write!(f, "\n  {c}")?;
        }
        Ok(())
    }
}

/// Elements of a strided 2-D region: rows of `cols` at `stride`, starting at `offset`.
pub fn gather_rows<T: Copy>(buf: &[T], offset: usize, rows: usize, cols: usize, stride: usize) -> Vec<T> {
    (0..rows).flat_map(|r| buf[offset + r * stride..][..cols].iter().copied()).collect()
}

/// The elements of `buf` outside that region (must be untouched by a kernel writing it).
pub fn outside_rows<T: Copy>(buf: &[T], offset: usize, rows: usize, cols: usize, stride: usize) -> Vec<T> {
    buf.iter()
        .enumerate()
        .filter(|&(i, _)| {
            if i < offset || rows == 0 {
                return true;
            }
            let (r, c) = ((i - offset) / stride, (i - offset) % stride);
            !(r < rows && c < cols)
        })
        .map(|(_, v)| *v)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn nan_never_passes() {
        let loose = Tolerance { atol: 1e9, rtol: 1e9, frobenius: 1e9 };
        assert!(!compare("x", &[f32::NAN], &[0.0], loose).passed());
        assert!(!compare("x", &[1.0f32], &[f64::NAN], loose).passed());
        // Equal infinities are exact (an empty attention row's lse).
        assert!(compare("x", &[f32::NEG_INFINITY], &[f64::NEG_INFINITY], tolerance::<f32>()).passed());
        assert!(!compare("x", &[0.0f32], &[f64::NEG_INFINITY], loose).passed());
    }

    #[test]
    fn bounds_are_atol_plus_rtol() {
        let tol = Tolerance { atol: 0.1, rtol: 0.1, frobenius: 1.0 };
        assert!(compare("x", &[2.29f32], &[2.0], tol).passed());
        assert!(!compare("x", &[2.31f32], &[2.0], tol).passed());
        let bf = tolerance::<bf16>();
        // One bf16 ulp at 1.0 (2^-7) passes; six do not.
        assert!(compare("x", &[bf16::from_f64(1.0 + 2f64.powi(-7))], &[1.0], bf).passed());
        assert!(!compare("x", &[bf16::from_f64(1.0 + 6.0 * 2f64.powi(-7))], &[1.0], bf).passed());
        // Every element within the elementwise bound but a systematic bias over the Frobenius one.
        let got = vec![1.009f32; 100];
        assert!(!compare("x", &got, &vec![1.0; 100], Tolerance { atol: 0.01, rtol: 0.0, frobenius: 5e-3 }).passed());
    }

    #[test]
    fn per_element_bounds() {
        let got = [1.0f32, 2.5, f32::NAN];
        let c = compare_bounded("x", &got, &[1.1, 2.0, 0.0], &[0.2, 0.4, 1e9], 1e9);
        assert_eq!(c.failures, 2);
        assert_eq!(c.first_failure.map(|f| f.0), Some(1));
        assert!(compare_bounded("x", &got[..2], &[1.1, 2.0], &[0.2, 0.6], 1.0).passed());
        assert!(!compare_bounded("x", &got[..2], &[1.1, 2.0], &[0.2, 0.6], 0.01).passed());
    }

    #[test]
    fn failure_map_names_rows_and_columns() {
        // 4 rows of 16: columns 8–15 wrong in rows 1 and 3 (a half-tile pattern).
        let want = vec![0.0; 64];
        let got: Vec<f32> = (0..64).map(|i| if (i / 16) % 2 == 1 && i % 16 >= 8 { 1.0 } else { 0.0 }).collect();
        let c = compare("x", &got, &want, tolerance::<f32>()).in_rows(16);
        assert_eq!(c.failures, 16);
        assert_eq!(c.failure_map().as_deref(), Some("failing rows (of 16 columns each): 2 in 1, 3; failing columns: 8 in 8–15"));
        assert!(c.to_string().contains("failing columns: 8 in 8–15"));
        // No map without a row length or without failures.
        assert_eq!(compare("x", &got, &want, tolerance::<f32>()).failure_map(), None);
        assert_eq!(compare("x", &want.iter().map(|&v| v as f32).collect::<Vec<_>>(), &want, tolerance::<f32>()).in_rows(16).failure_map(), None);
        // Many ranges are cut after 8.
        let every_other: Vec<usize> = (0..40).step_by(2).collect();
        assert_eq!(ranges(&every_other), "20 in 0, 2, 4, 6, 8, 10, 12, 14, … (12 more ranges, last ending at 38)");
    }

    #[test]
    fn exact_compare_treats_poison_as_equal_and_catches_changes() {
        assert!(compare_exact("p", &[f32::NAN, 1.0], &[f32::NAN, 1.0]).passed());
        assert!(!compare_exact("p", &[0.0f32, 1.0], &[f32::NAN, 1.0]).passed());
    }

    #[test]
    fn int_compare_is_exact() {
        assert!(compare_ints("i", &[1, -1, i32::MIN], &[1, -1, i32::MIN]).passed());
        let c = compare_ints("i", &[1, 2, 3], &[1, 5, 4]);
        assert_eq!((c.failures, c.first_failure), (2, Some((1, 2.0, 5.0))));
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let a: Vec<f32> = Rng::new(7).vec(1000, -2.0, 2.0);
        let b: Vec<f32> = Rng::new(7).vec(1000, -2.0, 2.0);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-2.0..2.0).contains(v) && *v != 0.0));
        assert_ne!(a, Rng::new(8).vec::<f32>(1000, -2.0, 2.0));
    }

    #[test]
    fn strided_regions() {
        let buf: Vec<u32> = (0..12).collect();
        // 2 rows of 3 at stride 5 from offset 1: [1,2,3], [6,7,8].
        assert_eq!(gather_rows(&buf, 1, 2, 3, 5), vec![1, 2, 3, 6, 7, 8]);
        assert_eq!(outside_rows(&buf, 1, 2, 3, 5), vec![0, 4, 5, 9, 10, 11]);
    }
}
