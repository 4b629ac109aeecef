#!/usr/bin/env python3
"""Writes the seed corpora of the structure-aware targets whose inputs are `arbitrary`
values (fuzz/corpus/egress_head, fuzz/corpus/gate_git) from request heads, hook input,
`git log -p` text and tree objects like the tests' fixtures: each seed is the bytes
`arbitrary` decodes into that input (an enum's variant is a little-endian u32 scaled onto
the variants; the last field takes the rest). Run from the repository root."""
import hashlib, os, struct, subprocess

def variant(i, n):
    # arbitrary 1.x: (u64(u32) * n) >> 32 == i
    x = -(-(i << 32) // n)
    return struct.pack('<I', min(x, 0xFFFFFFFF))

def write(target, seeds):
    d = os.path.join('fuzz', 'corpus', target)
    os.makedirs(d, exist_ok=True)
    for data in seeds:
        name = 'seed-' + hashlib.sha1(data).hexdigest()[:16]
        with open(os.path.join(d, name), 'wb') as f:
            f.write(data)

heads = [
    b"GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
    b"GET /scoped HTTP/1.1\r\nHost: api.example.test:443\r\nX-Scope: read\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 5\r\n\r\n",
    b"GET http://plain.test:8080/ok/a HTTP/1.1\r\nHost: plain.test:8080\r\n\r\n",
    b"GET http://plain.test:8080/ok/../a HTTP/1.1\r\n\r\n",
    b"GET /v1/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /v1/ws HTTP/1.1\r\nHost: api.example.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\nConnection: x-scope\r\nX-Scope: read\r\n\r\n",
    b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n",
    b"GET /v1/%2e%2e/admin HTTP/1.1\r\nHost: API.example.test.\r\n\r\n",
]
egress = []
for h in heads:
    # no CONNECT first; Head::Raw (variant 1 of 2)
    egress.append(b'\x00' + variant(1, 2) + h)
    # CONNECT api.example.test:443 first (Part::Pick(0), port index 1), then Head::Raw
    egress.append(b'\x01' + variant(0, 2) + b'\x00' + b'\x01' + variant(1, 2) + h)
write('egress_head', egress)

# gate_git: Input::{Route, Cgi, Updates, GitLog, Tree}
n = 5
gate = [
    variant(0, n) + b'\x00' + b"/app.git/info/refs",
    variant(0, n) + b'\x01' + b"/app.git/git-receive-pack",
    variant(0, n) + b'\x01' + b"/../x.git/git-upload-pack",
    variant(2, n) + b"0000000000000000000000000000000000000000 1f7a7a472abf3dd9643fd615f6da379c4acb3e3a refs/heads/agent/x\n",
    variant(2, n) + b"1f7a7a472abf3dd9643fd615f6da379c4acb3e3a 0000000000000000000000000000000000000000 refs/heads/main\n",
]
log = (b"\0aaaa\n\ndiff --git a/x.txt b/x.txt\nindex 1..2 100644\n--- a/x.txt\n+++ b/x.txt\n"
       b"@@ -2,0 +3,2 @@\n+one\n++++ two\n@@ -9 +10,0 @@\n-gone\n@@ -20,0 +21 @@\n+three\n"
       b"\0bbbb\n\ndiff --git a/y b/y\nnew file mode 100644\n--- /dev/null\n+++ \"b/y\\tz\"\n"
       b"@@ -0,0 +1 @@\n+why\n\\ No newline at end of file\n")
gate.append(variant(3, n) + struct.pack('<H', 4095) + log)
gate.append(variant(3, n) + struct.pack('<H', 7) + log)
try:
    real = subprocess.run(['git', 'log', '-p', '-3', '--format=%x00%H', '--', 'fuzz/Cargo.toml'],
                          capture_output=True, check=True).stdout
    gate.append(variant(3, n) + struct.pack('<H', 4095) + real[:60000])
    tree = subprocess.run(['git', 'cat-file', 'tree', 'HEAD^{tree}'],
                          capture_output=True, check=True).stdout
    gate.append(variant(4, n) + b'\x00' + tree)
except (OSError, subprocess.CalledProcessError):
    pass
write('gate_git', gate)
