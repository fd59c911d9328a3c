//! References of the element-wise family: `select_rows` here; `glu`'s is
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_repeats_and_skips_out_of_range() {
        let src: Vec<u32> = (0..12).collect(); // 4 rows of 3
        let got = select_rows(&src, 3, &[2, 0, 2, -1, 4]);
        assert_eq!(got, vec![Some(vec![6, 7, 8]), Some(vec![0, 1, 2]), Some(vec![6, 7, 8]), None, None]);
    }
}
