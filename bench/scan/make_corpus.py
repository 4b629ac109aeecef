#!/usr/bin/env python3
"""Builds the labelled corpora for bench/scan/run.

  make_corpus.py labelled OUT   fake-but-well-shaped secrets (pos/) and look-alike decoys (neg/),
                                one sample per file, in realistic surrounding code
  make_corpus.py synthetic OUT MB   code-like files totalling MB megabytes with planted secrets,
                                    their locations in OUT/planted.json
  make_corpus.py noseyparker JSON OUT   the Nosey Parker examples, one per file (pos/, neg/)
  make_corpus.py history OUT COMMITS   a git repository of COMMITS commits (git fast-import): 400
                                       code-like files edited a few lines at a time, files added
                                       and renamed, one secret planted every 1,000 commits

Every secret here is random and made up; none is a real credential.
"""
import base64
import json
import os
import random
import string
import sys

R = random.Random(20261127)
AL = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
LOW = string.ascii_lowercase


def rs(n, cs=AL):
    return "".join(R.choice(cs) for _ in range(n))


def uuid():
    return "-".join(rs(n, HEX) for n in (8, 4, 4, 4, 12))


def pem(kind="RSA PRIVATE KEY", lines=12):
    body = "\n".join(rs(64, AL + "+/") for _ in range(lines))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----"


# (kind, generator of the secret, templates placing it in code)
SECRETS = [
    ("aws-key-id", lambda: "AKIA" + rs(16, string.ascii_uppercase + "234567")),
    ("aws-secret", lambda: rs(40, AL + "/+")),
    ("github-pat", lambda: "ghp_" + rs(36)),
    ("github-fine", lambda: "github_pat_" + rs(22) + "_" + rs(59)),
    ("github-oauth", lambda: "gho_" + rs(36)),
    ("github-app", lambda: R.choice(["ghs_", "ghu_"]) + rs(36)),
    ("gitlab", lambda: "glpat-" + rs(20, AL + "_-")),
    ("slack-bot", lambda: f"xoxb-{rs(11, string.digits)}-{rs(12, string.digits)}-{rs(24)}"),
    ("slack-webhook", lambda: f"https://hooks.slack.com/services/T{rs(8, string.ascii_uppercase + string.digits)}/B{rs(10, string.ascii_uppercase + string.digits)}/{rs(24)}"),
    ("stripe", lambda: R.choice(["sk_live_", "rk_live_"]) + rs(24)),
    ("google-api", lambda: "AIza" + rs(35, AL + "_-")),
    ("azure-storage", lambda: rs(86, AL + "+/") + "=="),
    ("openai", lambda: "sk-proj-" + rs(56, AL + "_-") + "T3BlbkFJ" + rs(56, AL + "_-")),
    ("anthropic", lambda: "sk-ant-api03-" + rs(93, AL + "_-") + "AA"),
    ("npm", lambda: "npm_" + rs(36)),
    ("pypi", lambda: "pypi-AgEIcHlwaS5vcmc" + rs(120, AL + "_-")),
    ("jwt", lambda: "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJ" + rs(60, AL + "_-") + "." + rs(86, AL + "_-")),
    ("private-key", lambda: pem()),
    ("openssh-key", lambda: pem("OPENSSH PRIVATE KEY", 8)),
    ("db-url", lambda: f"{R.choice(['postgres', 'postgresql', 'mysql', 'mongodb+srv', 'redis'])}://{R.choice(['app', 'svc', 'deploy'])}:{rs(18)}@db-{rs(5, LOW)}.internal:5432/main"),
    ("password", lambda: rs(14) + R.choice("!@#%^") + rs(2, string.digits)),
    ("api-key", lambda: rs(32, HEX)),
    ("sendgrid", lambda: "SG." + rs(22, AL + "_-") + "." + rs(43, AL + "_-")),
    ("twilio", lambda: "SK" + rs(32, HEX)),
    ("digitalocean", lambda: "dop_v1_" + rs(64, HEX)),
]

TEMPLATES = {
    "aws-key-id": ['aws_access_key_id = {s}', 'AWS_ACCESS_KEY_ID="{s}"', '  "AccessKeyId": "{s}",'],
    "aws-secret": ['aws_secret_access_key = {s}', 'AWS_SECRET_ACCESS_KEY="{s}"', '  "SecretAccessKey": "{s}",'],
    "azure-storage": ['DefaultEndpointsProtocol=https;AccountName=acct{n};AccountKey={s};EndpointSuffix=core.windows.net'],
    "db-url": ['DATABASE_URL={s}', 'url: "{s}"', 'engine = create_engine("{s}")'],
    "password": ['db_password = "{s}"', 'PASSWORD={s}', '  password: "{s}"', 'conn = connect(host, user="app", password="{s}")'],
    "api-key": ['api_key = "{s}"', 'API_KEY: "{s}"', 'const apiKey = "{s}";'],
    "private-key": ['{s}'],
    "openssh-key": ['{s}'],
}
GENERIC_TEMPLATES = ['token = "{s}"', 'export TOKEN={s}', '  "token": "{s}",', 'headers = {{"Authorization": "Bearer {s}"}}',
                     'client = Client(api_key="{s}")', 'SECRET={s}', '{s}']

