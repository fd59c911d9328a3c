//! criterion benchmarks of the RMSNorm family, timed with CUDA events (iter_custom), with
//! Throughput::Bytes = the bytes each call must move. Without a GPU: prints SKIP.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use std::time::Duration;
use warpcore::check::Rng;
use warpcore::ops::rms_norm::{fused_add_rms_norm, rms_norm, RmsNormConfig};
use warpcore::{Device, TensorView, TensorViewMut};

/// Runs `f` `iters` times between two CUDA events on the device's stream; the GPU time.
fn gpu_time(dev: &Device, iters: u64, mut f: impl FnMut()) -> Duration {
    let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = dev.stream().record_event(flags).unwrap();
    for _ in 0..iters {
        f();
    }
    let end = dev.stream().record_event(flags).unwrap();
    end.synchronize().unwrap();
    Duration::from_secs_f64(start.elapsed_ms(&end).unwrap() as f64 * 1e-3)
}

fn benches(c: &mut Criterion) {
    let dev = match warpcore::driver_present().then(|| Device::new(0)) {
        Some(Ok(d)) => d,
        _ => {
            eprintln!("SKIP (no CUDA device): RMSNorm benchmarks need a GPU");
            return;
        }
    };
    let mut g = c.benchmark_group("rms_norm_bf16");
    for &(tokens, hidden) in &[(16384usize, 4096usize), (16384, 8192), (64, 4096)] {
        let n = tokens * hidden;
        let host: Vec<bf16> = Rng::new(1).vec(n, -2.0, 2.0);
        let x = dev.upload(&host).unwrap();
        let mut out = dev.zeros::<bf16>(n).unwrap();
        let w = dev.upload(&Rng::new(2).vec::<bf16>(hidden, -1.0, 1.0)).unwrap();
        g.throughput(Throughput::Bytes((2 * n * 2) as u64));
        g.bench_function(BenchmarkId::new("rms_norm", format!("{tokens}x{hidden}")), |b| {
            b.iter_custom(|iters| {
                let xv = TensorView::contiguous(x.as_view(), [tokens, hidden]).unwrap();
                let wv = TensorView::contiguous(w.as_view(), [hidden]).unwrap();
                let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [tokens, hidden]).unwrap();
                gpu_time(&dev, iters, || rms_norm(&dev, &xv, &wv, &mut ov, RmsNormConfig::new(1e-6)).unwrap())
            })
        });
        let mut xm = dev.upload(&host).unwrap();
        let mut r = dev.upload(&host).unwrap();
        g.throughput(Throughput::Bytes((4 * n * 2) as u64));
        g.bench_function(BenchmarkId::new("fused_add_rms_norm", format!("{tokens}x{hidden}")), |b| {
            b.iter_custom(|iters| {
                let wv = TensorView::contiguous(w.as_view(), [hidden]).unwrap();
                let mut xv = TensorViewMut::contiguous(xm.as_view_mut(), [tokens, hidden]).unwrap();
                let mut rv = TensorViewMut::contiguous(r.as_view_mut(), [tokens, hidden]).unwrap();
                gpu_time(&dev, iters, || fused_add_rms_norm(&dev, &mut xv, &mut rv, &wv, RmsNormConfig::new(1e-6)).unwrap())
            })
        });
    }
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
