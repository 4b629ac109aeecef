#!/usr/bin/env python3
"""Driver for bench/scan/run: runs bot-bottle scan, gitleaks and detect-secrets side by side on
the same corpora and prints one table. Not a test: it asserts nothing, it measures."""
import json
import os
import resource
import subprocess
import sys
import time

BB, GITLEAKS, DETECT, WORK = sys.argv[1:5]
ROWS = []


def size_of(path):
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != ".git"]
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p):
                total += os.path.getsize(p)
    return total


CPU = {}


def timed(cmd, out_path=None, env=None, cwd=None):
    """Wall time of one run; its CPU time (user + sys) is kept in CPU[wall]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(out_path or os.devnull, "wb") as out:
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[elapsed] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode not in (0, 1):
        sys.stderr.write(f"warning: {cmd[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')[:400]}\n")
    return elapsed


# ---------------------------------------------------------------------------- tool adapters
# Each returns (seconds, [(file, line)]) for a directory, or None when the tool cannot do it.

def bb_dir(path, tag):
    out = f"{WORK}/{tag}.bb.json"
    t = timed([BB, "scan", "--no-ignore", "--format", "json", path], out)
    return t, [(f["file"], f["line"]) for f in json.load(open(out))]


def bb_git(repo, tag, bb=None):
    out = f"{WORK}/{tag}.bb.json"
    t = timed([bb or BB, "scan", "--format", "json", "--git", "HEAD", repo], out)
    return t, [(f["file"], f["line"]) for f in json.load(open(out))]


# An earlier build of bot-bottle (BENCH_BB_OLD=/path/to/bot-bottle), timed in the same run on
# the git corpora, to compare two versions side by side.
BB_OLD = os.environ.get("BENCH_BB_OLD", "")
# Runs per tool and corpus (BENCH_REPEAT, default 1): the run with the median wall time is kept.
REPEAT = max(1, int(os.environ.get("BENCH_REPEAT", "1")))


def gl_run(args, tag):
    if not GITLEAKS:
        return None
    out = f"{WORK}/{tag}.gl.json"
    if os.path.exists(out):
        os.remove(out)
    cmd = GITLEAKS.split() + args + ["--no-banner", "--log-level", "error", "--exit-code", "0",
                                     "--report-format", "json", "--report-path", out]
    t = timed(cmd)
    data = json.load(open(out)) if os.path.exists(out) else []
    return t, [(f["File"], f["StartLine"]) for f in data]


def gl_dir(path, tag):
    return gl_run(["dir", path], tag)


def gl_git(repo, tag):
    return gl_run(["git", repo], tag)


def ds_dir(path, tag):
    if not DETECT:
        return None
    out = f"{WORK}/{tag}.ds.json"
    # detect-secrets only reports paths under its working directory: run it from there.
    t = timed([DETECT, "scan", "--all-files", "."], out, cwd=path)
    data = json.load(open(out))
    return t, [(os.path.join(path, f), r["line_number"]) for f, rs in data.get("results", {}).items() for r in rs]


def fmt_rate(nbytes, t):
    return f"{nbytes / 1e6 / t:8.1f}" if t > 0 else "   -"


# ---------------------------------------------------------------------------- throughput

def throughput(name, path, kind, nbytes=None, tools=("bb", "gl", "ds")):
    nbytes = nbytes if nbytes is not None else size_of(path)
    res = {}
    if kind == "git" and BB_OLD:
        tools = tuple(tools) + ("bb0",)
    runs = {tool: [] for tool in tools}
    # Rounds alternate the tools so that a change in the machine's load hits them all alike.
    for _ in range(REPEAT):
        for tool in tools:
            fn = {"bb": bb_dir if kind == "dir" else bb_git,
                  "bb0": lambda p, tag: bb_git(p, tag + ".old", BB_OLD),
                  "gl": gl_dir if kind == "dir" else gl_git,
                  "ds": ds_dir if kind == "dir" else (lambda *_: None)}[tool]
            r = fn(path, f"{name}")
            if r is not None:
                runs[tool].append(r)
    for tool, rs in runs.items():
        res[tool] = sorted(rs, key=lambda r: r[0])[len(rs) // 2] if rs else None
    ROWS.append(("throughput", name, nbytes, res))
    return res


def planted_recall(findings, planted, root):
    want = {(p["file"], p["line"]) for p in planted}
    got = set()
    for f, line in findings:
        base = os.path.basename(f)
        # a planted secret counts as found if a finding lands on its first line(s)
        for d in range(0, 14):
            if (base, line - d) in want:
                got.add((base, line - d))
    return len(got) / len(want) if want else 0.0


def labelled(name, root, secret_only=False):
    labels = json.load(open(f"{root}/labels.json"))
    res = {}
    for tool, fn in (("bb", bb_dir), ("gl", gl_dir), ("ds", ds_dir)):
        r = fn(root, f"lab-{name}")
        if r is None:
            res[tool] = None
            continue
        _, findings = r
        flagged = {os.path.relpath(f, root) if os.path.isabs(f) else f.split(root.rstrip('/') + '/')[-1]
                   for f, _ in findings}
        pos = [k for k, v in labels.items() if v]
        if secret_only:
            pos = [k for k in pos if isinstance(labels[k], dict) and labels[k]["secret"]]
        neg = [k for k, v in labels.items() if not v]
        tp = sum(1 for k in pos if k in flagged)
        neg_files = sum(1 for k in neg if k in flagged)
        neg_findings = sum(1 for f, _ in findings
                           if (os.path.relpath(f, root) if os.path.isabs(f) else f.split(root.rstrip('/') + '/')[-1]).startswith("neg/"))
        res[tool] = (tp, len(pos), neg_files, len(neg), neg_findings)
    ROWS.append(("quality", name, None, res))


def main():
    corpora = json.loads(os.environ["BENCH_CORPORA"])
    for c in corpora:
        if c["kind"] in ("dir", "git"):
            res = throughput(c["name"], c["path"], c["kind"], c.get("bytes"), tuple(c.get("tools", ["bb", "gl", "ds"])))
            if c.get("planted"):
                planted = json.load(open(c["planted"]))
                c["recall"] = {t: planted_recall(r[1], planted, c["path"]) for t, r in res.items() if r}
                ROWS[-1] = ROWS[-1] + (c["recall"],)
        else:
            labelled(c["name"], c["path"], c.get("secret_only", False))

    names = {"bb": "bot-bottle", "bb0": "bot-bottle (earlier build)", "gl": "gitleaks 8.30",
             "ds": "detect-secrets"}
    print()
    print("| corpus | size MB | tool | wall s | MB/s (wall) | CPU s | MB per CPU s | vs gitleaks (wall) | vs gitleaks (CPU) | findings | planted recall |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in ROWS:
        if row[0] != "throughput":
            continue
        _, name, nbytes, res = row[:4]
        recall = row[4] if len(row) > 4 else {}
        gl = res.get("gl")
        for tool in ("bb", "bb0", "gl", "ds"):
            r = res.get(tool)
            if r is None:
                continue
            t, findings = r
            ratio = f"{gl[0] / t:.1f}x" if gl and t > 0 else "-"
            rec = f"{recall[tool] * 100:.1f}%" if tool in recall else "-"
            cpu = CPU.get(t, 0.0)
            gl_cpu = CPU.get(gl[0], 0.0) if gl else 0.0
            cratio = f"{gl_cpu / cpu:.1f}x" if gl and cpu > 0 else "-"
            print(f"| {name} | {nbytes / 1e6:.1f} | {names[tool]} | {t:.2f} | {fmt_rate(nbytes, t).strip()} | {cpu:.2f} | {fmt_rate(nbytes, cpu).strip()} | {ratio} | {cratio} | {len(findings)} | {rec} |")
    print()
    print("| labelled corpus | tool | recall | precision (samples) | flagged negatives | findings on negatives |")
    print("|---|---|---:|---:|---:|---:|")
    for row in ROWS:
        if row[0] != "quality":
            continue
        _, name, _, res = row
        for tool in ("bb", "gl", "ds"):
            r = res.get(tool)
            if r is None:
                continue
            tp, npos, fpf, nneg, fpn = r
            prec = tp / (tp + fpf) if tp + fpf else 0.0
            print(f"| {name} | {names[tool]} | {tp}/{npos} = {tp / npos * 100:.1f}% | {prec * 100:.1f}% | {fpf}/{nneg} | {fpn} |")


main()