CONTEXT_BEFORE = [
    "import os\nimport sys\n\n", "# configuration\n", "package main\n\nimport \"fmt\"\n\n", "[default]\nregion = eu-west-1\n",
    "use std::env;\n\n", "version: '3'\nservices:\n  app:\n    environment:\n", "",
]
CONTEXT_AFTER = ["\n\ndef main():\n    run()\n", "\n", "\nfunc main() { fmt.Println(\"ok\") }\n", "\noutput = json\n", "\n"]

# Look-alikes that must not be reported.
DECOYS = [
    lambda: "ghp_" + "x" * 36,
    lambda: "token = \"ghp_YOUR_TOKEN_HERE\"",
    lambda: "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
    lambda: "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    lambda: "aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}",
    lambda: "password = getpass.getpass()",
    lambda: "password = os.environ[\"DB_PASSWORD\"]",
    lambda: "password: ${{ secrets.DB_PASSWORD }}",
    lambda: "token = tokenizer.next_token()",
    lambda: "let token = self.tokens.peek();",
    lambda: "secret_key = settings.SECRET_KEY",
    lambda: "api_key = config.get(\"api_key\")",
    lambda: f"commit {rs(40, HEX)}",
    lambda: f"checksum = \"{rs(64, HEX)}\"",
    lambda: f"\"integrity\": \"sha512-{rs(86, AL + '+/')}==\"",
    lambda: f"id = \"{uuid()}\"",
    lambda: f"request_id: {uuid()}",
    lambda: f"sha256:{rs(64, HEX)}",
    lambda: f"<img src=\"data:image/png;base64,{rs(120, AL + '+/')}\">",
    lambda: pem("CERTIFICATE"),
    lambda: pem("PUBLIC KEY", 4),
    lambda: "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----",
    lambda: "DATABASE_URL=postgres://user:password@localhost:5432/app",
    lambda: "DATABASE_URL=postgres://postgres:postgres@localhost/test",
    lambda: "redis://localhost:6379/0",
    lambda: "postgres://app:${DB_PASSWORD}@db:5432/app",
    lambda: "const SECRET_NAME = \"prod/db/credentials\";",
    lambda: "passwordField.setHint(\"Enter password\");",
    lambda: "if not token: raise ValueError(\"token required\")",
    lambda: "def rotate_secret(secret_id: str) -> None:",
    lambda: "sk_live_xxxxxxxxxxxxxxxxxxxxxxxx",
    lambda: "xoxb-your-bot-token",
    lambda: "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    lambda: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    lambda: "api_key = \"<your-api-key>\"",
    lambda: "API_KEY=changeme",
    lambda: "npm_config_registry=https://registry.npmjs.org/",
    lambda: "//registry.npmjs.org/:_authToken=${NPM_TOKEN}",
    lambda: f"version = \"{R.randint(0, 9)}.{R.randint(0, 40)}.{R.randint(0, 99)}\"",
    lambda: f"color: #{rs(6, HEX)};",
    lambda: "token_count = len(tokens)",
    lambda: "max_tokens = 4096",
    lambda: "passport.use(new LocalStrategy(verify));",
    lambda: f"git checkout {rs(7, HEX)}",
    lambda: f"key = \"user:{R.randint(1, 99999)}:profile\"",
    lambda: "AIzaSy...",
    lambda: "secret: \"changeme123456\"",
    lambda: f"font-src 'self' https://fonts.gstatic.com; script-src 'nonce-{rs(22, AL)}'",
]


def labelled(out):
    os.makedirs(f"{out}/pos", exist_ok=True)
    os.makedirs(f"{out}/neg", exist_ok=True)
    labels = {}
    n = 0
    for rep in range(40):
        for kind, gen in SECRETS:
            s = gen()
            t = R.choice(TEMPLATES.get(kind, GENERIC_TEMPLATES))
            body = R.choice(CONTEXT_BEFORE) + t.format(s=s, n=rep) + R.choice(CONTEXT_AFTER)
            name = f"pos/{n:05d}.txt"
            open(f"{out}/{name}", "w").write(body)
            labels[name] = kind
            n += 1
    for rep in range(22):
        for d in DECOYS:
            body = R.choice(CONTEXT_BEFORE) + d() + R.choice(CONTEXT_AFTER)
            name = f"neg/{n:05d}.txt"
            open(f"{out}/{name}", "w").write(body)
            labels[name] = None
            n += 1
    json.dump(labels, open(f"{out}/labels.json", "w"), indent=0)


CODE_LINES = [
    "fn process(input: &[u8]) -> Result<Vec<u8>, Error> {", "    let mut out = Vec::with_capacity(input.len());",
    "    for chunk in input.chunks(4096) {", "        out.extend_from_slice(chunk);", "    }", "    Ok(out)", "}",
    "def handler(event, context):", "    token = event.get('token')", "    return {'statusCode': 200}",
    "const secretName = process.env.SECRET_NAME;", "// TODO: rotate the key every 90 days",
    "password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt())", "    if (!apiKey) throw new Error('missing api key');",
    "import { useState } from 'react';", "SELECT id, name FROM users WHERE id = $1;", "    logger.info(\"request done\")",
]


