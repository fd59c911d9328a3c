#!/usr/bin/env python3
"""The model benchmark's PyTorch side: a Llama-3.2-1B-shaped model with random bf16 weights,
timed with Hugging Face transformers at the cases `warpcore bench --model DIR` times
(src/bench/model.rs), and written as JSON that `warpcore bench --model DIR --compare FILE`
merges in:

    {"device": ..., "torch": ..., "transformers": ...,
     "results": [{"case", "name", "tokens", "seconds", "tokens_per_s"}]}

Cases (the same keys and method as src/bench/model.rs):
    prefill 1x2048   one prompt of 2048 tokens, last position's logits (logits_to_keep=1);
                     median of 5 after a warm-up
    decode b1, b32   B prompts of 128 tokens prefilled, 3 warm-up steps, then 128 timed
                     greedy steps (KV cache, argmax on the GPU): B * 128 / time
each with attn_implementation "eager" and "sdpa".

FP8: `fp8 SRC DST` writes SRC's model as an FP8 block checkpoint (DeepSeek-V3 / Qwen3-FP8's
format: every projection weight e4m3 with one f32 `weight_scale_inv` per 128 × 128 block, scale =
block amax / 448; embeddings and norms as they are; quantization_config fp8 with
weight_block_size [128, 128] and dynamic activations), which `time` then runs through
transformers' own FP8 path (FineGrainedFP8: e4m3 weights, activations quantized per token per
128 columns) and `warpcore bench --model` on matmul_fp8.

Usage (the GPU machine has no internet: the model is built here, not downloaded):
    python3 bench/model_torch.py build DIR            # random init on the GPU, saved as bf16
    python3 bench/model_torch.py time DIR --out model_torch.json
    python3 bench/model_torch.py fp8 DIR DIR_FP8      # the same model as an FP8 checkpoint
A dry run without a GPU (the same code on a 2-layer, 128-wide model of the same shape family):
    python3 bench/model_torch.py build DIR --tiny --device cpu
    python3 bench/model_torch.py time DIR --out F --device cpu
    python3 bench/model_torch.py fp8 DIR DIR_FP8 --device cpu   (transformers' FP8 needs a GPU:
                                                                 `time` then records the failure)
"""
import argparse
import json
import time

import torch

PREFILL_LEN = 2048
PROMPT_LEN = 128
DECODE_STEPS = 128
WARMUP_STEPS = 3
PREFILL_RUNS = 5
DEVICE = "cuda"  # "cpu" for a dry run (--device cpu)


def llama_3_2_1b_config():
    import transformers
    return transformers.LlamaConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        tie_word_embeddings=True,
        hidden_act="silu",
        bos_token_id=128000,
        eos_token_id=128001,
    )


def build(out_dir, tiny=False):
    import transformers
    config = llama_3_2_1b_config()
    if tiny:  # the dry run's model: Llama-3.2-1B's layout at 2 layers, 128 wide (whole FP8 blocks), 256 tokens
        for k, v in dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=1, eos_token_id=2).items():
            setattr(config, k, v)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(DEVICE):
        model = transformers.LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(out_dir, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"built {out_dir}: {n} parameters ({2 * n / 1e9:.3f} GB bf16)")


FP8_BLOCK = 128
FP8_MAX = 448.0


