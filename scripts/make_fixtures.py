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
Mixtral (8 experts, top-2), Qwen3-MoE (8 experts, top-2, renormalised, q/k norm).
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
    ids = torch.randint(0, config.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(ids).logits[0].float().contiguous()
        greedy = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, min_new_tokens=NEW_TOKENS,
                                pad_token_id=0, eos_token_id=None)[0, SEQ:].tolist()
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
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
