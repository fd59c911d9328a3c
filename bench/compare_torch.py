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
import os
import sys
import traceback
import types

import torch
import torch.nn.functional as F

import compare_torch_fp8
import compare_torch_sampling

# "cuda", or "meta" for a dry run (--device meta): every case's calls on PyTorch's meta device,
# shapes and arguments checked, nothing computed or timed (times are 0). It finds the API errors
# of a new torch without a GPU.
DEVICE = "cuda"
ROTATE_BYTES = 120 << 20
SAMPLES = 25
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def copies_for(bytes_per_call):
    return max(1, min(256, math.ceil(ROTATE_BYTES / max(1, bytes_per_call))))


def time_calls(fn, copies):
    """Median µs per call of fn(i), i counting calls (for rotation)."""
    if DEVICE != "cuda":  # a dry run: the call's arguments checked, nothing timed
        fn(0)
        return 0.0
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
    warm = 0.0  # at least 20 ms of calls first, as src/bench/mod.rs's time_calls
    while warm < 20_000.0:
        warm += max(run(per), 1.0)
    times = sorted(run(per) / per for _ in range(SAMPLES))
    return times[len(times) // 2]


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def bincount(x, minlength):
    """torch.bincount (what the timed alternatives call); on the meta device, which has no
    bincount (its output shape depends on the data), a same-shaped stand-in."""
    if DEVICE == "cuda":
        return torch.bincount(x, minlength=minlength)
    return torch.zeros(minlength, dtype=torch.long, device=DEVICE).index_add_(0, x, torch.ones_like(x))


def rand(shape, dtype, copies):
    return [torch.empty(shape, dtype=dtype, device=DEVICE).uniform_(-2, 2) for _ in range(copies)]


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
        w = torch.empty(hidden, dtype=dtype, device=DEVICE).uniform_(-1, 1)
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
        w = torch.empty(hidden, dtype=dtype, device=DEVICE).uniform_(-1, 1)
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
        w = torch.empty(hd, dtype=dtype, device=DEVICE).uniform_(-1, 1)

        def qk(i):
            q = qkvs[i][:, : qh * hd].view(tokens, qh, hd)
            k = qkvs[i][:, qh * hd: (qh + kvh) * hd].view(tokens, kvh, hd)
            return F.rms_norm(q, (hd,), w, eps), F.rms_norm(k, (hd,), w, eps)

        add("qk_rms_norm", "bf16", f"{tokens}x{qh}+{kvh}x{hd}", "torch F.rms_norm q, k", time_calls(qk, copies))
        del qkvs
    return out


def rope_cases(compile_too):
    """RoPE family and the KV-cache write: PyTorch eager the way HF / vLLM's native path do it
    (cos/sin cache gathered by position, rotate_half, index_copy_ into the paged cache), plus
    vLLM's and FlashInfer's CUDA kernels when installed. Keys match src/bench/rope.rs."""
    out = []

    def add(op, dtype, shape, name, t):
        out.append({"op": op, "dtype": dtype, "shape": shape, "name": name, "time_us": t})

    dt = torch.bfloat16
    fp8 = getattr(torch, "float8_e4m3fn", None)

    def cos_sin(dim, max_pos=1024, theta=500000.0):
        inv = 1.0 / (theta ** (torch.arange(0, dim, 2, device=DEVICE, dtype=torch.float32) / dim))
        f = torch.outer(torch.arange(max_pos, device=DEVICE, dtype=torch.float32), inv)
        return torch.cat((f.cos(), f.sin()), dim=-1)  # [max_pos, dim] (cos | sin), f32

    def rotate(x, cos, sin):
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    def rope_(q, k, cache, pos):
        cos, sin = cache[pos].to(q.dtype).unsqueeze(1).chunk(2, dim=-1)
        q.copy_(rotate(q, cos, sin))
        k.copy_(rotate(k, cos, sin))

    compiled_rope = torch.compile(rope_) if compile_too else None
    try:
        from vllm import _custom_ops as vllm_ops  # noqa: F401
    except Exception:
        vllm_ops = None
    try:
        import flashinfer  # noqa: F401
    except Exception:
        flashinfer = None

    for tokens, qh, kvh, hd in [(16384, 32, 8, 128), (64, 32, 8, 128), (16384, 8, 1, 64)]:
        copies = copies_for(2 * tokens * (qh + kvh) * hd * dt.itemsize)
        qs, ks = rand((tokens, qh, hd), dt, copies), rand((tokens, kvh, hd), dt, copies)
        pos = torch.arange(tokens, device=DEVICE) % 1024
        cache = cos_sin(hd)
        shape = f"{tokens}x{qh}+{kvh}x{hd}"
        add("rope", "bf16", shape, "torch eager (HF rotate_half)", time_calls(lambda i: rope_(qs[i], ks[i], cache, pos), copies))
        if compiled_rope is not None:
            add("rope", "bf16", shape, "torch.compile", time_calls(lambda i: compiled_rope(qs[i], ks[i], cache, pos), copies))
        if vllm_ops is not None:
            cache_dt = cache.to(dt)
            add("rope", "bf16", shape, "vllm rotary_embedding",
                time_calls(lambda i: vllm_ops.rotary_embedding(pos, qs[i].view(tokens, -1), ks[i].view(tokens, -1), hd, cache_dt, True), copies))
        if flashinfer is not None:
            add("rope", "bf16", shape, "flashinfer apply_rope_with_cos_sin_cache_inplace",
                time_calls(lambda i: flashinfer.apply_rope_with_cos_sin_cache_inplace(
                    pos, qs[i].view(tokens, -1), ks[i].view(tokens, -1), hd, cache, True), copies))
        del qs, ks

    def append_(k, v, k_cache, v_cache, slots, scale):
        if k_cache.dtype == k.dtype:
            k_cache.view(-1, *k.shape[1:]).index_copy_(0, slots, k)
            v_cache.view(-1, *v.shape[1:]).index_copy_(0, slots, v)
        else:
            k_cache.view(-1, *k.shape[1:]).index_copy_(0, slots, (k.float() / scale).to(k_cache.dtype))
            v_cache.view(-1, *v.shape[1:]).index_copy_(0, slots, (v.float() / scale).to(v_cache.dtype))

    page = 16
    caches = [("bf16", dt, "torch index_copy_")]
    if fp8 is not None:
        caches.append(("bf16 -> e4m3 cache", fp8, "torch (x / scale).to(fp8) + index_copy_"))
    for tokens, kvh, hd in [(16384, 8, 128), (64, 8, 128)]:
        for key, cdt, name in caches:
            if tokens == 64 and cdt != dt:
                continue
            num_pages = tokens // page + 1024 // page
            n = tokens * kvh * hd
            copies = copies_for(2 * n * (dt.itemsize + cdt.itemsize))
            ks, vs = rand((tokens, kvh, hd), dt, copies), rand((tokens, kvh, hd), dt, copies)
            kc = [torch.zeros((num_pages, page, kvh, hd), dtype=cdt, device=DEVICE) for _ in range(copies)]
            vc = [torch.zeros((num_pages, page, kvh, hd), dtype=cdt, device=DEVICE) for _ in range(copies)]
            slots = torch.arange(tokens, device=DEVICE)  # prefill sequences of 1024: pages in order
            add("append_kv", key, f"{tokens}x{kvh}x{hd}/p{page}", name,
                time_calls(lambda i: append_(ks[i], vs[i], kc[i], vc[i], slots, 2.0 / 400), copies))
            if vllm_ops is not None and cdt == dt:
                one = torch.ones((), device=DEVICE)
                add("append_kv", key, f"{tokens}x{kvh}x{hd}/p{page}", "vllm reshape_and_cache_flash",
                    time_calls(lambda i: vllm_ops.reshape_and_cache_flash(ks[i], vs[i], kc[i], vc[i], slots, "auto", one, one), copies))
            del ks, vs, kc, vc

    for tokens, qh, kvh, hd in [(16384, 32, 8, 128), (64, 32, 8, 128)]:
        for key, cdt, name in caches:
            if tokens == 64 and cdt != dt:
                continue
            num_pages = tokens // page + 1024 // page
            heads = qh + 2 * kvh
            copies = copies_for(tokens * hd * (2 * (qh + kvh) * dt.itemsize + kvh * dt.itemsize + 2 * kvh * cdt.itemsize))
            qkvs = rand((tokens, heads, hd), dt, copies)
            kc = [torch.zeros((num_pages, page, kvh, hd), dtype=cdt, device=DEVICE) for _ in range(copies)]
            vc = [torch.zeros((num_pages, page, kvh, hd), dtype=cdt, device=DEVICE) for _ in range(copies)]
            pos = torch.arange(tokens, device=DEVICE) % 1024
            slots = torch.arange(tokens, device=DEVICE)
            cache = cos_sin(hd)

            def fused(i):
                q, k, v = qkvs[i][:, :qh], qkvs[i][:, qh:qh + kvh], qkvs[i][:, qh + kvh:]
                rope_(q, k, cache, pos)
                append_(k, v, kc[i], vc[i], slots, 3.0 / 400)

            add("rope_append_kv", key, f"{tokens}x{qh}+{kvh}x{hd}/p{page}", "torch " + name.replace("torch ", "") + " after rope",
                time_calls(fused, copies))
            del qkvs, kc, vc

    tokens, qh, kvh, hd = 16384, 32, 8, 128
    copies = copies_for(2 * tokens * (qh + kvh) * hd * dt.itemsize)
    qkvs = rand((tokens, qh + 2 * kvh, hd), dt, copies)
    w = torch.empty(hd, dtype=dt, device=DEVICE).uniform_(0.5, 1.5)
    pos = torch.arange(tokens, device=DEVICE) % 1024
    cache = cos_sin(hd, theta=1e6)

    def norm_rope(i):
        q, k = qkvs[i][:, :qh], qkvs[i][:, qh:qh + kvh]
        q.copy_(F.rms_norm(q, (hd,), w, 1e-6))
        k.copy_(F.rms_norm(k, (hd,), w, 1e-6))
        rope_(q, k, cache, pos)

    add("qk_norm_rope", "bf16", f"{tokens}x{qh}+{kvh}x{hd}", "torch F.rms_norm + rope", time_calls(norm_rope, copies))
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

    def run_backend(name, ctx, q, k, v, causal, load=None):
        # load: for an FP8 cache, K and V from their e4m3 codes (timed with the attention).
        def call(_i):
            k_, v_ = load() if load else (k, v)
            return attend(k_, v_)

        def attend(k, v):
            with ctx():
                try:
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
                except RuntimeError:
                    g = q.shape[1] // k.shape[1]
                    return F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                                          is_causal=causal)
        try:
            call(0)
            sync()
        except Exception as e:  # back-end unavailable for this shape
            print(f"  {name}: unavailable ({type(e).__name__}: {str(e)[:80]})")
            return None
        return time_calls(call, 1)

    # An FP8 e4m3 cache (the " kv-e4m3" records): SDPA reads bf16 only, so its caller first
    # dequantizes the codes (x · scale, scales 1/64 and 1/32 as src/bench/attention.rs) — timed
    # together with the attention, under the name "<back-end> + e4m3 dequantize".
    def fp8_loader(k, v):
        k8, v8 = (k * 64).to(torch.float8_e4m3fn), (v * 32).to(torch.float8_e4m3fn)
        return lambda: (k8.to(torch.bfloat16) * (1 / 64), v8.to(torch.bfloat16) * (1 / 32))

    for batch, kv_len in [(64, 4096), (16, 32768), (1, 131072)]:
        q = torch.randn(batch, nq, 1, hd, dtype=torch.bfloat16, device=DEVICE)
        k = torch.randn(batch, nkv, kv_len, hd, dtype=torch.bfloat16, device=DEVICE)
        v = torch.randn(batch, nkv, kv_len, hd, dtype=torch.bfloat16, device=DEVICE)
        for name, ctx in sdpa_backends():
            t = run_backend(name, ctx, q, k, v, False)
            if t is not None:
                for page in (16, 64):
                    out.append({"op": "attention_decode", "dtype": "bf16", "shape": f"b{batch} kv{kv_len} page{page}",
                                "name": name, "time_us": t})
            if batch == 64:
                t = run_backend(name, ctx, q, k, v, False, fp8_loader(k, v))
                if t is not None:
                    out.append({"op": "attention_decode", "dtype": "bf16", "shape": f"b{batch} kv{kv_len} page16 kv-e4m3",
                                "name": f"{name} + e4m3 dequantize", "time_us": t})
        del q, k, v
    for batch, seq in [(1, 16384), (4, 4096)]:
        q = torch.randn(batch, nq, seq, hd, dtype=torch.bfloat16, device=DEVICE)
        k = torch.randn(batch, nkv, seq, hd, dtype=torch.bfloat16, device=DEVICE)
        v = torch.randn(batch, nkv, seq, hd, dtype=torch.bfloat16, device=DEVICE)
        for name, ctx in sdpa_backends():
            t = run_backend(name, ctx, q, k, v, True)
            if t is not None:
                out.append({"op": "attention_prefill", "dtype": "bf16", "shape": f"b{batch} q{seq} causal",
                            "name": name, "time_us": t})
                if batch == 4:  # K/V from the paged cache: PyTorch's contiguous best case
                    out.append({"op": "attention_prefill", "dtype": "bf16", "shape": f"b{batch} q{seq} causal page16",
                                "name": name, "time_us": t})
            if batch == 4:
                t = run_backend(name, ctx, q, k, v, True, fp8_loader(k, v))
                if t is not None:
                    out.append({"op": "attention_prefill", "dtype": "bf16", "shape": f"b{batch} q{seq} causal page16 kv-e4m3",
                                "name": f"{name} + e4m3 dequantize", "time_us": t})
        del q, k, v
    return out

