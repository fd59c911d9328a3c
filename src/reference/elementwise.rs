//! References of the element-wise family: `select_rows` and `argmax` here; `glu`'s is
//! [`super::mlp::glu`] (the formula [`super::mlp::GluActivation::apply`] defines, in f64).

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

    #[test]
    fn selects_repeats_and_skips_out_of_range() {
        let src: Vec<u32> = (0..12).collect(); // 4 rows of 3
        let got = select_rows(&src, 3, &[2, 0, 2, -1, 4]);
        assert_eq!(got, vec![Some(vec![6, 7, 8]), Some(vec![0, 1, 2]), Some(vec![6, 7, 8]), None, None]);
    }
}
