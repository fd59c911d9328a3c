#!/usr/bin/env python3
"""Builds tests/fixtures/tokenizer/: a small byte-level BPE tokenizer.json (the format Llama 3,
Qwen and DeepSeek ship) trained on a fixed text, and the ids the Python `tokenizers` library
gives for a few strings (ASCII, accents, CJK, emoji, whitespace runs), so the Rust side is
checked against the reference implementation. Run by scripts/make_fixtures (or directly in
its virtual environment)."""
import json
import os

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizer")
CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "Attention is all you need; rotary embeddings rotate pairs of dimensions.",
    "Grouped-query attention shares each key/value head among several query heads.",
    "Café, naïve, façade — déjà vu. 東京は日本の首都です。 Emoji: 🚀🔥 ok?",
    "def f(x):\n    return x * 2  # tabs\tand  spaces\n",
]
SAMPLES = [
    "Hello, world!",
    "The lazy dog jumps over the quick brown fox.",
    "Café déjà vu: 東京 🚀",
    "  leading spaces,\ttabs\nand newlines  ",
    "",
]


def main():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    from tokenizers.processors import TemplateProcessing
    tok.post_processor = TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
    os.makedirs(OUT, exist_ok=True)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    cases = []
    for s in SAMPLES:
        plain = tok.encode(s, add_special_tokens=False).ids
        cases.append({"text": s, "ids": plain, "ids_with_special": tok.encode(s).ids,
                      "decoded": tok.decode(plain)})
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"tokenizers": tokenizers.__version__, "bos_id": bos, "cases": cases}, f, indent=1, ensure_ascii=False)
    print(f"tokenizer: vocab {tok.get_vocab_size()}, {len(cases)} cases")


if __name__ == "__main__":
    main()
