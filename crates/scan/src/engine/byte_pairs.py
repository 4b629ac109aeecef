#!/usr/bin/env python3
"""Writes byte_pairs.bin and trigrams.bin: how often each pair of adjacent bytes, and each of
the most frequent trigrams, occurs in a corpus.

The keyword filter (keyword_filter.rs) picks each keyword's rarest trigram by these counts.
Bytes are folded as the filter folds them (ASCII letters to lower case, bytes from 0x80 on to
their low seven bits); entry 128 * a + b of byte_pairs.bin is round(8 * log2(1 + count of the
pair (a, b) per 16 MiB of corpus)), at most 255. trigrams.bin: the 8192 most frequent
trigrams, sorted by their bytes, 4 bytes each: the trigram's three bytes, then round(8 *
log2(1 + its count per 16 MiB)), at most 255 (a trigram not in it occurs less often than the
last one of the 8192).

Usage: byte_pairs.py [DIR] [MEGABYTES]   defaults: ~/.cargo/registry/src, 24
(the committed table: the cargo registry of the project's build machine, 2026-12-07, files in
random order with seed 1, the first 24 MB).
"""
import collections
import math
import os
import random
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cargo/registry/src")
limit = int(sys.argv[2] if len(sys.argv) > 2 else 24) * 1_000_000
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
random.Random(1).shuffle(files)
counts = [0] * (128 * 128)
trigrams = collections.Counter()
total = 0
for path in files:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        continue
    data = bytes(b & 127 for b in data).lower()
    for a, b in zip(data, data[1:]):
        counts[a * 128 + b] += 1
    trigrams.update(data[i : i + 3] for i in range(len(data) - 2))
    total += len(data)
    if total > limit:
        break
scale = (16 << 20) / total
table = bytes(min(255, round(8 * math.log2(1 + c * scale))) for c in counts)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "byte_pairs.bin")
with open(out, "wb") as fh:
    fh.write(table)
common = sorted(t for t, _ in trigrams.most_common(8192))
out3 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trigrams.bin")
with open(out3, "wb") as fh:
    for t in common:
        fh.write(t + bytes([min(255, round(8 * math.log2(1 + trigrams[t] * scale)))]))
print(f"{total} bytes read, {out} and {out3} written")
