#!/usr/bin/env python3
"""Builds the model parity fixtures under tests/fixtures/: tiny random-weight Hugging Face
models with each architecture's real structural features, saved as config.json + safetensors,
with transformers' own outputs to compare against:

    tests/fixtures/<name>/config.json, model.safetensors   the model (f32 weights)
    tests/fixtures/<name>/expected.safetensors              logits [seq, vocab] f32 (teacher-forced,
                                                            every position of input_ids)
    tests/fixtures/<name>/expected.json                     input_ids, greedy continuation ids,
                                                            versions

Regenerate with one command (pinned versions, CPU only):
    scripts/make_fixtures            # runs this file in its own virtual environment

Architectures: Llama (GQA ratio 4, Llama-3 RoPE scaling, tied embeddings), Qwen3 (q/k norm),
Mixtral (8 experts, top-2), Qwen3-MoE (8 experts, top-2, renormalised, q/k norm), BitNet (b1.58
2B4T's structure: relu2 GLU, attn/ffn sub-norms, tied embeddings, and its offline autobitlinear
format: packed ternary uint8 weights + weight_scale, which transformers' own quantizer loads).
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
SEQ = 12          # prompt length (teacher-forced logits at every position)
NEW_TOKENS = 8    # greedy continuation length

COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=8,
    num_key_value_heads=2,     # GQA ratio 4
    head_dim=16,
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
    bitnet = dict(COMMON)
    bitnet.update(head_dim=8, rms_norm_eps=1e-5)   # attn_sub_norm is [hidden]: heads · head_dim = hidden
    yield "bitnet", t.BitNetConfig(
        **bitnet, hidden_act="relu2", rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
    ), t.BitNetForCausalLM


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
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    if name == "bitnet":
        model = save_ternary_and_reload(model, d)
    ids = torch.randint(0, config.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(ids).logits[0].float().contiguous()
        greedy = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, min_new_tokens=NEW_TOKENS,
                                pad_token_id=0, eos_token_id=None)[0, SEQ:].tolist()
    if name != "bitnet":
        model.save_pretrained(d, safe_serialization=True)
    save_file({"logits": logits}, os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"input_ids": ids[0].tolist(), "greedy": greedy, "torch": torch.__version__,
                   "transformers": transformers.__version__}, f, indent=1)
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, greedy {greedy}")


def main():
    only = set(sys.argv[1:])
    for name, config, cls in models():
        if not only or name in only:
            build(name, config, cls)


if __name__ == "__main__":
    main()