def attention_mla_cases():
    """MLA decode, bf16, DeepSeek-V3's latent cache (576 = 512 + 64) with 16 or 128 heads
    (src/bench/attention.rs bench_mla_decode keys: both kernels' at 128 heads). PyTorch has no
    paged cache or MLA kernel:
    timed on a contiguous latent cache, as DeepSeek's own reference code computes it (absorbed
    form: two batched matmuls and a softmax) and as SDPA's multi-query form (the heads as query
    rows of one head, non-causal) on the back-ends that take head dim 576."""
    out = []
    hd, hdv = 576, 512
    scale = 1.87 / 192 ** 0.5
    for heads in (16, 128):
        for batch, kv_len in [(64, 4096), (128, 8192)]:
            shapes = [f"b{batch} kv{kv_len} h{heads} page64"] + ([f"b{batch} kv{kv_len} h{heads} page64 wgmma"] if heads == 128 else [])
            q = torch.randn(batch, heads, hd, dtype=torch.bfloat16, device=DEVICE)
            lat = torch.randn(batch, kv_len, hd, dtype=torch.bfloat16, device=DEVICE)

            def absorbed(_i):
                s = torch.bmm(q, lat.transpose(1, 2)).float() * scale
                return torch.bmm(torch.softmax(s, dim=-1).to(torch.bfloat16), lat[:, :, :hdv])
            t_bmm = time_calls(absorbed, 1)
            out += [{"op": "attention_mla_decode", "dtype": "bf16", "shape": sh, "name": "torch bmm (absorbed)", "time_us": t_bmm} for sh in shapes]
            q4, k4, v4 = q.unsqueeze(1), lat.unsqueeze(1), lat[:, :, :hdv].unsqueeze(1)
            for name, ctx in sdpa_backends():
                def call(_i, ctx=ctx):
                    with ctx():
                        return F.scaled_dot_product_attention(q4, k4, v4, scale=scale)
                try:
                    call(0)
                    sync()
                except Exception as e:  # back-end unavailable for head dim 576
                    print(f"  {name} (MLA): unavailable ({type(e).__name__}: {str(e)[:80]})")
                    continue
                t = time_calls(call, 1)
                out += [{"op": "attention_mla_decode", "dtype": "bf16", "shape": sh, "name": name, "time_us": t} for sh in shapes]
            del q, lat, q4, k4, v4
    return out

