#!/usr/bin/env python3
"""Writes a git fast-import stream of COMMITS commits on top of PARENT (or a root).

Realistic sizes: a tree of source-like text files (1-30 KB); each commit edits a few
lines in 1-4 files and now and then adds a file. Deterministic (seeded).

usage: gen.py COMMITS FILES SEED [PARENT_SHA] > stream
"""
import random
import sys

commits, files, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
parent = sys.argv[4] if len(sys.argv) > 4 else None
rng = random.Random(seed)
WORDS = ("let mut fn return self value config error result match some none ok err "
         "impl struct enum pub use crate super async await move ref clone iter map "
         "filter collect into from len push pop insert remove get set new default").split()
out = sys.stdout.buffer


def line():
    n = rng.randint(2, 12)
    return ("    " * rng.randint(0, 3) + " ".join(rng.choice(WORDS) for _ in range(n)) + ";\n")


def new_file():
    target = rng.randint(1_000, 30_000)
    lines, size = [], 0
    while size < target:
        l = line()
        lines.append(l)
        size += len(l)
    return lines


tree = {}
if parent is None:
    for i in range(files):
        tree[f"src/mod{i // 50}/file{i}.rs"] = new_file()
else:
    # Files the parent already has are unknown here: work on a fresh subtree.
    for i in range(max(1, files // 10)):
        tree[f"work{seed}/file{i}.rs"] = new_file()

mark = 0
when = 1_700_000_000
first = True
for c in range(commits):
    touched = set()
    if first:
        touched = set(tree)
    else:
        for _ in range(rng.randint(1, 4)):
            path = rng.choice(sorted(tree)) if rng.random() > 0.05 else f"src/new/f{seed}_{c}.rs"
            if path not in tree:
                tree[path] = new_file()
            else:
                lines = tree[path]
                for _ in range(rng.randint(1, 20)):
                    i = rng.randrange(len(lines))
                    if rng.random() < 0.6:
                        lines[i] = line()
                    else:
                        lines.insert(i, line())
            touched.add(path)
    when += 60
    msg = f"change {c}\n".encode()
    out.write(b"commit refs/heads/main\n")
    mark += 1
    out.write(f"mark :{mark}\n".encode())
    out.write(f"committer Bench <bench@example.org> {when} +0000\n".encode())
    out.write(f"data {len(msg)}\n".encode() + msg)
    if first and parent is not None:
        out.write(f"from {parent}\n".encode())
    first = False
    for path in sorted(touched):
        data = "".join(tree[path]).encode()
        out.write(f"M 100644 inline {path}\ndata {len(data)}\n".encode())
        out.write(data + b"\n")
    out.write(b"\n")