def synthetic(out, mb):
    os.makedirs(out, exist_ok=True)
    planted = []
    target = mb * 1024 * 1024
    size = 0
    f = 0
    while size < target:
        lines = []
        for i in range(R.randint(200, 6000)):
            if R.random() < 0.002:
                kind, gen = R.choice(SECRETS)
                s = gen()
                t = R.choice(TEMPLATES.get(kind, GENERIC_TEMPLATES))
                text = t.format(s=s, n=i)
                planted.append({"file": f"f{f:05d}.txt", "line": len(lines) + 1, "kind": kind})
                lines.extend(text.split("\n"))
            else:
                lines.append(R.choice(CODE_LINES) + (f" // {rs(R.randint(0, 30), LOW + ' ')}" if R.random() < 0.3 else ""))
        data = "\n".join(lines) + "\n"
        open(f"{out}/f{f:05d}.txt", "w").write(data)
        size += len(data)
        f += 1
    json.dump(planted, open(f"{out}/../planted.json", "w"))


def noseyparker(src, out):
    d = json.load(open(src))
    os.makedirs(f"{out}/pos", exist_ok=True)
    os.makedirs(f"{out}/neg", exist_ok=True)
    labels = {}
    i = 0
    for r in d["rules"]:
        for k in ("positive", "negative"):
            for ex in r[k]:
                name = f"{k[:3]}/{i:04d}.txt"
                i += 1
                open(f"{out}/{name}", "w").write(ex if ex.endswith("\n") else ex + "\n")
                labels[name] = {"rule": r["rule"], "secret": "secret" in r["categories"]} if k == "positive" else None
    json.dump(labels, open(f"{out}/labels.json", "w"))


def history(out, commits):
    """A long history of small edits, the shape of a real project's log."""
    import subprocess
    subprocess.run(["git", "init", "-q", "-b", "main", out], check=True)
    files = {f"src/mod{i:03d}.py": [code_line() for _ in range(R.randint(20, 80))] for i in range(400)}
    names = sorted(files)
    feed = []

    def blob(lines):
        data = ("\n".join(lines) + "\n").encode()
        return b"data %d\n%s\n" % (len(data), data)

    t0 = 1700000000
    for c in range(commits):
        msg = f"change {c}".encode()
        head = (f"commit refs/heads/main\nmark :{c + 1}\n"
                f"committer Bench <bench@example.invalid> {t0 + c * 60} +0000\n").encode()
        head += b"data %d\n%s\n" % (len(msg), msg)
        if c:
            head += f"from :{c}\n".encode()
        feed.append(head)
        touched = names if c == 0 else R.sample(names, R.randint(1, 3))
        for name in touched:
            lines = files[name]
            if c:
                for _ in range(R.randint(1, 4)):
                    i = R.randrange(len(lines) + 1)
                    if R.random() < 0.5 and lines:
                        lines[min(i, len(lines) - 1)] = code_line()
                    else:
                        lines.insert(i, code_line())
                if c % 1000 == 500:
                    lines.append(f'API_TOKEN = "{SECRETS[2][1]()}"')
            feed.append(f"M 100644 inline {name}\n".encode() + blob(lines))
        if c and c % 250 == 0:
            new = f"src/added{c:05d}.py"
            files[new] = [code_line() for _ in range(30)]
            names.append(new)
            feed.append(f"M 100644 inline {new}\n".encode() + blob(files[new]))
        if c and c % 400 == 0:
            old = R.choice(names)
            new = old.replace(".py", f"_r{c}.py")
            feed.append(f"R {old} {new}\n".encode())
            files[new] = files.pop(old)
            names[names.index(old)] = new
        feed.append(b"\n")
    subprocess.run(["git", "-C", out, "fast-import", "--quiet"], input=b"".join(feed), check=True)
    subprocess.run(["git", "-C", out, "reset", "-q", "--hard", "main"], check=True)


def code_line():
    kind = R.random()
    if kind < 0.4:
        return f"    {rs(R.randint(3, 10), LOW)} = {rs(R.randint(3, 10), LOW)}({rs(R.randint(2, 8), LOW)}, {R.randint(0, 999)})"
    if kind < 0.7:
        return f"    # {' '.join(rs(R.randint(2, 8), LOW) for _ in range(R.randint(3, 9)))}"
    if kind < 0.9:
        return f"def {rs(R.randint(4, 12), LOW)}({rs(R.randint(2, 6), LOW)}):"
    return f"    return {rs(R.randint(3, 10), LOW)}.{rs(R.randint(3, 10), LOW)}"


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "labelled":
        labelled(sys.argv[2])
    elif cmd == "synthetic":
        synthetic(sys.argv[2], int(sys.argv[3]))
    elif cmd == "noseyparker":
        noseyparker(sys.argv[2], sys.argv[3])
    elif cmd == "history":
        history(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"unknown command {cmd}")
