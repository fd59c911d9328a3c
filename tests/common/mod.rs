//! Shared by the test files: the device (or a loud skip), result assertions, the parity folder.
#![allow(dead_code)]

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use warpcore::check::CheckResult;
use warpcore::model::Weights;
use warpcore::{driver_present, Device, Error};

/// The GPU to test on. Without one, prints `SKIP (no CUDA device)` and returns None — unless
/// WARPCORE_REQUIRE_GPU=1, where a missing device fails the test.
pub fn device() -> Option<Device> {
    let dev = if driver_present() { Device::new(0) } else { Err(Error::NoDevice("libcuda not found".into())) };
    match dev {
        Ok(d) => Some(d),
        Err(e) if std::env::var("WARPCORE_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("WARPCORE_REQUIRE_GPU=1 but there is no usable CUDA device: {e}")
        }
        Err(e) => {
            eprintln!("SKIP (no CUDA device): {e}");
            None
        }
    }
}

/// Fails with the full comparison report unless every comparison passed.
pub fn assert_passed(r: &CheckResult) {
    assert!(r.passed(), "{r}");
}

/// The proptest configuration of the GPU suites: 48 cases per property, PROPTEST_CASES
/// overrides (scripts/gpu-run lowers it under the sanitizers); no failure files.
pub fn proptest_config() -> proptest::prelude::ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    proptest::prelude::ProptestConfig { cases, failure_persistence: None, ..Default::default() }
}

/// The model folder in WARPCORE_PARITY_DIR (a checkpoint of any size with the expected.json and
/// expected.safetensors that `scripts/make_fixtures --expect DIR` writes), or None after printing
/// `SKIP (WARPCORE_PARITY_DIR unset)`.
pub fn parity_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("WARPCORE_PARITY_DIR").map(std::path::PathBuf::from);
    if dir.is_none() {
        println!("SKIP (WARPCORE_PARITY_DIR unset)");
    }
    dir
}

/// A safetensors file's tensors: name → (dtype, shape, bytes).
pub type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// A copy of the model folder `src` (config.json, model.safetensors) in a fresh temporary
/// folder, its tensors passed through `edit`.
pub fn edited_copy(src: &Path, tag: &str, edit: impl FnOnce(&mut Tensors)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warpcore-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = st.tensors().into_iter().map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec()))).collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors.iter().map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    dir
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The routed experts `{block}{e}.{gate, up, down}.weight` of `w` (names in that order) as
/// transformers 5 holds them: `{block}gate_up_proj` `[E, 2·inter, hidden]` (each expert's gate
/// rows, then its up rows) and `{block}down_proj` `[E, hidden, inter]`, f32; the per-expert
/// tensors (and FP8 scales) are removed.
pub fn fuse_experts(w: &Weights, t: &mut Tensors, block: &str, names: [&str; 3], experts: usize, inter: usize, hidden: usize) {
    let (mut gate_up, mut down) = (Vec::new(), Vec::new());
    for e in 0..experts {
        for (i, part) in names.iter().enumerate() {
            let name = format!("{block}{e}.{part}.weight");
            (if i == 2 { &mut down } else { &mut gate_up }).extend(w.get(&name).unwrap().0);
            t.remove(&name).unwrap();
            t.remove(&format!("{name}_scale_inv"));
        }
    }
    t.insert(format!("{block}gate_up_proj"), (Dtype::F32, vec![experts, 2 * inter, hidden], f32_bytes(&gate_up)));
    t.insert(format!("{block}down_proj"), (Dtype::F32, vec![experts, hidden, inter], f32_bytes(&down)));
}
