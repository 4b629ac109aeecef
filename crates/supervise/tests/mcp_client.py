"""Drives the supervise MCP server with the official MCP Python SDK.

usage: mcp_client.py URL MODE   (MODE: legacy = initialize handshake, auto = discover first)

Prints one JSON object per step on stdout. The operator's side (approve, modify, reject)
is played by the Rust test, which decides by the keyword in each justification.
"""

import asyncio
import json
import os
import sys
import time

from mcp import Client
from mcp.shared.exceptions import MCPError

URL, MODE = sys.argv[1], sys.argv[2]

BASE = "log: blocks\nroutes:\n  - host: api.example.com\n"
# What is live once pypi is approved and the crates proposal is approved as the operator edited
# it: an egress-allow keeps every live route (only egress-block removes one).
LIVE = BASE + "  - host: pypi.org\n  - host: index.crates.io\n"


START = time.monotonic()


def out(step, **kw):
    print(json.dumps({"step": step, **kw}), flush=True)
    print(f"{time.monotonic() - START:7.3f}s {step}", file=sys.stderr, flush=True)


def text_of(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def call(client, step, name, args):
    try:
        r = await client.call_tool(name, args)
    except MCPError as e:
        out(step, error_code=e.error.code, message=e.error.message)
        return None
    s = r.structured_content or {}
    out(step, status=s.get("status"), is_error=bool(r.is_error), id=s.get("id"), text=text_of(r))
    return s


async def main():
    async with Client(URL, mode=MODE) as client:
        tools = await client.list_tools()
        out("list_tools", names=sorted(t.name for t in tools.tools))
        r = await client.call_tool("list-egress-routes", {})
        out("list_routes", text=text_of(r))
        if MODE != "legacy":
            await call(client, "allow", "egress-allow",
                       {"routes_yaml": LIVE + "  - host: later.example\n  - host: auto.example\n",
                        "justification": "APPROVE auto"})
            return
        await call(client, "allow", "egress-allow",
                   {"routes_yaml": BASE + "  - host: pypi.org\n", "justification": "APPROVE pypi"})
        await call(client, "modify", "egress-allow",
                   {"routes_yaml": BASE + "  - host: pypi.org\n  - host: crates.io\n", "justification": "MODIFY crates"})
        await call(client, "reject", "egress-block",
                   {"routes_yaml": "log: blocks\nroutes: []\n", "justification": "REJECT all"})
        await call(client, "token", "egress-token-allow",
                   {"host": "api.example.com", "token_name": "API_TOKEN", "justification": "APPROVE token"})
        await call(client, "gitleaks", "gitleaks-allow",
                   {"fingerprint": "0a1b:tests/fixture.py:generic-api-key:3", "justification": "APPROVE fixture"})
        s = await call(client, "later", "egress-allow",
                       {"routes_yaml": LIVE + "  - host: later.example\n", "justification": "LATER please"})
        # tell the operator (the Rust test) that the agent got 'pending' and now long-polls
        open(os.environ["PENDING_MARKER"], "w").close()
        await call(client, "status", "proposal-status", {"id": s["id"], "wait_seconds": 20})
        await call(client, "empty", "egress-allow", {"routes_yaml": "", "justification": "x"})
        await call(client, "no_justification", "egress-allow", {"routes_yaml": LIVE + "  - host: x.example\n"})
        await call(client, "log_change", "egress-allow",
                   {"routes_yaml": "log: off\nroutes:\n  - host: x.example\n", "justification": "x"})
        await call(client, "unknown", "run-shell", {})


asyncio.run(main())
print(f"{time.monotonic() - START:7.3f}s closed", file=sys.stderr, flush=True)
