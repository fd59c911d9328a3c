#!/usr/bin/env python3
"""Builds the model parity fixtures under tests/fixtures/: tiny random-weight Hugging Face
models with each architecture's real structural features, saved as config.json + safetensors,
with transformers' own outputs to compare against:

    tests/fixtures/<name>/config.json, model.safetensors   the model (f32 weights; DeepSeek-V3: FP8
                                                            block-quantized linear weights, below)
    tests/fixtures/<name>/expected.safetensors              logits [seq, vocab] f32 (teacher-forced,
                                                            every position of input_ids)
    tests/fixtures/<name>/expected.json                     input_ids, greedy continuation ids,
                                                            versions

Regenerate with one command (pinned versions, CPU only):
    scripts/make_fixtures            # runs this file in its own virtual environment

Architectures: Llama (GQA ratio 4, Llama-3 RoPE scaling, tied embeddings; llama_bias: attention_bias,
q/k/v/o biases), Qwen3 (q/k norm),
Mixtral (8 experts, top-2), Qwen3-MoE (8 experts, top-2, renormalised, q/k norm), DeepSeek-V3
(MLA with q compression, YaRN with mscale != mscale_all_dim, interleaved RoPE, sigmoid + bias
routing over 2 groups keeping 1, a shared expert, a first dense layer, FP8 block weights), BitNet (b1.58
2B4T's structure: relu2 GLU, attn/ffn sub-norms, tied embeddings, and its offline autobitlinear
format: packed ternary uint8 weights + weight_scale, which transformers' own quantizer loads).

FP8 (DeepSeek-V3): real checkpoints store the linear weights as float8_e4m3fn with a
`<name>_scale_inv` tensor [ceil(out/128), ceil(in/128)] (f32; weight = fp8 · scale_inv per
128×128 block) and `quantization_config` in config.json. transformers cannot run its FP8
quantizer on a CPU, so this script quantizes the saved checkpoint itself: every attention / MLP /
expert projection (not the embeddings, norms, router or lm_head, which DeepSeek keeps in high
precision) becomes e4m3 with one scale per 128×128 block (scale = amax / 448). The expected
logits come from transformers' own forward on exactly what the checkpoint encodes: the model is
reloaded with `from_pretrained` from a copy whose weights are dequantize(quantize(w)) in f32
(without the quantization_config). q_b / kv_b / kv_a_proj_with_mqa (480, 168 and 576 rows) end in
a partial block; hidden (128), the MLPs (256, experts 128) and q_lora_rank (128) are whole blocks,
which the GPU path keeps in FP8 (its FP8 GEMM takes whole 128-blocks). Qwen3-MoE FP8
(qwen3_moe_fp8, Qwen3-30B-A3B-FP8's format): the same FP8 conversion, every projection in whole
blocks, a dense first layer (mlp_only_layers). DeepSeek-V3 q_proj (f32): the
other switches — no q compression (q_proj), NeoX RoPE (rope_interleave false) without scaling,
no grouping, two shared experts, weights not renormalised.
"""
import json
import os
import sys
import tempfile
import time

import torch
import transformers
from safetensors.torch import load_file, save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
SEQ = 12          # prompt length (teacher-forced logits at every position)
NEW_TOKENS = 8    # greedy continuation length
FP8_BLOCK = 128   # weight_block_size of the FP8 checkpoints (DeepSeek-V3's)
FP8_MAX = 448.0   # largest finite float8_e4m3fn
FP8_MODELS = {"deepseek_v3", "qwen3_moe_fp8"}

COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=1,     # GQA ratio 4
    head_dim=64,               # the smallest head_dim the GPU attention kernels take
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    torch_dtype="float32",
)


