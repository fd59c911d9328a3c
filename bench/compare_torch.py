#!/usr/bin/env python3
"""Times PyTorch's versions of warpcore's ops at the shapes `warpcore bench` uses, with the
same method (CUDA events, warm-up, median of 25 samples, inputs rotated past L2), and writes
JSON that `warpcore bench --compare FILE` merges in as alternatives:

    {"device": ..., "torch": ..., "results": [{"op", "dtype", "shape", "name", "time_us"}]}

The (op, dtype, shape) keys must match src/bench/<family>.rs. Usage:
    python3 bench/compare_torch.py --out torch.json [--compile]
"""
import argparse
import json
import math

import torch
import torch.nn.functional as F

ROTATE_BYTES = 120 << 20
SAMPLES = 25
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def copies_for(bytes_per_call):
    return max(1, min(256, math.ceil(ROTATE_BYTES / max(1, bytes_per_call))))


def time_calls(fn, copies):
    """Median µs per call of fn(i), i counting calls (for rotation)."""
    call = [0]

    def run(n):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn(call[0] % copies)
            call[0] += 1
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e3

    run(3)
    one = max(run(1), 0.5)
    per = max(1, min(2000, math.ceil(500.0 / one)))
    times = sorted(run(per) / per for _ in range(SAMPLES))
    return times[len(times) // 2]


def rand(shape, dtype, copies):
    return [torch.empty(shape, dtype=dtype, device="cuda").uniform_(-2, 2) for _ in range(copies)]


def rms_norm_cases(compile_too):
    out = []
    eps = 1e-6

    def add(op, dtype, shape, name, t):
        out.append({"op": op, "dtype": dtype, "shape": shape, "name": name, "time_us": t})

    norm = F.rms_norm
    compiled = torch.compile(F.rms_norm) if compile_too else None

    def add_norm(r, x, w):
        r.add_(x)
        return F.rms_norm(r, (r.shape[-1],), w, eps)

    compiled_add_norm = torch.compile(add_norm) if compile_too else None

    for dt, tokens, hidden in [("bf16", 16384, 4096), ("bf16", 16384, 8192), ("bf16", 64, 4096), ("bf16", 1, 4096),
                               ("f16", 16384, 4096), ("f32", 16384, 4096)]:
        dtype = DTYPES[dt]
        n = tokens * hidden
        copies = copies_for(2 * n * dtype.itemsize)
        xs = rand((tokens, hidden), dtype, copies)
        w = torch.empty(hidden, dtype=dtype, device="cuda").uniform_(-1, 1)
        shape = f"{tokens}x{hidden}"
        add("rms_norm", dt, shape, "torch F.rms_norm", time_calls(lambda i: norm(xs[i], (hidden,), w, eps), copies))
        if compiled is not None:
            add("rms_norm", dt, shape, "torch.compile", time_calls(lambda i: compiled(xs[i], (hidden,), w, eps), copies))
        del xs

    for dt, tokens, hidden in [("bf16", 16384, 4096), ("bf16", 16384, 8192), ("bf16", 64, 4096)]:
        dtype = DTYPES[dt]
        n = tokens * hidden
        copies = copies_for(4 * n * dtype.itemsize)
        xs, rs = rand((tokens, hidden), dtype, copies), rand((tokens, hidden), dtype, copies)
        w = torch.empty(hidden, dtype=dtype, device="cuda").uniform_(-1, 1)
        shape = f"{tokens}x{hidden}"
        add("fused_add_rms_norm", dt, shape, "torch add_ + F.rms_norm",
            time_calls(lambda i: add_norm(rs[i], xs[i], w), copies))
        if compiled_add_norm is not None:
            add("fused_add_rms_norm", dt, shape, "torch.compile",
                time_calls(lambda i: compiled_add_norm(rs[i], xs[i], w), copies))
        del xs, rs

    for tokens, qh, kvh, hd in [(16384, 32, 8, 128), (64, 32, 8, 128)]:
        dtype = torch.bfloat16
        row = (qh + 2 * kvh) * hd
        copies = copies_for(2 * tokens * (qh + kvh) * hd * dtype.itemsize)
        qkvs = rand((tokens, row), dtype, copies)
        w = torch.empty(hd, dtype=dtype, device="cuda").uniform_(-1, 1)

        def qk(i):
            q = qkvs[i][:, : qh * hd].view(tokens, qh, hd)
            k = qkvs[i][:, qh * hd: (qh + kvh) * hd].view(tokens, kvh, hd)
            return F.rms_norm(q, (hd,), w, eps), F.rms_norm(k, (hd,), w, eps)

        add("qk_rms_norm", "bf16", f"{tokens}x{qh}+{kvh}x{hd}", "torch F.rms_norm q, k", time_calls(qk, copies))
        del qkvs
    return out


def sdpa_backends():
    """(name, context manager factory) for SDPA's flash and cuDNN back-ends that exist here."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out = []
    for name, backend in [("torch SDPA flash", "FLASH_ATTENTION"), ("torch SDPA cuDNN", "CUDNN_ATTENTION"),
                          ("torch SDPA efficient", "EFFICIENT_ATTENTION")]:
        if hasattr(SDPBackend, backend):
            out.append((name, lambda b=getattr(SDPBackend, backend): sdpa_kernel(b)))
    return out


def attention_cases():
    """GQA attention, bf16, 32 q / 8 kv heads, head_dim 128 (src/bench/attention.rs keys).
    PyTorch has no paged cache: decode is timed on contiguous K/V (its best case) and reported
    under both page-size keys. GQA through enable_gqa when the back-end takes it, else K/V
    heads repeated (what a caller of that back-end must do)."""
    out = []
    nq, nkv, hd = 32, 8, 128

    def run_backend(name, ctx, q, k, v, causal):
        def call(_i):
            with ctx():
                try:
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
                except RuntimeError:
                    g = q.shape[1] // k.shape[1]
                    return F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                                          is_causal=causal)
        try:
            call(0)
            torch.cuda.synchronize()
        except Exception as e:  # back-end unavailable for this shape
            print(f"  {name}: unavailable ({type(e).__name__}: {str(e)[:80]})")
            return None
        return time_calls(call, 1)

    for batch, kv_len in [(64, 4096), (16, 32768), (1, 131072)]:
        q = torch.randn(batch, nq, 1, hd, dtype=torch.bfloat16, device="cuda")
        k = torch.randn(batch, nkv, kv_len, hd, dtype=torch.bfloat16, device="cuda")
        v = torch.randn(batch, nkv, kv_len, hd, dtype=torch.bfloat16, device="cuda")
        for name, ctx in sdpa_backends():
            t = run_backend(name, ctx, q, k, v, False)
            if t is not None:
                for page in (16, 64):
                    out.append({"op": "attention_decode", "dtype": "bf16", "shape": f"b{batch} kv{kv_len} page{page}",
                                "name": name, "time_us": t})
        del q, k, v
    for batch, seq in [(1, 16384), (4, 4096)]:
        q = torch.randn(batch, nq, seq, hd, dtype=torch.bfloat16, device="cuda")
        k = torch.randn(batch, nkv, seq, hd, dtype=torch.bfloat16, device="cuda")
        v = torch.randn(batch, nkv, seq, hd, dtype=torch.bfloat16, device="cuda")
        for name, ctx in sdpa_backends():
            t = run_backend(name, ctx, q, k, v, True)
            if t is not None:
                out.append({"op": "attention_prefill", "dtype": "bf16", "shape": f"b{batch} q{seq} causal",
                            "name": name, "time_us": t})
        del q, k, v
    return out


FP8_MAX = 448.0
AMAX_FLOOR = 1e-12


def quantize_torch(x, granularity):
    """PyTorch's best eager equivalent of warpcore's dynamic quantization (same scale rule:
    scale = max(amax, floor) / 448, codes saturated to +-448 before the cast)."""
    rows, cols = x.shape
    xf = x.float()
    if granularity == "tensor":
        scale = xf.abs().amax().clamp(min=AMAX_FLOOR) / FP8_MAX
        q = (xf / scale).clamp(-FP8_MAX, FP8_MAX)
    elif granularity == "row":
        scale = xf.abs().amax(dim=1, keepdim=True).clamp(min=AMAX_FLOOR) / FP8_MAX
        q = (xf / scale).clamp(-FP8_MAX, FP8_MAX)
    elif granularity == "group128":
        g = xf.view(rows, cols // 128, 128)
        scale = g.abs().amax(dim=2, keepdim=True).clamp(min=AMAX_FLOOR) / FP8_MAX
        q = (g / scale).clamp(-FP8_MAX, FP8_MAX).view(rows, cols)
    else:  # block128
        g = xf.view(rows // 128, 128, cols // 128, 128)
        scale = g.abs().amax(dim=(1, 3), keepdim=True).clamp(min=AMAX_FLOOR) / FP8_MAX
        q = (g / scale).clamp(-FP8_MAX, FP8_MAX).view(rows, cols)
    return q.to(torch.float8_e4m3fn), scale


def quant_cases(compile_too):
    """Keys of src/bench/quant.rs: quantize_fp8 / rms_norm_quant_fp8 / fused_add_rms_norm_quant_fp8."""
    out = []
    if not hasattr(torch, "float8_e4m3fn"):
        print("  torch has no float8_e4m3fn: FP8 quantization comparisons skipped")
        return out

    def add(op, shape, name, t):
        out.append({"op": op, "dtype": "bf16", "shape": shape, "name": name, "time_us": t})

    compiled = torch.compile(quantize_torch) if compile_too else None
    for rows, cols, g in [(4096, 7168, "tensor"), (4096, 7168, "row"), (4096, 7168, "group128"), (128, 7168, "group128"),
                          (7168, 2048, "block128"), (18432, 7168, "block128")]:
        copies = copies_for(3 * rows * cols)
        xs = rand((rows, cols), torch.bfloat16, copies)
        shape = f"{rows}x{cols} {g}"
        add("quantize_fp8", shape, "torch eager", time_calls(lambda i: quantize_torch(xs[i], g), copies))
        if compiled is not None:
            add("quantize_fp8", shape, "torch.compile", time_calls(lambda i: compiled(xs[i], g), copies))
        del xs

    def norm_quant(x, w, g):
        return quantize_torch(F.rms_norm(x, (x.shape[-1],), w, 1e-6), g)

    def add_norm_quant(r, x, w, g):
        r.add_(x)
        return quantize_torch(F.rms_norm(r, (r.shape[-1],), w, 1e-6), g)

    compiled_norm = torch.compile(norm_quant) if compile_too else None
    compiled_add = torch.compile(add_norm_quant) if compile_too else None
    for tokens, hidden, g, fused_add in [(4096, 7168, "row", False), (4096, 7168, "row", True),
                                         (4096, 7168, "group128", False), (4096, 7168, "group128", True),
                                         (128, 7168, "group128", True)]:
        copies = copies_for((5 if fused_add else 3) * tokens * hidden)
        xs = rand((tokens, hidden), torch.bfloat16, copies)
        rs = rand((tokens, hidden), torch.bfloat16, copies)
        w = torch.empty(hidden, dtype=torch.bfloat16, device="cuda").uniform_(-1, 1)
        shape = f"{tokens}x{hidden} {g}"
        if fused_add:
            op = "fused_add_rms_norm_quant_fp8"
            add(op, shape, "torch add_ + rms_norm + quant", time_calls(lambda i: add_norm_quant(rs[i], xs[i], w, g), copies))
            if compiled_add is not None:
                add(op, shape, "torch.compile", time_calls(lambda i: compiled_add(rs[i], xs[i], w, g), copies))
        else:
            op = "rms_norm_quant_fp8"
            add(op, shape, "torch rms_norm + quant", time_calls(lambda i: norm_quant(xs[i], w, g), copies))
            if compiled_norm is not None:
                add(op, shape, "torch.compile", time_calls(lambda i: compiled_norm(xs[i], w, g), copies))
        del xs, rs
    return out


def scaled_mm_cases():
    """torch._scaled_mm (cuBLASLt) at the keys of src/bench/matmul_fp8.rs:
    op matmul_fp8, dtype e4m3, shape "m x n x k <tensor|row|block>[ fast]"."""
    out = []
    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        print("  torch has no _scaled_mm: FP8 GEMM comparisons skipped")
        return out
    cases = [(4096, 7168, 2048, "row", False), (8192, 8192, 8192, "tensor", False), (128, 7168, 2048, "row", False),
             (4096, 7168, 2048, "row", True), (8192, 8192, 8192, "tensor", True), (128, 7168, 2048, "row", True),
             (4096, 7168, 16384, "block", False)]
    for m, n, k, scaling, fast in cases:
        copies = copies_for(m * k + n * k + 2 * m * n)
        a = [torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn) for _ in range(copies)]
        b = [torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn) for _ in range(copies)]
        if scaling == "tensor":
            sa = torch.ones((), device="cuda")
            sb = torch.ones((), device="cuda")
        elif scaling == "row":
            sa = torch.ones(m, 1, device="cuda")
            sb = torch.ones(1, n, device="cuda")
        else:  # DeepSeek-style blocks: A 1x128 (m, k/128), B 128x128 (k/128, n/128) for b.t()
            sa = torch.ones(m, k // 128, device="cuda")
            sb = torch.ones(k // 128, n // 128, device="cuda").t().contiguous().t()

        def call(i):
            return torch._scaled_mm(a[i], b[i].t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16,
                                    use_fast_accum=fast)
        try:
            call(0)
            torch.cuda.synchronize()
        except Exception as e:  # this torch / cuBLASLt does not take the scaling
            print(f"  torch._scaled_mm {m}x{n}x{k} {scaling}: unavailable ({type(e).__name__}: {str(e)[:80]})")
            continue
        name = "torch._scaled_mm" + (" (fast accum)" if fast else "")
        out.append({"op": "matmul_fp8", "dtype": "e4m3", "shape": f"{m}x{n}x{k} {scaling}" + (" fast" if fast else ""),
                    "name": name, "time_us": time_calls(call, copies)})
        del a, b
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile versions (slow to build)")
    args = ap.parse_args()
    torch.manual_seed(0)
    results = rms_norm_cases(args.compile) + attention_cases() + quant_cases(args.compile) + scaled_mm_cases()
    doc = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    for r in results:
        print(f"{r['op']:>28} {r['dtype']:>5} {r['shape']:>26} {r['name']:>30} {r['time_us']:9.2f} us")


if __name__ == "__main__":
    main()
