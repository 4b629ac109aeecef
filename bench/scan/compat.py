#!/usr/bin/env python3
"""Compatibility run (not a test): `bot-bottle scan` and gitleaks 8.30 side by side on the same
inputs, findings compared as (file, line, rule, commit), and a table of the differences.

    compat.py BB GITLEAKS WORK REPO

BB: the bot-bottle binary; GITLEAKS: the gitleaks command (may be "unshare -n /path/gitleaks");
WORK: an empty directory for corpora and reports; REPO: a git repository whose working tree and
history are the real tree.

Corpora:
  tree     REPO's working tree, each tool with its own default rules; gitleaks' rule ids are
           mapped to ours with the table in crates/scan/src/config/gitleaks_ids.rs. Two counts:
           exact (one to one: same file, line, commit, ids that map to each other) and by
           meaning (the other tool reports that file, line and commit under an id of the same
           kind: a mapped id, a generic rule on either side, or the same vendor); the
           "only" columns and the differences are by meaning.
  history  REPO's git history (the last BENCH_COMPAT_COMMITS commits, default 200), same rules.
  cases    files written here for each compatibility item (encoded secrets, composite rule,
           duplicate ids, path-only rule, multi-line match, archives), with one rule file both
           tools load, so ids are the same on both sides.
  cases in git  a repository made here: archives committed in two commits (opened in git mode,
           --max-archive-depth 2) and a rule file with a key in it (left out as the config in
           use), one rule file for both tools.
  own files  a directory with a .gitleaks.toml (extending the defaults, a key in a comment) and
           a gitleaks report with secrets used as the baseline: each tool's defaults.
  configs  (with BENCH_COMPAT_GITLEAKS_SRC=<a gitleaks source tree>) every rule file of its
           testdata/config, loaded by each tool from <src>/config as gitleaks' tests load them.
  gitleaks' source  (with BENCH_COMPAT_GITLEAKS_SRC) that tree scanned as a directory as its
           developers scan it (its .gitleaks.toml, which extends the defaults, and its
           .gitleaksignore of gitleaks fingerprints, read by each tool), and a copy without
           those two files (each tool's defaults). BENCH_COMPAT_ONLY=gitleaks-src: only these.

The kinds of difference are named by simple checks (the `kind` column); which tool is right for
each kind is judged in bench/README.md from the rows printed here.
"""
import base64
import collections
import gzip
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import zipfile

BB, GL, WORK, REPO = sys.argv[1], shlex.split(sys.argv[2]), sys.argv[3], sys.argv[4]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def id_map():
    """gitleaks id -> set of our ids, from the Rust table."""
    src = open(os.path.join(ROOT, "crates/scan/src/config/gitleaks_ids.rs")).read()
    table = src[src.index("GITLEAKS_DEFAULT_IDS"):src.index("];")]
    out = {}
    for m in re.finditer(r'\(\s*"([^"]+)",\s*&\[([^\]]*)\]', table):
        out[m.group(1)] = set(re.findall(r'"([^"]+)"', m.group(2)))
    return out


MAP = id_map()


def run(cmd, cwd=None):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        sys.stderr.write(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}\n")
    return p


def gitleaks(args, cwd, report):
    run(GL + args + ["--no-banner", "--exit-code", "0", "-f", "json", "-r", report], cwd=cwd)
    try:
        data = json.load(open(report))
    except (OSError, ValueError):
        return []
    return [(f["File"], f["StartLine"], f["RuleID"], f.get("Commit", "")) for f in data]


def botbottle(args, cwd):
    p = run([BB, "scan", "-f", "gitleaks"] + args, cwd=cwd)
    try:
        data = json.loads(p.stdout or "[]")
    except ValueError:
        sys.stderr.write(p.stderr[-2000:])
        return []
    return [(f["File"], f["StartLine"], f["RuleID"], f.get("Commit", "")) for f in data]


def norm(findings, prefix):
    out = []
    for f, line, rule, commit in findings:
        if prefix and f.startswith(prefix):
            f = f[len(prefix):]
        out.append((f.lstrip("./"), line, rule, commit))
    return out