def moe_routing_cases():
    """Same keys as src/bench/moe_routing.rs."""
    out = []

    def add(op, dtype, shape, name, t):
        out.append({"op": op, "dtype": dtype, "shape": shape, "name": name, "time_us": t})

    def softmax_topk(x, k):
        w, i = torch.softmax(x.float(), dim=-1).topk(k, dim=-1)
        return w / w.sum(dim=-1, keepdim=True), i

    def deepseek_v3(x, bias, k, g, kg, scale, counts=False):
        # HF DeepSeek-V3 MoEGate (noaux_tc), with -inf masking of the other groups.
        t, e = x.shape
        s = x.float().sigmoid()
        sc = s + bias
        gs = sc.view(t, g, -1).topk(2, dim=-1)[0].sum(dim=-1)
        gi = gs.topk(kg, dim=-1, sorted=False)[1]
        mask = torch.zeros_like(gs).scatter_(1, gi, 1).unsqueeze(-1).expand(t, g, e // g).reshape(t, e)
        idx = sc.masked_fill(mask == 0, float("-inf")).topk(k, dim=-1, sorted=False)[1]
        w = s.gather(1, idx)
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20) * scale
        if counts:
            bincount(idx.flatten(), minlength=e)
        return w, idx

    for tokens in (16384, 128):
        for dt in ("f32", "bf16"):
            dtype = DTYPES[dt]
            copies = copies_for(tokens * 256 * dtype.itemsize)
            xs = rand((tokens, 256), dtype, copies)
            bias = torch.empty(256, device=DEVICE).uniform_(-0.5, 0.5)
            add("moe_gate", dt, f"{tokens}x256 top8 softmax", "torch softmax+topk+renorm",
                time_calls(lambda i: softmax_topk(xs[i], 8), copies))
            add("moe_gate", dt, f"{tokens}x256 top8 sigmoid g8/4", "torch DeepSeek-V3 gate (HF)",
                time_calls(lambda i: deepseek_v3(xs[i], bias, 8, 8, 4, 2.5), copies))
            if tokens == 16384 and dt == "f32":
                add("moe_gate", dt, f"{tokens}x256 top8 sigmoid g8/4 +counts", "torch DeepSeek-V3 gate (HF) + bincount",
                    time_calls(lambda i: deepseek_v3(xs[i], bias, 8, 8, 4, 2.5, counts=True), copies))
            del xs
    for experts, k in ((128, 8), (8, 2)):
        copies = copies_for(16384 * experts * 2)
        xs = rand((16384, experts), torch.bfloat16, copies)
        add("moe_gate", "bf16", f"16384x{experts} top{k} softmax", "torch softmax+topk+renorm",
            time_calls(lambda i: softmax_topk(xs[i], k), copies))
        del xs

    def routing(tokens, experts, k):
        return torch.empty(tokens, experts, device=DEVICE).uniform_(-3, 3).topk(k, dim=-1)[1].to(torch.int32)

    def align(ids, experts, bm):
        flat = ids.flatten().long()
        numel = flat.numel()
        counts = bincount(flat, minlength=experts)
        padded = (counts + bm - 1) // bm * bm
        offsets = torch.zeros(experts + 1, dtype=torch.long, device=DEVICE)
        offsets[1:] = padded.cumsum(0)
        order = torch.argsort(flat, stable=True)
        sorted_e = flat[order]
        rank = torch.arange(numel, device=DEVICE) - (counts.cumsum(0) - counts)[sorted_e]
        sorted_ids = torch.full((numel + experts * (bm - 1),), numel, dtype=torch.int32, device=DEVICE)
        sorted_ids[offsets[sorted_e] + rank] = order.to(torch.int32)
        return sorted_ids, offsets, counts

    for tokens in (16384, 128):
        ids = routing(tokens, 256, 8)
        copies = copies_for(tokens * 8 * 4)
        idss = [ids.clone() for _ in range(copies)]
        add("moe_align", "i32", f"{tokens}x8 e256 bm64", "torch bincount+argsort+scatter",
            time_calls(lambda i: align(idss[i], 256, 64), copies))
        del idss

    for tokens, hidden, k, experts in ((4096, 7168, 8, 256), (16384, 2048, 8, 128)):
        shape = f"{tokens}x{hidden} top{k} e{experts} bm128"
        ids = routing(tokens, experts, k)
        order = torch.argsort(ids.flatten().long(), stable=True)
        token_of_row = order // k
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=DEVICE)
        copies = copies_for(tokens * hidden * 2 * (k + 1))
        xs = rand((tokens, hidden), torch.bfloat16, copies)
        add("moe_gather", "bf16", shape, "torch index_select",
            time_calls(lambda i: xs[i].index_select(0, token_of_row), copies))
        del xs
        ys = rand((tokens * k, hidden), torch.bfloat16, copies_for(tokens * k * hidden * 2))
        w = torch.rand(tokens, k, device=DEVICE)
        add("moe_combine", "bf16", shape, "torch index_select+mul+sum",
            time_calls(lambda i: (ys[i % len(ys)].index_select(0, inverse).view(tokens, k, hidden).float()
                                  * w.unsqueeze(-1)).sum(dim=1).to(torch.bfloat16), len(ys)))
        del ys
    return out