def models():
    t = transformers
    yield "llama", t.LlamaConfig(
        **COMMON,
        rope_theta=10000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64},
        tie_word_embeddings=True,
    ), t.LlamaForCausalLM
    # attention_bias: transformers gives q, k, v and o_proj each bias=attention_bias (the CPU path
    # had dropped o_proj's until 2026-12-03); rotary without scaling, untied embeddings.
    yield "llama_bias", t.LlamaConfig(
        **COMMON, rope_theta=10000.0, attention_bias=True, tie_word_embeddings=False,
    ), t.LlamaForCausalLM
    yield "qwen3", t.Qwen3Config(**COMMON, rope_theta=1000000.0, tie_word_embeddings=False), t.Qwen3ForCausalLM
    yield "mixtral", t.MixtralConfig(
        **COMMON, num_local_experts=8, num_experts_per_tok=2, rope_theta=1000000.0, tie_word_embeddings=False,
    ), t.MixtralForCausalLM
    moe = dict(COMMON)
    moe.update(moe_intermediate_size=32)
    yield "qwen3_moe", t.Qwen3MoeConfig(
        **moe, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        rope_theta=1000000.0, tie_word_embeddings=False,
    ), t.Qwen3MoeForCausalLM
    ds = dict(COMMON)
    # hidden, the MLPs' widths and q_lora_rank whole 128-blocks: the FP8 GEMM's shapes (the GPU path keeps
    # those projections FP8).
    ds.update(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=6)
    del ds["head_dim"]  # MLA: q/k heads are qk_nope + qk_rope, v heads v_head_dim
    # kv_lora_rank 512 and qk_rope_head_dim 64: DeepSeek-V3's own, what the GPU path's MLA decode
    # kernel (attention at head dims 576 / 512) is built for.
    yield "deepseek_v3", t.DeepseekV3Config(
        **ds, moe_intermediate_size=128, q_lora_rank=128, kv_lora_rank=512, qk_nope_head_dim=16, qk_rope_head_dim=64,
        v_head_dim=12, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1,
        routed_scaling_factor=2.5, first_k_dense_replace=1, norm_topk_prob=True, rope_interleave=True,
        num_mtp_layers=0, tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
                         "mscale": 1.0, "mscale_all_dim": 0.5, "beta_fast": 32.0, "beta_slow": 1.0},
    ), t.DeepseekV3ForCausalLM
    ds.update(hidden_size=64, intermediate_size=160, num_hidden_layers=2)
    yield "deepseek_v3_q_proj", t.DeepseekV3Config(
        **ds, moe_intermediate_size=32, q_lora_rank=None, kv_lora_rank=512, qk_nope_head_dim=16, qk_rope_head_dim=64,
        v_head_dim=12, n_routed_experts=8, num_experts_per_tok=2, n_group=1, topk_group=1, n_shared_experts=2,
        routed_scaling_factor=1.5, first_k_dense_replace=1, norm_topk_prob=False, rope_interleave=False,
        num_mtp_layers=0, tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ), t.DeepseekV3ForCausalLM
    # Qwen3-MoE in FP8 (Qwen3-30B-A3B-FP8's format: block FP8 projections, a dense first layer via
    # mlp_only_layers): every projection in whole 128-blocks, so the GPU path runs all of them on
    # the FP8 GEMM.
    fp8 = dict(COMMON)
    fp8.update(hidden_size=128, intermediate_size=256, num_key_value_heads=2, moe_intermediate_size=128)
    yield "qwen3_moe_fp8", t.Qwen3MoeConfig(
        **fp8, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[0],
        rope_theta=1000000.0, tie_word_embeddings=False,
    ), t.Qwen3MoeForCausalLM
    bitnet = dict(COMMON)
    # attn_sub_norm is [hidden]: heads · head_dim = hidden; head_dim 64 (GQA ratio 4) so that the
    # GPU path's attention kernels take it.
    bitnet.update(hidden_size=256, num_attention_heads=4, num_key_value_heads=1, head_dim=64, rms_norm_eps=1e-5)
    yield "bitnet", t.BitNetConfig(
        **bitnet, hidden_act="relu2", rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
    ), t.BitNetForCausalLM


def is_fp8_weight(key, shape):
    """The tensors DeepSeek-V3 stores in FP8: 2-D projection weights (attention, MLPs, experts)."""
    return len(shape) == 2 and (key.endswith("_proj.weight") or key.endswith("_proj_with_mqa.weight"))


