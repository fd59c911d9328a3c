"""The FP8 part of compare_torch.py (its helpers come in as `env`: device, copies_for,
time_calls, sync, rand): PyTorch's quantization at the keys of src/bench/quant.rs,
torch._scaled_mm (cuBLASLt) at those of src/bench/matmul_fp8.rs, PyTorch's grouped FP8
GEMM at matmul_fp8_grouped's and its grouped bf16 GEMM at matmul_grouped's."""
import torch
import torch.nn.functional as F

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


def quant_cases(env, compile_too):
    """Keys of src/bench/quant.rs: quantize_fp8 / rms_norm_quant_fp8 / fused_add_rms_norm_quant_fp8."""
    out = []
    if not hasattr(torch, "float8_e4m3fn"):
        print("  torch has no float8_e4m3fn: FP8 quantization comparisons skipped")
        return out

    def add(op, shape, name, t):
        out.append({"op": op, "dtype": "bf16", "shape": shape, "name": name, "time_us": t})

    compiled = torch.compile(quantize_torch) if compile_too else None
    for rows, cols, g in [(4096, 7168, "tensor"), (64, 4096, "tensor"), (4096, 7168, "row"), (4096, 7168, "group128"), (128, 7168, "group128"),
                          (7168, 2048, "block128"), (18432, 7168, "block128")]:
        copies = env.copies_for(3 * rows * cols)
        xs = env.rand((rows, cols), torch.bfloat16, copies)
        shape = f"{rows}x{cols} {g}"
        add("quantize_fp8", shape, "torch eager", env.time_calls(lambda i: quantize_torch(xs[i], g), copies))
        if compiled is not None:
            add("quantize_fp8", shape, "torch.compile", env.time_calls(lambda i: compiled(xs[i], g), copies))
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
        copies = env.copies_for((5 if fused_add else 3) * tokens * hidden)
        xs = env.rand((tokens, hidden), torch.bfloat16, copies)
        rs = env.rand((tokens, hidden), torch.bfloat16, copies)
        w = torch.empty(hidden, dtype=torch.bfloat16, device=env.device).uniform_(-1, 1)
        shape = f"{tokens}x{hidden} {g}"
        if fused_add:
            op = "fused_add_rms_norm_quant_fp8"
            add(op, shape, "torch add_ + rms_norm + quant", env.time_calls(lambda i: add_norm_quant(rs[i], xs[i], w, g), copies))
            if compiled_add is not None:
                add(op, shape, "torch.compile", env.time_calls(lambda i: compiled_add(rs[i], xs[i], w, g), copies))
        else:
            op = "rms_norm_quant_fp8"
            add(op, shape, "torch rms_norm + quant", env.time_calls(lambda i: norm_quant(xs[i], w, g), copies))
            if compiled_norm is not None:
                add(op, shape, "torch.compile", env.time_calls(lambda i: compiled_norm(xs[i], w, g), copies))
        del xs, rs

    def glu_quant(gu, g):
        gate, up = gu.chunk(2, dim=-1)
        return quantize_torch(F.silu(gate) * up, g)

    compiled_glu = torch.compile(glu_quant) if compile_too else None
    for rows, inter in [(16384, 2048), (128, 18432)]:
        copies = env.copies_for(5 * rows * inter)
        gus = env.rand((rows, 2 * inter), torch.bfloat16, copies)
        shape = f"{rows}x{inter} group128"
        add("glu_quant_fp8", shape, "torch silu * up + quant", env.time_calls(lambda i: glu_quant(gus[i], "group128"), copies))
        if compiled_glu is not None:
            add("glu_quant_fp8", shape, "torch.compile", env.time_calls(lambda i: compiled_glu(gus[i], "group128"), copies))
        del gus
    return out