def elementwise_cases(compile_too):
    """Keys of src/bench/elementwise.rs: glu (SiLU, fused gate_up [rows, 2*cols] -> [rows, cols])
    and select_rows (an embedding lookup of `rows` ids from [vocab, cols]); argmax_rows (f32
    logits [rows, vocab] -> the greedy token of each row); sample_rows is compare_torch_sampling.py's."""
    out = []

    def add(op, shape, name, t, dtype="bf16"):
        out.append({"op": op, "dtype": dtype, "shape": shape, "name": name, "time_us": t})

    def swiglu(x):
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up

    compiled = torch.compile(swiglu) if compile_too else None
    for rows, cols in [(2048, 8192), (32, 8192), (1, 8192), (4096, 14336)]:
        copies = copies_for(3 * rows * cols * 2)
        xs = rand((rows, 2 * cols), torch.bfloat16, copies)
        add("glu", f"{rows}x{cols}", "torch silu(gate) * up", time_calls(lambda i: swiglu(xs[i]), copies))
        if compiled is not None:
            add("glu", f"{rows}x{cols}", "torch.compile", time_calls(lambda i: compiled(xs[i]), copies))
        del xs
    vocab, cols = 128256, 2048
    table = torch.empty(vocab, cols, dtype=torch.bfloat16, device=DEVICE).uniform_(-1, 1)
    for rows in [2048, 32]:
        ids = torch.randint(0, vocab, (rows,), device=DEVICE, dtype=torch.int32)
        add("select_rows", f"{rows}of{vocab}x{cols}", "torch F.embedding", time_calls(lambda i: F.embedding(ids, table), 1))
    del table
    for rows in [1, 32]:
        logits = torch.empty(rows, vocab, dtype=torch.float32, device=DEVICE).uniform_(-30, 30)
        add("argmax_rows", f"{rows}x{vocab}", "torch argmax", time_calls(lambda i: logits.argmax(-1), 1), "f32")
        del logits
    return out


