"""The sampling part of compare_torch.py (its helpers come in as `env`: device, copies_for,
time_calls, sync, rand): PyTorch's sampled-decoding token choice at the keys of
src/bench/elementwise.rs bench_sample_rows (op "sample_rows", dtype "f32",
"{rows}x{vocab} top_k {top_k} top_p {top_p}")."""
import torch

TEMPERATURE = 0.8  # bench_sample_rows's


def multinomial(env, probs):
    """torch.multinomial(probs, 1) (what the timed pipeline calls); on the meta device, should a
    torch have no meta kernel for it, a same-shaped stand-in (the dry run checks the rest)."""
    if env.device == "cuda":
        return torch.multinomial(probs, 1)
    try:
        return torch.multinomial(probs, 1)
    except (NotImplementedError, RuntimeError) as e:
        print(f"  torch.multinomial on {env.device}: {type(e).__name__}; argmax stand-in for the dry run")
        return probs.argmax(dim=-1, keepdim=True)


def sample(env, logits, t, top_k, top_p):
    """transformers' sampling path on the GPU (TemperatureLogitsWarper, TopKLogitsWarper,
    TopPLogitsWarper, then softmax + multinomial): one token id per row, [rows] int64 on the
    device. Top-p keeps the shortest descending prefix whose probability reaches top_p (a
    token is dropped when the probability ranked before it already reaches top_p; the best
    token is always kept): the rule of reference::elementwise::sample_row."""
    scores = logits / t
    if top_k > 0:
        kth = torch.topk(scores, min(top_k, scores.shape[-1]), dim=-1)[0][..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs
        drop = before >= top_p
        drop[..., 0] = False
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return multinomial(env, torch.softmax(scores, dim=-1)).squeeze(-1)


def p_key(p):
    """top_p as Rust's Display writes an f32 (0.9 -> "0.9", 1.0 -> "1")."""
    return str(int(p)) if float(p).is_integer() else repr(float(p))


def sample_rows_cases(env):
    """Keys of bench_sample_rows: rows 1 and 32 of 128256 LM-like f32 logits (every 97th flat
    id in [8, 14), the rest in [-4, 4), as the Rust bench fills them), temperature 0.8, with
    (top_k, top_p) (0, 0.9) and (50, 1.0). One buffer, as the Rust bench times it."""
    out = []
    vocab = 128256
    for rows in (1, 32):
        logits = torch.empty(rows, vocab, dtype=torch.float32, device=env.device).uniform_(-4, 4)
        logits.view(-1)[::97].uniform_(8, 14)
        for top_k, top_p in ((0, 0.9), (50, 1.0)):
            out.append({"op": "sample_rows", "dtype": "f32", "shape": f"{rows}x{vocab} top_k {top_k} top_p {p_key(top_p)}",
                        "name": "torch softmax + top-k/top-p + multinomial",
                        "time_us": env.time_calls(lambda i: sample(env, logits, TEMPERATURE, top_k, top_p), 1)})
        del logits
    return out