def quantize_block_fp8(w):
    """w [rows, cols] -> (e4m3 codes [rows, cols], scale_inv [ceil(rows/128), ceil(cols/128)] f32):
    weight = codes * scale_inv per 128 x 128 block, scale = block amax / 448, round to nearest even."""
    rows, cols = w.shape
    rp, cp = -(-rows // FP8_BLOCK) * FP8_BLOCK, -(-cols // FP8_BLOCK) * FP8_BLOCK
    padded = torch.zeros(rp, cp, dtype=torch.float32, device=w.device)
    padded[:rows, :cols] = w.float()
    blocks = padded.view(rp // FP8_BLOCK, FP8_BLOCK, cp // FP8_BLOCK, FP8_BLOCK)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / FP8_MAX
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.view(rp, cp)[:rows, :cols].contiguous(), scale.contiguous()


def to_fp8(src, dst):
    """src (a model folder with one model.safetensors) -> dst: the FP8 block checkpoint."""
    import os
    import shutil
    from safetensors.torch import load_file, save_file
    os.makedirs(dst, exist_ok=True)
    state = load_file(os.path.join(src, "model.safetensors"), device=DEVICE)
    out, n_fp8 = {}, 0
    for key, w in state.items():
        if w.dim() == 2 and key.endswith("_proj.weight"):
            out[key], out[key + "_scale_inv"] = quantize_block_fp8(w)
            n_fp8 += w.numel()
        else:
            out[key] = w
    save_file({k: v.cpu() for k, v in out.items()}, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                     "weight_block_size": [FP8_BLOCK, FP8_BLOCK]}
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(src, extra)):
            shutil.copy(os.path.join(src, extra), dst)
    print(f"wrote {dst}: {n_fp8} parameters in e4m3 with 128x128 block scales")


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def sync_time(fn):
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def time_prefill(model, vocab):
    g = torch.Generator(device=DEVICE).manual_seed(1)
    ids = torch.randint(0, vocab, (1, PREFILL_LEN), device=DEVICE, generator=g)

    def run():
        model(ids, use_cache=True, logits_to_keep=1)

    run()
    times = sorted(sync_time(run) for _ in range(PREFILL_RUNS))
    s = times[len(times) // 2]
    return {"case": f"prefill 1x{PREFILL_LEN}", "tokens": PREFILL_LEN, "seconds": s, "tokens_per_s": PREFILL_LEN / s}


def time_decode(model, vocab, batch):
    g = torch.Generator(device=DEVICE).manual_seed(2)
    ids = torch.randint(0, vocab, (batch, PROMPT_LEN), device=DEVICE, generator=g)
    out = model(ids, use_cache=True, logits_to_keep=1)
    state = {"pkv": out.past_key_values, "next": out.logits[:, -1].argmax(-1, keepdim=True)}

    def steps(n):
        for _ in range(n):
            o = model(state["next"], past_key_values=state["pkv"], use_cache=True)
            state["pkv"] = o.past_key_values
            state["next"] = o.logits[:, -1].argmax(-1, keepdim=True)

    steps(WARMUP_STEPS)
    s = sync_time(lambda: steps(DECODE_STEPS))
    tokens = batch * DECODE_STEPS
    return {"case": f"decode b{batch}", "tokens": tokens, "seconds": s, "tokens_per_s": tokens / s}


def time_model(model_dir, out_path):
    import transformers
    results = []
    for impl in ["eager", "sdpa"]:
        try:  # an FP8 checkpoint needs transformers' FP8 path (a GPU, its kernels)
            model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                                      attn_implementation=impl).to(DEVICE).eval()
        except Exception as e:
            print(f"  transformers {impl}: load failed: {type(e).__name__}: {str(e)[:160]}")
            continue
        vocab = model.config.vocab_size
        name = f"transformers {impl}"
        with torch.no_grad():
            for case in [lambda: time_prefill(model, vocab), lambda: time_decode(model, vocab, 1),
                         lambda: time_decode(model, vocab, 32)]:
                try:
                    r = case()
                except Exception as e:  # an implementation this transformers lacks, or OOM
                    print(f"  {name}: failed: {type(e).__name__}: {str(e)[:120]}")
                    continue
                r["name"] = name
                results.append(r)
                print(f"{r['case']:>16} {name:>20} {r['tokens_per_s']:10.1f} tok/s")
        del model
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    doc = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
           "results": results}
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="random-init the Llama-3.2-1B-shaped model and save it (bf16)")
    b.add_argument("dir")
    b.add_argument("--tiny", action="store_true", help="2 layers, 128 wide (a dry run)")
    t = sub.add_parser("time", help="time transformers on a saved model folder")
    t.add_argument("dir")
    t.add_argument("--out", required=True)
    q = sub.add_parser("fp8", help="write a saved model folder as an FP8 block checkpoint")
    q.add_argument("src")
    q.add_argument("dst")
    for p in (b, t, q):
        p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if args.cmd == "build":
        build(args.dir, args.tiny)
    elif args.cmd == "fp8":
        to_fp8(args.src, args.dst)
    else:
        time_model(args.dir, args.out)


if __name__ == "__main__":
    main()
