//! Build script: compiles cuda/*.cu with nvcc into one static library, links static cudart,
//! runs bindgen on cuda/include/warpcore.h, and records ptxas's resource report for both targets.
//!
//! Outputs in OUT_DIR: `libwarpcore_kernels.a`, `ffi.rs` (bindgen), `kernel_resources.rs`
//! (one row per kernel and target: registers, stack, spills, shared memory on sm_80 and sm_90a).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel families: (cargo feature, file stem under cuda/). The one list of families; a family
/// spanning several files (matmul-fp8: one per architecture) has one row per file.
const FAMILIES: &[(&str, &str)] = &[
    ("rms-norm", "rms_norm"),
    ("rope", "rope"),
    ("attention", "attention_gqa"),
    ("attention", "attention_sm90"),
    ("attention", "attention_mla"),
    ("attention", "attention_mla_sm90"),
    ("moe-routing", "moe_routing"),
    ("elementwise", "elementwise"),
    ("quant-fp8", "quant_fp8"),
    ("matmul-fp8", "matmul_fp8_sm80"),
    ("matmul-fp8", "matmul_fp8_sm90"),
    ("matmul-ternary", "matmul_ternary"),
    ("matmul-ternary", "matmul_ternary_sm90"),
];
/// Defines a feature adds to one file's compile: (cargo feature, file stem, define).
/// `matmul-fp8-tuning` builds the FP8 GEMM's tuning-only configurations (the UNMEASURED tiles
/// and the TMA-store epilogue, which `warpcore bench --tune` times; about 40 % of that file's
/// nvcc time), so the default build compiles only what the planner picks.
const FEATURE_DEFINES: &[(&str, &str, &str)] = &[("matmul-fp8-tuning", "matmul_fp8_sm90", "-DWC_FP8_TUNING")];
/// Built whatever features are on.
const ALWAYS: &[&str] = &["status"];
/// Targets: sm_80 SASS + PTX (runs on every sm_80+ GPU), sm_90a SASS (Hopper features).
const GENCODE: &[&str] = &[
    "-gencode=arch=compute_80,code=[sm_80,compute_80]",
    "-gencode=arch=compute_90a,code=sm_90a",
];
/// `WARPCORE_CUDA_ARCHS=sm_90a` builds the sm_90a target alone: what an H100 / H200 runs, at
/// half the kernels' bytes (scripts/gpu-bundle, whose binaries must fit the device machine's
/// 64 MiB). Unset (or `sm_80,sm_90a`): both.
/// A file named `*_sm90.cu` holds Hopper-only kernels (wgmma, TMA; a trapping stub on any other
/// target), which the Rust side launches only on compute capability 9.0: it builds for sm_90a
/// alone (on an sm_80 GPU its launcher reports no kernel image instead of trapping).
fn gencode(stem: &str) -> &'static [&'static str] {
    match env::var("WARPCORE_CUDA_ARCHS").as_deref() {
        Ok("sm_90a") => &GENCODE[1..],
        Ok("sm_80,sm_90a") | Ok("") | Err(_) if stem.ends_with("_sm90") => &GENCODE[1..],
        Ok("sm_80,sm_90a") | Ok("") | Err(_) => GENCODE,
        Ok(other) => {
            eprintln!("\nwarpcore: WARPCORE_CUDA_ARCHS must be sm_90a or sm_80,sm_90a, not {other:?}\n");
            std::process::exit(1);
        }
    }
}
/// The targets whose ptxas report is recorded: both, since a kernel may build a different body
/// for each (attention_gqa.cu sizes its pipelines per target).
const REPORT_ARCHES: &[&str] = &["sm_80", "sm_90a"];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=cuda");
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH", "WARPCORE_HOST_EMU", "WARPCORE_WAIT_LIMIT_NS", "WARPCORE_CUDA_ARCHS", "DOCS_RS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    // Host emulation (tools/host-emu/cargo-test): the kernels, rewritten to run on the CPU, and a
    // stand-in libcuda / libcublas come from one shared library instead of this build; no nvcc.
    if let Some(dir) = env::var_os("WARPCORE_HOST_EMU") {
        let dir = PathBuf::from(dir);
        let lib = dir.join("libwarpcore_emu.so");
        assert!(lib.exists(), "warpcore: WARPCORE_HOST_EMU is set but {} does not exist (tools/host-emu/run lib)", lib.display());
        println!("cargo:rerun-if-changed={}", lib.display());
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=dylib=warpcore_emu");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        write_resources(&out.join("kernel_resources.rs"), &[]);
        bindgen_header(&root, &out);
        return;
    }

    // docs.rs (DOCS_RS set) has no CUDA toolkit and only documents: the bindings and an empty
    // resource table are all the crate needs to compile there; nothing links. scripts/test's
    // one-family `cargo check`s set it too (they link nothing either).
    if env::var_os("DOCS_RS").is_some() {
        write_resources(&out.join("kernel_resources.rs"), &[]);
        bindgen_header(&root, &out);
        return;
    }

    let nvcc = find_nvcc(&root).unwrap_or_else(|| {
        eprintln!(
            "\nwarpcore: nvcc (the CUDA compiler) was not found.\n  \
             Run `scripts/setup` (installs CUDA 13.0 into .toolchain/), or point one of these at a \
             CUDA toolkit:\n  NVCC=/path/to/nvcc, CUDA_HOME or CUDA_PATH=/path/to/cuda; \
             /usr/local/cuda/bin and PATH are searched too.\n"
        );
        std::process::exit(1);
    });
    let cudart_dir = find_cudart(&nvcc).unwrap_or_else(|| {
        eprintln!(
            "\nwarpcore: libcudart_static.a was not found next to {} (lib/, lib64/, \
             targets/*/lib). Run `scripts/setup`.\n",
            nvcc.display()
        );
        std::process::exit(1);
    });

    let feature_on = |feature: &str| env::var_os(format!("CARGO_FEATURE_{}", feature.to_uppercase().replace('-', "_"))).is_some();
    let mut stems: Vec<&str> = ALWAYS.to_vec();
    for (feature, stem) in FAMILIES {
        if feature_on(feature) {
            stems.push(stem);
        }
    }

    // cc in CUDA mode gives the nvcc command line (host compiler, -fPIC, ...); we run it per
    // file ourselves so that files compile in parallel and each ptxas report stays whole.
    env::set_var("NVCC", &nvcc);
    let compiler = cc::Build::new()
        .cuda(true)
        .cudart("none")
        // -O is nvcc's host-code level (the launchers); device code is optimized by cicc and
        // ptxas whatever it says (the SASS is identical at -O1 and -O3), and -O1 compiles the
        // host side of a file about a third faster.
        .opt_level(1)
        .debug(false)
        .cargo_metadata(false)
        .get_compiler();

    let jobs = env::var("NUM_JOBS").ok().and_then(|j| j.parse().ok()).unwrap_or(2usize).max(1);
    // A work queue, largest source first (a proxy for nvcc time: attention_gqa.cu takes about a
    // minute), so that no worker waits on another's slow file while files are left.
    let mut queue: Vec<(usize, String)> = stems.iter().map(|s| s.to_string()).enumerate().collect();
    let size = |stem: &str| std::fs::metadata(root.join("cuda").join(format!("{stem}.cu"))).map_or(0, |m| m.len());
    queue.sort_by_key(|(_, stem)| std::cmp::Reverse(size(stem)));
    let queue = std::sync::Mutex::new(queue);
    // The spin-wait watchdog's limit (cuda/common.cuh: WC_WAIT_LIMIT_NS; 0 turns it off, e.g.
    // under a debugger).
    let wait_limit = env::var("WARPCORE_WAIT_LIMIT_NS").ok().map(|v| {
        let ns: u64 = v.trim().parse().unwrap_or_else(|_| {
            eprintln!("\nwarpcore: WARPCORE_WAIT_LIMIT_NS must be a number of nanoseconds (0: no watchdog), not {v:?}\n");
            std::process::exit(1);
        });
        format!("-DWC_WAIT_LIMIT_NS={ns}ull")
    });
    let started = std::time::Instant::now();
    let compile = |stem: &str| {
        let mut cmd = compiler.to_command();
        let src = root.join("cuda").join(format!("{stem}.cu"));
        let obj = out.join(format!("{stem}.o"));
        cmd.arg("-c")
            .arg("-std=c++17")
            .arg("--threads=2")
            .arg("-Xptxas=-v")
            .arg("-Werror=all-warnings")
            .args(&wait_limit)
            .args(FEATURE_DEFINES.iter().filter(|&&(f, s, _)| s == stem && feature_on(f)).map(|&(_, _, d)| d))
            .arg(format!("-I{}", root.join("cuda/include").display()))
            .arg(format!("-I{}", root.join("cuda").display()))
            .args(gencode(stem))
            .arg("-o")
            .arg(&obj)
            .arg(&src);
        let start = started.elapsed().as_secs_f64();
        let output = cmd.output();
        (obj, output, (start, started.elapsed().as_secs_f64()))
    };
    type Compiled = (usize, String, PathBuf, std::io::Result<std::process::Output>, (f64, f64));
    let mut done: Vec<Compiled> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| {
                    let next = || {
                        let mut q = queue.lock().unwrap();
                        (!q.is_empty()).then(|| q.remove(0))
                    };
                    let mut mine = Vec::new();
                    while let Some((i, stem)) = next() {
                        let (obj, output, span) = compile(&stem);
                        mine.push((i, stem, obj, output, span));
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    done.sort_by_key(|(i, ..)| *i); // the objects and reports in the families' order
    // When each file's nvcc started and ended (seconds into this build script): where a clean
    // build's time goes (docs/ARCHITECTURE.md, Build).
    let times: String = done.iter().map(|(_, stem, _, _, (a, b))| format!("{stem} {a:.1} {b:.1} {:.1}\n", b - a)).collect();
    std::fs::write(out.join("nvcc-times.txt"), times).expect("warpcore: could not write nvcc-times.txt");
    let mut objects = Vec::new();
    let mut reports = Vec::new();
    for (_, stem, obj, output, _) in done {
        let output = output.unwrap_or_else(|e| panic!("warpcore: could not run nvcc: {e}"));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            eprintln!("{stderr}");
            panic!("warpcore: nvcc failed on cuda/{stem}.cu");
        }
        reports.extend(parse_ptxas(&stem, &stderr));
        objects.push(obj);
    }

    cc::Build::new().objects(&objects).cargo_warnings(false).compile("warpcore_kernels");
    println!("cargo:rustc-link-search=native={}", cudart_dir.display());
    println!("cargo:rustc-link-lib=static=cudart_static");
    // nvcc's host stubs use __cxa_guard_*; static libsupc++ keeps binaries free of libstdc++.
    if let Some(dir) = gcc_lib_dir("libsupc++.a") {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    println!("cargo:rustc-link-lib=static=supc++");
    for lib in ["dl", "rt", "pthread"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }

    write_resources(&out.join("kernel_resources.rs"), &reports);
    bindgen_header(&root, &out);
}

/// `ffi.rs`: the C ABI of cuda/include/warpcore.h.
fn bindgen_header(root: &Path, out: &Path) {
    bindgen::Builder::default()
        .header(root.join("cuda/include/warpcore.h").to_string_lossy())
        .allowlist_item("wc_.*")
        .allowlist_item("WC_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .derive_default(true)
        .generate()
        .expect("warpcore: bindgen failed on cuda/include/warpcore.h")
        .write_to_file(out.join("ffi.rs"))
        .expect("warpcore: could not write ffi.rs");
}

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    // An explicit NVCC is obeyed: a wrong one is an error, not a silent fallback.
    if let Some(p) = env::var_os("NVCC") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = env::var_os(var) {
            candidates.push(PathBuf::from(p).join("bin/nvcc"));
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.join(".toolchain/lib")) {
        for e in entries.flatten() {
            candidates.push(e.path().join("site-packages/nvidia/cu13/bin/nvcc"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn find_cudart(nvcc: &Path) -> Option<PathBuf> {
    let home = nvcc.parent()?.parent()?;
    let mut dirs = vec![home.join("lib64"), home.join("lib")];
    if let Ok(entries) = std::fs::read_dir(home.join("targets")) {
        dirs.extend(entries.flatten().map(|e| e.path().join("lib")));
    }
    dirs.into_iter().find(|d| d.join("libcudart_static.a").is_file())
}

fn gcc_lib_dir(file: &str) -> Option<PathBuf> {
    let out = Command::new("gcc").arg(format!("-print-file-name={file}")).output().ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.is_absolute().then(|| path.parent().map(Path::to_path_buf)).flatten()
}

#[derive(Default)]
struct Resources {
    file: String,
    arch: String,
    symbol: String,
    registers: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
    shared: u32,
    /// ptxas said it serialized the kernel's wgmma (C7514 / C7515: an instruction touches an
    /// in-flight wgmma's accumulators, so every wgmma waits for the one before).
    wgmma_serialized: bool,
}

/// Parses `ptxas info` lines: "Compiling entry function 'X' for 'sm_90a'", then "N bytes stack
/// frame, N bytes spill stores, N bytes spill loads", then "Used N registers, ... N bytes smem";
/// and "(C7514) / (C7515) Potential Performance Loss: wgmma.mma_async instructions are
/// serialized ... in the function 'X'".
fn parse_ptxas(file: &str, stderr: &str) -> Vec<Resources> {
    let mut rows = Vec::new();
    let mut cur: Option<Resources> = None;
    let num_before = |line: &str, unit: &str| -> u32 {
        let i = match line.find(unit) {
            Some(i) => i,
            None => return 0,
        };
        line[..i].split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    for line in stderr.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            if let Some(r) = cur.take() {
                rows.push(r);
            }
            let mut parts = rest.split('\'');
            let symbol = parts.next().unwrap_or("").to_string();
            let arch = parts.nth(1).unwrap_or("");
            if REPORT_ARCHES.contains(&arch) {
                cur = Some(Resources { file: file.to_string(), arch: arch.to_string(), symbol, ..Default::default() });
            }
        } else if let Some(r) = cur.as_mut() {
            if line.contains("bytes stack frame") {
                r.stack = num_before(line, "bytes stack frame");
                r.spill_stores = num_before(line, "bytes spill stores");
                r.spill_loads = num_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                r.registers = num_before(line, "registers");
                r.shared = num_before(line, "bytes smem");
                rows.push(cur.take().unwrap());
            }
        }
    }
    rows.extend(cur);
    // The serialization notes come before the entry functions' reports (wgmma: sm_90a only).
    let serialized: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("wgmma.mma_async instructions are serialized"))
        .filter_map(|l| l.split("in the function '").nth(1).and_then(|r| r.split('\'').next()))
        .collect();
    for r in rows.iter_mut().filter(|r| r.arch == "sm_90a") {
        r.wgmma_serialized = serialized.contains(&r.symbol.as_str());
    }
    // A note naming no entry function (a non-inlined device function) still gets a row, so
    // that the resources test reports it instead of it being dropped.
    let unmatched: Vec<&str> = serialized.into_iter().filter(|s| !rows.iter().any(|r| r.symbol == *s)).collect();
    for s in unmatched {
        rows.push(Resources { file: file.to_string(), arch: "sm_90a".into(), symbol: s.to_string(), wgmma_serialized: true, ..Default::default() });
    }
    rows
}

fn write_resources(path: &Path, rows: &[Resources]) {
    let names = demangle(&rows.iter().map(|r| r.symbol.as_str()).collect::<Vec<_>>());
    let mut s = String::from(
        "// Generated by build.rs from ptxas -v. One row per kernel instantiation and target.\n\
         /// Every kernel instantiation's resources on each target, as ptxas reported them at\n\
         /// build time (empty in a host-emulation build, which runs no ptxas).\n\
         pub const KERNELS: &[KernelResources] = &[\n",
    );
    for (r, name) in rows.iter().zip(names) {
        s += &format!(
            "    KernelResources {{ file: {:?}, arch: {:?}, name: {:?}, registers: {}, stack_bytes: {}, \
             spill_store_bytes: {}, spill_load_bytes: {}, shared_bytes: {}, wgmma_serialized: {} }},\n",
            r.file, r.arch, name, r.registers, r.stack, r.spill_stores, r.spill_loads, r.shared, r.wgmma_serialized
        );
    }
    s += "];\n";
    std::fs::write(path, s).expect("warpcore: could not write kernel_resources.rs");
}

/// Demangles with c++filt when it is there (binutils); otherwise keeps the mangled names.
fn demangle(symbols: &[&str]) -> Vec<String> {
    // "void wc::(anonymous namespace)::k<__nv_bfloat16, 8>(args...)" -> "wc::k<bf16, 8>"
    let tidy = |s: &str| {
        let s = s.replace("(anonymous namespace)::", "").replace("__nv_bfloat16", "bf16").replace("__half", "f16").replace("__nv_fp8_e4m3", "e4m3");
        let s = s.strip_prefix("void ").unwrap_or(&s);
        s.split('(').next().unwrap_or(s).to_string()
    };
    let run = || -> Option<Vec<String>> {
        let out = Command::new("c++filt").args(symbols).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let lines: Vec<String> = text.lines().map(tidy).collect();
        (out.status.success() && lines.len() == symbols.len()).then_some(lines)
    };
    run().unwrap_or_else(|| symbols.iter().map(|s| s.to_string()).collect())
}