def ternary_cases(compile_too):
    """Keys of src/bench/matmul_ternary.rs, against transformers' BitNet b1.58 path in eager torch
    (AutoBitLinear, offline: weights unpacked to bf16 at load): ActQuant (quantize-dequantize in
    bf16) and F.linear on the unpacked weights times weight_scale; RMSNorm then ActQuant."""
    out = []

    def add(op, shape, name, t):
        out.append({"op": op, "dtype": "i8" if op == "matmul_ternary" else "bf16", "shape": shape, "name": name, "time_us": t})

    def act_quant(x):
        s = 127 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
        return (x * s).round().clamp(-128, 127) / s

    def norm_act_quant(x, w):
        return act_quant(F.rms_norm(x, (x.shape[-1],), w, 1e-5))

    compiled = torch.compile(act_quant) if compile_too else None
    for m in [1, 32, 2048]:
        for n, k in [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)]:
            copies = copies_for(2 * n * k)
            ws = rand((n, k), torch.bfloat16, copies)
            x = torch.empty(m, k, dtype=torch.bfloat16, device=DEVICE).uniform_(-2, 2)
            add("matmul_ternary", f"{m}x{n}x{k}", "torch F.linear bf16 (unpacked) * weight_scale",
                time_calls(lambda i: F.linear(x, ws[i]) * 0.5, copies))
            del ws, x
    for m, k in [(1, 2560), (2048, 2560), (2048, 6912)]:
        copies = copies_for(3 * m * k)
        xs = rand((m, k), torch.bfloat16, copies)
        w = torch.empty(k, dtype=torch.bfloat16, device=DEVICE).uniform_(0.5, 1.5)
        add("quantize_activations", f"{m}x{k}", "torch ActQuant (transformers, eager)", time_calls(lambda i: act_quant(xs[i]), copies))
        if compiled is not None:
            add("quantize_activations", f"{m}x{k}", "torch.compile", time_calls(lambda i: compiled(xs[i]), copies))
        add("rms_norm_quantize_activations", f"{m}x{k}", "torch rms_norm + ActQuant (eager)",
            time_calls(lambda i: norm_act_quant(xs[i], w), copies))
        del xs
    return out