def same_rule(gl_rule, bb_rule, shared_ids):
    if shared_ids:
        return gl_rule == bb_rule
    return gl_rule == bb_rule or bb_rule in MAP.get(gl_rule, ())


# gitleaks ids whose every counterpart of ours is a generic rule (`generic-api-key`): a rule
# that reports a secret of any kind.
GENERIC_GL = {g for g, ours in MAP.items() if ours and all(o.startswith("generic") for o in ours)}


def same_kind(gl_rule, bb_rule, shared_ids):
    """Whether two findings of one line can be one secret: the same id (or ids that map to
    each other), or a generic rule on either side (a generic rule names no kind, so it agrees
    with any), or a vendor rule of the same vendor (the first word of both ids)."""
    if same_rule(gl_rule, bb_rule, shared_ids):
        return True
    if shared_ids:
        return False
    if gl_rule in GENERIC_GL or bb_rule.startswith("generic"):
        return True
    return gl_rule.split("-")[0] == bb_rule.split("-")[0]


def compare(name, gl, bb, shared_ids, rows, diffs):
    """Pairs findings two ways. Exact: one to one, by (file, line, commit) and rules that map
    to each other. By meaning: a finding is shared when the other tool reports the same file,
    line and commit under an id of the same kind (`same_kind`), whatever else it reports there
    (gitleaks' one finding of two tokens on a line is shared with our two). Differences are
    listed by meaning; the exact count is kept as a column."""
    bb_left = list(bb)
    exact = 0
    for g in gl:
        hit = next((b for b in bb_left if b[0] == g[0] and b[1] == g[1] and b[3] == g[3]
                    and same_rule(g[2], b[2], shared_ids)), None)
        if hit:
            bb_left.remove(hit)
            exact += 1
    only_gl = [g for g in gl if not any(b[0] == g[0] and b[1] == g[1] and b[3] == g[3]
                                        and same_kind(g[2], b[2], shared_ids) for b in bb)]
    only_bb = [b for b in bb if not any(b[0] == g[0] and b[1] == g[1] and b[3] == g[3]
                                        and same_kind(g[2], b[2], shared_ids) for g in gl)]
    rows.append((name, len(gl), len(bb), exact, len(gl) - len(only_gl),
                 len(bb) - len(only_bb), len(only_gl), len(only_bb)))
    for g in only_gl:
        diffs.append((name, "gitleaks only", kind_gl(g, bb, shared_ids), g))
    for b in only_bb:
        diffs.append((name, "bot-bottle only", kind_bb(b, gl, shared_ids), b))


def kind_gl(g, bb, shared_ids):
    if not shared_ids and g[2] in MAP and not MAP[g[2]]:
        return "no built-in rule of that kind"
    if not shared_ids and g[2] not in MAP:
        return "rule id not in gitleaks' defaults"
    near = [b for b in bb if b[0] == g[0] and b[3] == g[3] and abs(b[1] - g[1]) <= 3]
    if near:
        return "same file, nearby line or other rule"
    return "missed by bot-bottle"


def kind_bb(b, gl, shared_ids):
    if b[2].startswith("generic"):
        return "generic rule (wider than gitleaks' generic-api-key)"
    near = [g for g in gl if g[0] == b[0] and g[3] == b[3] and abs(g[1] - b[1]) <= 3]
    if near:
        return "same file, nearby line or other rule"
    return "not found by gitleaks"


# ------------------------------------------------------------------ the cases corpus