def quantize_block_fp8(w):
    """w [rows, cols] f32 -> (e4m3 codes [rows, cols], scale_inv [ceil(rows/128), ceil(cols/128)] f32),
    weight = codes · scale_inv blockwise; scale = block amax / 448, codes round to nearest even."""
    rows, cols = w.shape
    sr, sc = -(-rows // FP8_BLOCK), -(-cols // FP8_BLOCK)
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    scale = torch.empty(sr, sc, dtype=torch.float32)
    for i in range(sr):
        for j in range(sc):
            blk = w[i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK]
            s = blk.abs().max().clamp(min=1e-12) / FP8_MAX
            scale[i, j] = s
            q[i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK] = \
                (blk / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def dequantize_block_fp8(q, scale):
    rows, cols = q.shape
    full = scale.repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)[:rows, :cols]
    return q.float() * full


def to_fp8_checkpoint(d, cls):
    """Rewrites d/model.safetensors with FP8 block weights and returns transformers' model loaded
    from the dequantized weights (what the FP8 checkpoint encodes)."""
    path = os.path.join(d, "model.safetensors")
    state = load_file(path)
    fp8, dequantized = {}, {}
    for key, w in state.items():
        if is_fp8_weight(key, w.shape):
            q, scale = quantize_block_fp8(w)
            fp8[key], fp8[key + "_scale_inv"] = q, scale
            dequantized[key] = dequantize_block_fp8(q, scale)
        else:
            fp8[key] = dequantized[key] = w
    with tempfile.TemporaryDirectory() as tmp:
        save_file(dequantized, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(d, "config.json")) as f:
            config = json.load(f)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f)
        model = cls.from_pretrained(tmp, dtype=torch.float32).eval()
    save_file(fp8, path, metadata={"format": "pt"})
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                     "weight_block_size": [FP8_BLOCK, FP8_BLOCK]}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return model


BITNET_QUANT = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}


def save_ternary_and_reload(model, d):
    """BitNet: ternarizes every projection of the random model the way BitNet b1.58 does (absmean:
    gamma = mean|w|, values = clamp(round(w * (1 / gamma)), -1, 1)), saves them in the checkpoint format of
    microsoft/bitnet-b1.58-2B-4T (transformers' pack_weights: uint8 [out/4, in]; weight_scale = gamma
    [1]; quantization_config offline autobitlinear), and loads that folder back with from_pretrained,
    so transformers' quantizer builds its AutoBitLinear layers and unpacks the weights itself.

    transformers' BitNet quantizer refuses to start without `accelerate` installed, which this path
    never uses (the check is validate_environment's only use of it; on CPU it then just warns), so
    the check is patched to pass rather than adding a package to the pinned environment."""
    from transformers.integrations.bitnet import AutoBitLinear, pack_weights
    import transformers.quantizers.quantizer_bitnet as quantizer_bitnet

    state, values = {}, {}
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("_proj.weight"):
                gamma = p.abs().mean().clamp(min=1e-5)
                t = (p * (1.0 / gamma)).round().clamp(-1, 1)
                values[pname] = t.clone()
                state[pname] = pack_weights(t.to(torch.int8))
                state[pname.replace(".weight", ".weight_scale")] = gamma.reshape(1).clone()
            elif pname != "lm_head.weight":
                state[pname] = p.detach().clone().contiguous()
    model.config.quantization_config = dict(BITNET_QUANT)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(d)
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    quantizer_bitnet.is_accelerate_available = lambda: True
    loaded = type(model).from_pretrained(d).eval()
    for pname, t in values.items():
        module = loaded.get_submodule(pname.removesuffix(".weight"))
        assert isinstance(module, AutoBitLinear) and not module.online_quant, pname
        assert torch.equal(module.weight, t.to(module.weight.dtype)), f"{pname}: transformers unpacked other values"
    assert type(loaded.lm_head) is torch.nn.Linear
    return loaded


