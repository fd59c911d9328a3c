//! ptxas's resource report for every kernel, recorded by build.rs for both targets (sm_80, sm_90a).

/// One kernel instantiation's resources on one target, as ptxas reported them.
#[derive(Clone, Copy, Debug)]
pub struct KernelResources {
    /// The .cu file stem (the kernel family).
    pub file: &'static str,
    /// The compilation target: "sm_80" or "sm_90a".
    pub arch: &'static str,
    /// The demangled kernel name (mangled when c++filt was not available at build time).
    pub name: &'static str,
    /// Registers per thread.
    pub registers: u32,
    /// Stack frame per thread, in bytes (local memory; [`STACK_ALLOWED`] lists the exceptions).
    pub stack_bytes: u32,
    /// Register spill stores to local memory per thread, in bytes (must be 0).
    pub spill_store_bytes: u32,
    /// Register spill loads from local memory per thread, in bytes (must be 0).
    pub spill_load_bytes: u32,
    /// Static shared memory per block, in bytes (dynamic shared memory is not included).
    pub shared_bytes: u32,
    /// ptxas serialized the kernel's wgmma instructions (its C7514 / C7515 "Potential
    /// Performance Loss": an instruction reads or writes an in-flight wgmma's accumulators, so
    /// each wgmma waits for the one before; must be false).
    pub wgmma_serialized: bool,
}

include!(concat!(env!("OUT_DIR"), "/kernel_resources.rs"));

/// Kernels allowed a stack frame, with the bytes they may use: (name substring, bytes).
/// Empty: no kernel needs one. A new entry needs a reason beside it.
pub const STACK_ALLOWED: &[(&str, u32)] = &[];

/// The kernels that break the rules: any spill, a stack frame beyond `STACK_ALLOWED`, or
/// wgmma instructions ptxas serialized.
pub fn violations() -> Vec<&'static KernelResources> {
    KERNELS
        .iter()
        .filter(|k| {
            let allowed = STACK_ALLOWED.iter().find(|(n, _)| k.name.contains(n)).map_or(0, |a| a.1);
            k.spill_store_bytes > 0 || k.spill_load_bytes > 0 || k.stack_bytes > allowed || k.wgmma_serialized
        })
        .collect()
}

/// The table as markdown (`warpcore info --kernels`).
pub fn table() -> String {
    let mut s = String::from("| file | target | kernel | regs | stack B | spill st/ld B | smem B | wgmma |\n|---|---|---|---:|---:|---:|---:|---|\n");
    for k in KERNELS {
        s += &format!(
            "| {} | {} | `{}` | {} | {} | {}/{} | {} | {} |\n",
            k.file,
            k.arch,
            k.name,
            k.registers,
            k.stack_bytes,
            k.spill_store_bytes,
            k.spill_load_bytes,
            k.shared_bytes,
            if k.wgmma_serialized { "serialized" } else { "" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enabled_family_reported_kernels() {
        #[cfg(feature = "rms-norm")]
        assert!(KERNELS.iter().any(|k| k.file == "rms_norm"), "no ptxas report for rms_norm");
        #[cfg(feature = "moe-routing")]
        assert!(KERNELS.iter().any(|k| k.file == "moe_routing"), "no ptxas report for moe_routing");
        #[cfg(feature = "rope")]
        assert!(KERNELS.iter().any(|k| k.file == "rope"), "no ptxas report for rope");
        #[cfg(feature = "elementwise")]
        assert!(KERNELS.iter().any(|k| k.file == "elementwise"), "no ptxas report for elementwise");
        #[cfg(feature = "matmul-ternary")]
        assert!(KERNELS.iter().any(|k| k.file == "matmul_ternary"), "no ptxas report for matmul_ternary");
    }

    #[test]
    fn warp_specialised_kernels_have_the_register_pool_setmaxnreg_assumes() {
        // setmaxnreg moves registers between the warpgroups of a CTA inside its allocation, fixed
        // at launch: 384 threads × the kernel's registers. The producer gives back down to 40
        // (56) and the two consumers ask for 232 (224): 128·40 + 256·232 = 128·56 + 256·224 =
        // 64,512 = 384 × 168. A kernel built with fewer registers would leave its consumers
        // waiting in setmaxnreg.inc for good. The FP8 GEMM's 64-row tiles (one consumer
        // warpgroup) never call it; a kernel added to these files without warp specialisation
        // belongs in that exception too.
        const FILES: [&str; 4] = ["attention_sm90", "attention_mla_sm90", "matmul_fp8_sm90", "matmul_ternary_sm90"];
        let mut checked = 0;
        for k in KERNELS.iter().filter(|k| k.arch == "sm_90a" && FILES.contains(&k.file) && !k.name.starts_with("wc::matmul_fp8_sm90_kernel<64,")) {
            assert_eq!(k.registers, 168, "{}", k.name);
            checked += 1;
        }
        assert!(KERNELS.is_empty() || !cfg!(feature = "attention") || checked > 0, "no warp-specialised kernel in the table");
    }

    #[test]
    fn no_kernel_spills_or_uses_an_unallowed_stack_frame() {
        let bad = violations();
        assert!(bad.is_empty(), "kernels that spill, use a stack frame or have their wgmma serialized (sm_80 or sm_90a):\n{bad:#?}");
    }
}