def main():
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile versions (slow to build)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "meta"],
                    help="meta: a dry run without a GPU (arguments and shapes checked, times 0)")
    args = ap.parse_args()
    DEVICE = args.device
    # What compare_torch_fp8.py's and compare_torch_sampling.py's cases use from here: the device and the timing helpers.
    env = types.SimpleNamespace(device=DEVICE, copies_for=copies_for, time_calls=time_calls, sync=sync, rand=rand)
    torch.manual_seed(0)
    # One family's failure (an API a new torch changed) costs that family's timings only: the
    # others are still written, and the failure is listed under "failed".
    results, failed = [], []
    families = [("rms_norm", lambda: rms_norm_cases(args.compile)), ("rope", lambda: rope_cases(args.compile)),
                ("attention", attention_cases), ("attention_mla", attention_mla_cases), ("moe_routing", moe_routing_cases),
                ("quant", lambda: compare_torch_fp8.quant_cases(env, args.compile)),
                ("scaled_mm", lambda: compare_torch_fp8.scaled_mm_cases(env)),
                ("grouped_mm", lambda: compare_torch_fp8.grouped_mm_cases(env)),
                ("grouped_mm_bf16", lambda: compare_torch_fp8.grouped_mm_bf16_cases(env)),
                ("elementwise", lambda: elementwise_cases(args.compile)),
                ("sample_rows", lambda: compare_torch_sampling.sample_rows_cases(env)),
                ("ternary", lambda: ternary_cases(args.compile))]
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE

    def write():
        # Finite times only (the Rust side's JSON parser refuses NaN and infinities), after
        # every family: a run stopped at its time cap keeps the families it finished.
        doc = {"device": device, "torch": torch.__version__,
               "results": [r for r in results if math.isfinite(r.get("time_us", 0.0))], "failed": failed}
        with open(args.out + ".part", "w") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
        os.replace(args.out + ".part", args.out)

    for name, cases in families:
        try:
            results += cases()
        except Exception as e:
            traceback.print_exc()
            failed.append({"family": name, "error": f"{type(e).__name__}: {e}"[:300]})
        write()
    for r in results:
        print(f"{r['op']:>28} {r['dtype']:>5} {r['shape']:>26} {r['name']:>30} {r['time_us']:9.2f} us")
    for fl in failed:
        print(f"FAILED {fl['family']}: {fl['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
