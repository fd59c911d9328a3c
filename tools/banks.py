#!/usr/bin/env python3
"""Shared-memory bank model for the access patterns docs/rope.md and docs/attention.md discuss.

One warp-instruction's addresses -> wavefronts: the most distinct 4-byte words any of the 32
banks holds (an access of B bytes covers B / 4 words). `--quarter` also counts 16-byte accesses
per quarter-warp (8 lanes a phase), the stricter of the two usual models.

  tools/banks.py rope        the cos/sin table reads of rope.cu's items_kernel (cs_slot padding)
  tools/banks.py fp8-raw     attention.cuh's raw FP8 tiles (load_rows writes, convert_fp8 reads)
"""
import sys


def wavefronts(addrs, size):
    words = {}
    for a in set(addrs):
        for k in range(size // 4):
            w = a // 4 + k
            words.setdefault(w % 32, set()).add(w)
    return max((len(v) for v in words.values()), default=0)


def quarter_wavefronts(addrs, size):
    return sum(wavefronts(addrs[q * 8:(q + 1) * 8], size) for q in range(4))


# ---------------------------------------------------------------- rope: cs[cs_slot(at + k)], LDS.64
def rope(half, heads, n, group):
    """Mean wavefronts per LDS.64 of a vector item (n pairs) with one float2 of padding per
    `group` pairs (group None: unpadded)."""
    per_head = half // n
    items = heads * per_head
    tot = cnt = 0
    for w0 in range(0, items, 32):
        for k in range(n):
            addrs = []
            for i in range(w0, min(w0 + 32, items)):
                p = (i % per_head) * n + k
                addrs.append(8 * (p + (p // group if group else 0)))
            tot += wavefronts(addrs, 8)
            cnt += 1
    return tot / cnt


# ---------------------------------------------------------------- FP8 raw tiles, LDGSTS.128 / LDS.128
def lanes_per_row(chunks, threads, rows):  # attention.cuh
    lanes = threads // rows if threads // rows > 2 else 2
    while lanes > 1 and chunks % lanes:
        lanes //= 2
    return lanes


def raw_chunk(d, r, c, swizzle=True):  # attention.cuh raw_chunk<D>
    ch = d // 16
    if not swizzle:
        return c
    if ch % 8 == 0:
        b = r & 7
        return c ^ (((b & 1) << 2) | (b & 2) | (b >> 2))
    if ch == 4:
        return c ^ (r & 2)
    return c


def fp8_raw(d, threads, bn, swizzle, quarter):
    ch = d // 16
    count = quarter_wavefronts if quarter else wavefronts
    pos = lambda r, c: r * d + 16 * raw_chunk(d, r, c, swizzle)
    kl = lanes_per_row(ch, threads, bn)
    loads = []
    for w0 in range(0, min(threads, bn * kl), 32):
        for e in range(ch // kl):
            loads.append(count([pos(i // kl, i % kl + e * kl) for i in range(w0, w0 + 32) if i < bn * kl], 16))
    reads = []
    for base in range(0, bn * ch, threads):
        for w0 in range(base, min(base + threads, bn * ch), 32):
            reads.append(count([pos(i // ch, i % ch) for i in range(w0, min(w0 + 32, bn * ch))], 16))
    return sum(loads) / len(loads), sum(reads) / len(reads)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("rope", "all"):
        print("rope cos/sin reads, wavefronts per LDS.64 (ideal 1), 40 heads; N = 8, 4, 2 pairs an item")
        for group in (None, 16):
            row = [f"half {h}: " + "/".join(f"{rope(h, 40, n, group):.1f}" for n in (8, 4, 2)) for h in (32, 64, 128, 256)]
            print(f"  {'padded /16' if group else 'unpadded  '}  " + "  ".join(row))
    if what in ("fp8-raw", "all"):
        print("FP8 raw tiles, wavefronts per 16-byte instruction (ideal 4): (load_rows writes, convert_fp8 reads)")
        cfgs = [("decode", 64, 128, 64), ("decode", 96, 128, 64), ("decode", 128, 128, 64), ("decode", 256, 64, 32),
                ("prefill", 64, 128, 64), ("prefill", 96, 128, 32), ("prefill", 128, 128, 32), ("prefill", 256, 128, 32),
                ("mla", 576, 128, 32), ("mla", 576, 256, 32)]
        for kind, d, t, bn in cfgs:
            cells = []
            for sw in (False, True):
                for q in (False, True):
                    ld, rd = fp8_raw(d, t, bn, sw, q)
                    cells.append(f"{'swz' if sw else 'flat'}{'/quarter' if q else ''} {ld:.1f},{rd:.1f}")
            print(f"  {kind:7s} D {d:3d} threads {t:3d} BN {bn}:  " + "  ".join(cells))


if __name__ == "__main__":
    main()
