//! Shared by the test files: the device (or a loud skip), result assertions, the parity folder.
#![allow(dead_code)]

use warpcore::check::CheckResult;
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