def scaled_mm_cases(env):
    """torch._scaled_mm (cuBLASLt) at the keys of src/bench/matmul_fp8.rs:
    op matmul_fp8, dtype e4m3, shape "m x n x k <tensor|row|block>[ fast]"."""
    out = []
    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        print("  torch has no _scaled_mm: FP8 GEMM comparisons skipped")
        return out
    cases = [(4096, 7168, 2048, "row", False), (8192, 8192, 8192, "tensor", False), (128, 7168, 2048, "row", False),
             (4096, 7168, 2048, "row", True), (8192, 8192, 8192, "tensor", True), (128, 7168, 2048, "row", True),
             (4096, 7168, 16384, "block", False),
             # decode-sized (warpcore splits k there)
             (1, 2048, 8192, "block", False), (32, 2048, 8192, "block", False), (1, 7168, 2048, "row", False)]
    for m, n, k, scaling, fast in cases:
        copies = env.copies_for(m * k + n * k + 2 * m * n)
        a = [torch.randn(m, k, device=env.device).to(torch.float8_e4m3fn) for _ in range(copies)]
        b = [torch.randn(n, k, device=env.device).to(torch.float8_e4m3fn) for _ in range(copies)]
        if scaling == "tensor":
            sa = torch.ones((), device=env.device)
            sb = torch.ones((), device=env.device)
        elif scaling == "row":
            sa = torch.ones(m, 1, device=env.device)
            sb = torch.ones(1, n, device=env.device)
        else:  # DeepSeek-style blocks: A 1x128 (m, k/128), B 128x128 (k/128, n/128) for b.t()
            sa = torch.ones(m, k // 128, device=env.device)
            sb = torch.ones(k // 128, n // 128, device=env.device).t().contiguous().t()

        def call(i):
            return torch._scaled_mm(a[i], b[i].t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16,
                                    use_fast_accum=fast)
        try:
            call(0)
            env.sync()
        except Exception as e:  # this torch / cuBLASLt does not take the scaling
            print(f"  torch._scaled_mm {m}x{n}x{k} {scaling}: unavailable ({type(e).__name__}: {str(e)[:80]})")
            continue
        name = "torch._scaled_mm" + (" (fast accum)" if fast else "")
        out.append({"op": "matmul_fp8", "dtype": "e4m3", "shape": f"{m}x{n}x{k} {scaling}" + (" fast" if fast else ""),
                    "name": name, "time_us": env.time_calls(call, copies)})
        del a, b
    return out


# (experts, n, k, rows) of src/bench/matmul_fp8.rs's grouped benches: Qwen3-30B-A3B's experts
# (gate_up [1536, 2048], down [2048, 768]) at decode (256 rows) and prefill (16384 rows).
GROUPED_SHAPES = [(128, 1536, 2048, 256), (128, 2048, 768, 256), (128, 1536, 2048, 16384), (128, 2048, 768, 16384)]


def routing(env, experts, rows):
    """Rows per expert from a seeded uniform draw of each row's expert (drawn on the host, so the
    meta device's dry run gets them too): the host counts and the device offsets (group ends,
    int32 [experts], what torch's grouped GEMMs take)."""
    g = torch.Generator().manual_seed(7)
    counts = torch.bincount(torch.randint(0, experts, (rows,), generator=g), minlength=experts)
    return counts.tolist(), torch.cumsum(counts, 0).to(torch.int32).to(env.device)


def grouped_mm_cases(env):
    """PyTorch's grouped FP8 GEMM at the keys of src/bench/matmul_fp8.rs's bench_grouped (op
    matmul_fp8_grouped, shape "grouped E x[n x k] R rows block"): the same routing (R rows over E
    experts, offsets from a seeded uniform draw), F.scaled_grouped_mm with DeepSeek's block
    scales where this torch and GPU take them, else torch._scaled_grouped_mm with row-wise
    scales (named so: less scaling work than ours)."""
    out = []
    if not hasattr(torch, "float8_e4m3fn"):
        return out
    for experts, n, k, rows in GROUPED_SHAPES:
        _, offs = routing(env, experts, rows)
        a = torch.randn(rows, k, device=env.device).to(torch.float8_e4m3fn)
        w = torch.randn(experts, n, k, device=env.device).to(torch.float8_e4m3fn)
        b = w.transpose(-2, -1)  # [E, k, n], column-major: what the grouped kernels take
        shape = f"grouped {experts}x[{n}x{k}] {rows} rows block"
        attempts = []
        if hasattr(F, "scaled_grouped_mm") and hasattr(F, "ScalingType"):
            sa = torch.ones(rows, k // 128, device=env.device)
            sb = torch.ones(experts, n // 128, k // 128, device=env.device)
            st = F.ScalingType
            attempts.append(("F.scaled_grouped_mm (block scales)", lambda: F.scaled_grouped_mm(
                a, b, sa, st.BlockWise1x128, sb, st.BlockWise128x128, offs=offs, output_dtype=torch.bfloat16)))
        if hasattr(torch, "_scaled_grouped_mm"):
            ra = torch.ones(rows, device=env.device)
            rb = torch.ones(experts, n, device=env.device)
            attempts.append(("torch._scaled_grouped_mm (row-wise scales)", lambda: torch._scaled_grouped_mm(
                a, b, ra, rb, offs=offs, out_dtype=torch.bfloat16)))
        for name, call in attempts:
            try:
                call()
                env.sync()
            except Exception as e:  # this torch / GPU does not take it
                print(f"  {name} {shape}: unavailable ({type(e).__name__}: {str(e)[:80]})")
                continue
            out.append({"op": "matmul_fp8_grouped", "dtype": "e4m3", "shape": shape, "name": name,
                        "time_us": env.time_calls(lambda i: call(), 1)})
            break
        del a, w, b
    return out


def grouped_mm_bf16_cases(env):
    """PyTorch's grouped bf16 GEMM at the keys of src/bench/matmul_fp8.rs's bench_grouped_bf16 (op
    matmul_grouped, shape "grouped E x[n x k] R rows bf16"): out[rows of e] = a[rows of e] @ w_e^T
    with w [E, n, k] (nn.Linear layout) passed as w.transpose(-2, -1) ([E, k, n], K-major: our b's
    layout), offsets the group ends. F.grouped_mm (or torch._grouped_mm, which it wraps) where this
    torch and GPU take it, else a loop of one matmul per hit expert (host offsets), named so."""
    out = []
    for experts, n, k, rows in GROUPED_SHAPES:
        counts, offs = routing(env, experts, rows)
        a = torch.randn(rows, k, device=env.device, dtype=torch.bfloat16)
        w = torch.randn(experts, n, k, device=env.device, dtype=torch.bfloat16)
        b = w.transpose(-2, -1)
        d = torch.empty(rows, n, device=env.device, dtype=torch.bfloat16)
        spans, lo = [], 0
        for e, c in enumerate(counts):
            if c:
                spans.append((e, lo, lo + c))
            lo += c

        def loop():
            for e, lo, hi in spans:
                torch.mm(a[lo:hi], w[e].t(), out=d[lo:hi])
            return d
        shape = f"grouped {experts}x[{n}x{k}] {rows} rows bf16"
        attempts = []
        if hasattr(F, "grouped_mm"):
            attempts.append(("torch F.grouped_mm", lambda: F.grouped_mm(a, b, offs=offs)))
        elif hasattr(torch, "_grouped_mm"):
            attempts.append(("torch._grouped_mm", lambda: torch._grouped_mm(a, b, offs=offs)))
        attempts.append(("torch per-expert matmul loop", loop))
        for name, call in attempts:
            try:
                r = call()
                env.sync()
                if tuple(r.shape) != (rows, n) or r.dtype != torch.bfloat16:
                    raise RuntimeError(f"returned {tuple(r.shape)} {r.dtype}, not ({rows}, {n}) bf16")
            except Exception as e:  # this torch / GPU does not take it
                print(f"  {name} {shape}: unavailable ({type(e).__name__}: {str(e)[:80]})")
                continue
            out.append({"op": "matmul_grouped", "dtype": "bf16", "shape": shape, "name": name,
                        "time_us": env.time_calls(lambda i: call(), 1)})
            break
        del a, w, b, d
    return out