def build(name, config, cls):
    torch.manual_seed(sum(map(ord, name)))
    model = cls(config).eval()
    # Random weights large enough that every layer matters (HF's init std 0.02 makes logits
    # nearly input-independent); norms around 1.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "router" in pname or "gate.weight" in pname and "proj" not in pname:
                # Sigmoid routers (DeepSeek-V3): logits of about unit size, where the sigmoid
                # still separates the experts (0.5 · randn saturates it: every top score ~1 and
                # each token's k-th and (k+1)-th expert a near tie).
                sigmoid = getattr(config, "scoring_func", "softmax") == "sigmoid" or "deepseek" in name
                p.copy_((0.12 if sigmoid else 0.5) * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
        for bname, b in model.named_buffers():
            if "e_score_correction_bias" in bname:  # DeepSeek-V3: steers the selection only
                b.copy_(0.3 * torch.randn_like(b))
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    if name == "bitnet":
        model = save_ternary_and_reload(model, d)
    else:
        model.save_pretrained(d, safe_serialization=True)
        if name in FP8_MODELS:
            model = to_fp8_checkpoint(d, cls)
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    greedy = write_expected(model, d, config.vocab_size, SEQ, NEW_TOKENS)["greedy"]
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, greedy {greedy}")


def write_expected(model, d, vocab_size, seq, new_tokens, bf16_error=False):
    """expected.safetensors (teacher-forced logits [seq, vocab] f32) and expected.json (input_ids:
    seq random ids, seed 7; greedy: the model's greedy continuation) in d. bf16_error: also the
    same model's logits in bf16 against these (relative Frobenius: the sequence as a whole, and
    the largest of any position), bf16 inference's own error on this checkpoint (then the model
    is left in bf16). Returns what expected.json holds."""
    ids = torch.randint(0, vocab_size, (1, seq), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(ids).logits[0].float().contiguous()
        greedy = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens,
                                pad_token_id=0, eos_token_id=None)[0, seq:].tolist()
    meta = {"input_ids": ids[0].tolist(), "greedy": greedy, "torch": torch.__version__,
            "transformers": transformers.__version__}
    if bf16_error:
        with torch.no_grad():
            got = model.to(torch.bfloat16)(ids).logits[0].double()
        want = logits.double()
        per = (got - want).norm(dim=1) / want.norm(dim=1)
        meta["bf16_error"] = {"whole": ((got - want).norm() / want.norm()).item(), "position_max": per.max().item()}
    save_file({"logits": logits}, os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def expect(d, seq, new_tokens):
    """`--expect DIR`: transformers' outputs for a model folder made elsewhere (any size: the model
    bench's Llama-3.2-1B-shaped checkpoint, a downloaded one), run in f32 on the checkpoint's own
    values, written beside it for the WARPCORE_PARITY_DIR tests (tests/model.rs: the CPU path
    against these; tests/model_gpu.rs: the GPU path against the CPU path, within bf16 inference's
    error measured here). bf16 / f16 / f32 checkpoints (transformers' FP8 path needs a GPU)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    params = sum(p.numel() for p in model.parameters())
    t0 = time.time()
    meta = write_expected(model, d, model.config.vocab_size, seq, new_tokens, bf16_error=True)
    err = meta["bf16_error"]
    print(f"{d}: {params} parameters, {seq} + {new_tokens} tokens in {time.time() - t0:.1f} s, greedy {meta['greedy']}; "
          f"bf16 against f32: {err['whole']:.3e} (position max {err['position_max']:.3e})")


def main():
    args = sys.argv[1:]
    if args[:1] == ["--expect"]:
        if len(args) not in (2, 4):
            sys.exit("usage: make_fixtures.py --expect DIR [SEQ NEW_TOKENS]")
        expect(args[1], *(map(int, args[2:]) if len(args) == 4 else (SEQ, NEW_TOKENS)))
        return
    only = set(args)
    for name, config, cls in models():
        if not only or name in only:
            build(name, config, cls)


if __name__ == "__main__":
    main()