CASES_TOML = r"""
title = "compat cases"

[[rules]]
id = "small-secret"
regex = '''\bsmall-secret\b'''

[[rules]]
id = "overlapping"
regex = '''secret=(decoded-secret-value\w*)'''
secretGroup = 1

[[rules]]
id = "aws-key"
regex = '''\b((?:AKIA|ASIA)[A-Z0-9]{16})\b'''
keywords = ["akia", "asia"]

[[rules]]
id = "pem"
regex = '''-----BEGIN[ A-Z]{0,40}PRIVATE KEY-----[\s\S]*?-----END[ A-Z]{0,40}PRIVATE KEY-----'''
keywords = ["-----begin"]

[[rules]]
id = "password"
regex = '''password\s*=\s*"([^"]+)"'''
[[rules.required]]
id = "username"
withinLines = 2

[[rules]]
id = "username"
regex = '''username\s*=\s*"([^"]+)"'''
skipReport = true

[[rules]]
id = "dup"
regex = '''first-[0-9]{6}'''

[[rules]]
id = "dup"
regex = '''second-[0-9]{6}'''

[[rules]]
id = "keystore"
path = '''\.jks$'''
"""


def b64(s):
    return base64.b64encode(s.encode()).decode()


def write_cases(d):
    os.makedirs(d, exist_ok=True)
    aws = "AKIA" + "IDQJ6PTGDFFWYX7A"
    pem = ("-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEA\n"
           "-----END PRIVATE KEY-----\n")
    enc = [
        "# encoded",
        b64("small-secret"),
        "secret=" + b64("decoded-secret-value00"),
        b64("secret=" + b64("decoded-secret-value01")),
        "secret=" + "decoded-secret-valueHEX".encode().hex(),
        "secret=decoded-" + "".join("%%%02X" % b for b in b"secret") + "-valuev2",
        "private_key: '" + b64(pem) + "'",
        'key = "' + "".join("\\u%04x" % ord(c) for c in aws) + '"',
        "",
    ]
    open(os.path.join(d, "encoded.txt"), "w").write("\n".join(enc))
    open(os.path.join(d, "composite.cfg"), "w").write(
        'username = "admin"\n\npassword = "s3cr3t-v4lue"\n\n\n\n\npassword = "far-away-value"\n')
    open(os.path.join(d, "dup.txt"), "w").write("first-123456\nsecond-123456\n")
    open(os.path.join(d, "store.jks"), "w").write("binary-ish\n")
    open(os.path.join(d, "multiline.pem"), "w").write("x\n" + pem)
    inner = ("secret=decoded-secret-valueZIP\n" + aws + "\n").encode()
    with zipfile.ZipFile(os.path.join(d, "a.zip"), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("conf/app.env", inner)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("x/app.env")
        info.size = len(inner)
        t.addfile(info, io.BytesIO(inner))
    open(os.path.join(d, "b.tar.gz"), "wb").write(gzip.compress(buf.getvalue()))
    open(os.path.join(d, "c.env.gz"), "wb").write(gzip.compress(inner))
    cfg = os.path.join(WORK, "cases.toml")
    open(cfg, "w").write(CASES_TOML)
    return cfg


def write_git_cases(d):
    """A repository with archives in two commits and the rule file committed with a key in
    it; returns the rule file's path (relative to the repository)."""
    os.makedirs(d, exist_ok=True)
    git = ["git", "-C", d, "-c", "user.name=T", "-c", "user.email=t@example.invalid",
           "-c", "commit.gpgsign=false"]
    run(git + ["init", "-q", "-b", "main"])
    aws = "AKIA" + "IDQJ6PTGDFFWYX7A"
    inner = ("secret=decoded-secret-valueZIP\n" + aws + "\n").encode()
    with zipfile.ZipFile(os.path.join(d, "a.zip"), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("conf/app.env", inner)
    open(os.path.join(d, ".gitleaks.toml"), "w").write(
        "# the docs' example key: " + aws + "\n" + CASES_TOML)
    run(git + ["add", "-A"])
    run(git + ["commit", "-q", "-m", "one"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in ("x/app.env", "y/other.env"):
            info = tarfile.TarInfo(name)
            info.size = len(inner)
            t.addfile(info, io.BytesIO(inner))
    open(os.path.join(d, "b.tar.gz"), "wb").write(gzip.compress(buf.getvalue()))
    run(git + ["add", "-A"])
    run(git + ["commit", "-q", "-m", "two"])


def write_own_files(d):
    """A directory whose .gitleaks.toml quotes a key, and gitleaks' own report of app.env (with
    its secret) as the baseline, baseline.json."""
    os.makedirs(d, exist_ok=True)
    aws = "AKIA" + "IDQJ6PTGDFFWYX7A"
    open(os.path.join(d, "app.env"), "w").write("AWS_ACCESS_KEY_ID=" + aws + "\n")
    gitleaks(["dir", "app.env"], d, os.path.join(d, "baseline.json"))
    open(os.path.join(d, ".gitleaks.toml"), "w").write(
        "# the docs' example key: " + aws + "\n[extend]\nuseDefault = true\n")
    open(os.path.join(d, "later.env"), "w").write("KEY=" + aws[:-1] + "B\n")


def configs(src):
    """Which of gitleaks' test rule files each tool loads (run from <src>/config, as gitleaks'
    tests run); prints a table and the files where they differ."""
    base = os.path.join(src, "testdata", "config")
    cwd = os.path.join(src, "config")
    os.makedirs(cwd, exist_ok=True)
    empty = os.path.join(WORK, "empty")
    os.makedirs(empty, exist_ok=True)
    files = sorted(os.path.relpath(os.path.join(dp, f), base)
                   for dp, _, fs in os.walk(base) for f in fs if f.endswith(".toml"))
    both = gl_only = bb_only = neither = 0
    notes = []
    for f in files:
        path = os.path.join(base, f)
        g = subprocess.run(GL + ["dir", empty, "-c", path, "--no-banner", "--exit-code", "0"],
                           cwd=cwd, capture_output=True, text=True)
        b = subprocess.run([BB, "scan", "-c", path, "-i", "/nonexistent", empty],
                           cwd=cwd, capture_output=True, text=True)
        gl_ok, bb_ok = g.returncode == 0, b.returncode == 0
        if gl_ok and bb_ok:
            both += 1
        elif gl_ok:
            gl_only += 1
            notes.append((f, "gitleaks only", b.stderr.strip().splitlines()[-1:]))
        elif bb_ok:
            bb_only += 1
            notes.append((f, "bot-bottle only", [l for l in g.stderr.splitlines() if "FTL" in l or "ERR" in l][-1:]))
        else:
            neither += 1
    print(f"| gitleaks' test rule files | files | loaded by both | gitleaks only | bot-bottle only | neither |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| testdata/config | {len(files)} | {both} | {gl_only} | {bb_only} | {neither} |")
    for n in notes:
        print(f"  {n[0]}: {n[1]}: {' '.join(n[2])[:200]}")
    print()


def gitleaks_source(src, rows, diffs):
    """gitleaks' own source tree: as its developers scan it (its .gitleaks.toml extends the
    defaults, its .gitleaksignore holds gitleaks fingerprints; each tool reads both), and a copy
    without those two files (each tool's defaults)."""
    src = src.rstrip("/")
    gl = norm(gitleaks(["dir", "."], src, os.path.join(WORK, "gl-src-own.json")), "")
    bb = norm(botbottle(["."], src), "")
    compare("gitleaks' source (its .gitleaks.toml and .gitleaksignore)", gl, bb, False, rows, diffs)
    bare = os.path.join(WORK, "gitleaks-src")
    subprocess.run(["cp", "-r", src, bare], check=True)
    for f in (".gitleaks.toml", ".gitleaksignore"):
        if os.path.exists(os.path.join(bare, f)):
            os.remove(os.path.join(bare, f))
    gl = norm(gitleaks(["dir", "."], bare, os.path.join(WORK, "gl-src.json")), "")
    bb = norm(botbottle(["--no-ignore", "."], bare), "")
    compare("gitleaks' source (defaults)", gl, bb, False, rows, diffs)


def main():
    rows, diffs = [], []
    only_src = os.environ.get("BENCH_COMPAT_ONLY") == "gitleaks-src"
    if os.environ.get("BENCH_COMPAT_GITLEAKS_SRC"):
        if not only_src:
            configs(os.environ["BENCH_COMPAT_GITLEAKS_SRC"])
        gitleaks_source(os.environ["BENCH_COMPAT_GITLEAKS_SRC"], rows, diffs)
    if only_src:
        report(rows, diffs)
        return
    commits = os.environ.get("BENCH_COMPAT_COMMITS", "200")

    # tree: each tool's own defaults; the repository's own config files are not used.
    tree = os.path.join(WORK, "tree")
    run(["git", "-C", REPO, "worktree", "add", "--detach", tree, "HEAD"])
    gl = norm(gitleaks(["dir", tree], WORK, os.path.join(WORK, "gl-tree.json")), tree + "/")
    bb = norm(botbottle(["--no-ignore", "-i", "/nonexistent", tree], WORK), tree + "/")
    compare("tree (defaults)", gl, bb, False, rows, diffs)

    # history
    last = run(["git", "-C", REPO, "rev-list", "--max-count", commits, "HEAD"]).stdout.split()
    rng = f"{last[-1]}..HEAD" if len(last) > 1 else "HEAD"
    gl = gitleaks(["git", REPO, "--log-opts", rng], WORK, os.path.join(WORK, "gl-git.json"))
    bb = botbottle(["-i", "/nonexistent", "--git", rng, REPO], WORK)
    compare(f"history ({len(last)} commits, defaults)", gl, bb, False, rows, diffs)

    # cases, one rule file, decoding and archives on both sides
    cases = os.path.join(WORK, "cases")
    cfg = write_cases(cases)
    gl = norm(gitleaks(["dir", cases, "-c", cfg, "--max-decode-depth", "5",
                        "--max-archive-depth", "2"], WORK, os.path.join(WORK, "gl-cases.json")),
              cases + "/")
    bb = norm(botbottle(["-c", cfg, "-i", "/nonexistent", "--max-decode-depth", "5",
                         "--max-archive-depth", "2", cases], WORK), cases + "/")
    compare("cases (one rule file)", gl, bb, True, rows, diffs)

    # cases in git: archives opened in git mode, the committed rule file left out
    gcases = os.path.join(WORK, "gitcases")
    write_git_cases(gcases)
    gl = gitleaks(["git", gcases, "-c", ".gitleaks.toml", "--max-archive-depth", "2"], gcases,
                  os.path.join(WORK, "gl-gitcases.json"))
    bb = botbottle(["-c", ".gitleaks.toml", "-i", "/nonexistent", "--max-archive-depth", "2",
                    "--git", "HEAD"], gcases)
    compare("cases in git (one rule file)", gl, bb, True, rows, diffs)

    # own files: the rule file in use and the baseline are not scanned
    own = os.path.join(WORK, "own")
    write_own_files(own)
    gl = gitleaks(["dir", ".", "-b", "baseline.json"], own, os.path.join(WORK, "gl-own.json"))
    bb = botbottle(["--baseline", "baseline.json", "."], own)
    compare("own files (defaults)", gl, bb, False, rows, diffs)

    report(rows, diffs)
    run(["git", "-C", REPO, "worktree", "remove", "--force", tree])


def report(rows, diffs):
    print("| corpus | gitleaks | bot-bottle | both, exact | both by meaning (gitleaks' findings) "
          "| both by meaning (ours) | gitleaks only | bot-bottle only |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print()
    kinds = collections.Counter((d[0], d[1], d[2]) for d in diffs)
    print("| corpus | side | kind | count | example (file:line rule) |")
    print("| --- | --- | --- | ---: | --- |")
    for (corpus, side, kind), n in sorted(kinds.items()):
        ex = next(d[3] for d in diffs if (d[0], d[1], d[2]) == (corpus, side, kind))
        print(f"| {corpus} | {side} | {kind} | {n} | {ex[0]}:{ex[1]} {ex[2]} |")
    if os.environ.get("BENCH_COMPAT_ALL"):
        print()
        for d in diffs:
            print(d)


if __name__ == "__main__":
    main()
