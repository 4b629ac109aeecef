#!/usr/bin/env python3
"""A very small terminal agent, to show bot-bottle's generic provider (examples/generic.yaml).

It reads what bot-bottle writes for it -- its MCP servers (~/.config/mini-agent/mcp.json)
and its standing instructions (~/.config/mini-agent/AGENTS.md) -- offers the MCP servers'
tools to a model (OpenAI Responses API, streamed) and runs the calls the model makes until
it answers. Its key is OPENAI_API_KEY: inside a bottle a placeholder, which egress replaces
with the real key on the way to the model API. Standard library only.
"""
import json
import os
import sys
import urllib.request

HOME = os.environ["HOME"]
CONFIG = os.path.join(HOME, ".config", "mini-agent")
API = os.environ.get("MINI_AGENT_URL", "https://api.openai.com/v1/responses")
MODEL = os.environ.get("MINI_AGENT_MODEL", "gpt-4.1-mini")
KEY = os.environ["OPENAI_API_KEY"]
# MCP servers are on the bottle's loopback: never through the proxy.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Mcp:
    """One MCP server over streamable HTTP (JSON responses)."""

    def __init__(self, url):
        self.url, self.session, self.next_id = url, None, 1
        self.call("initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
                                 "clientInfo": {"name": "mini-agent", "version": "1"}})
        self.notify("notifications/initialized")

    def post(self, msg):
        headers = {"content-type": "application/json",
                   "accept": "application/json, text/event-stream"}
        if self.session:
            headers["mcp-session-id"] = self.session
        req = urllib.request.Request(self.url, data=json.dumps(msg).encode(), headers=headers,
                                     method="POST")
        with DIRECT.open(req, timeout=120) as r:
            self.session = r.headers.get("mcp-session-id") or self.session
            text = r.read().decode()
        return json.loads(text) if text.strip() else None

    def notify(self, method):
        self.post({"jsonrpc": "2.0", "method": method, "params": {}})

    def call(self, method, params):
        self.next_id += 1
        reply = self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                           "params": params})
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]


def model(items, tools):
    body = {"model": MODEL, "stream": True, "input": items, "tools": tools}
    req = urllib.request.Request(API, data=json.dumps(body).encode(), method="POST", headers={
        "content-type": "application/json", "authorization": "Bearer " + KEY})
    # Through HTTPS_PROXY (egress), trusting the bottle CA from SSL_CERT_FILE.
    with urllib.request.urlopen(req, timeout=300) as r:
        events = [json.loads(line[5:]) for line in r.read().decode().splitlines()
                  if line.startswith("data:")]
    done = [e for e in events if e.get("type") == "response.completed"]
    return done[0]["response"]["output"]


def main():
    with open(os.path.join(CONFIG, "mcp.json")) as f:
        servers = {name: Mcp(s["url"]) for name, s in json.load(f)["servers"].items()}
    owner, tools = {}, []
    for name, server in servers.items():
        for tool in server.call("tools/list", {})["tools"]:
            owner[tool["name"]] = server
            tools.append({"type": "function", "name": tool["name"],
                          "description": tool.get("description", ""),
                          "parameters": tool.get("inputSchema") or {"type": "object"}})
    instructions = ""
    if os.path.exists(os.path.join(CONFIG, "AGENTS.md")):
        with open(os.path.join(CONFIG, "AGENTS.md")) as f:
            instructions = f.read()
    items = [{"role": "system", "content": instructions},
             {"role": "user", "content": " ".join(sys.argv[1:]) or "What can you reach?"}]
    for _ in range(16):
        output = model(items, tools)
        calls = [o for o in output if o.get("type") == "function_call"]
        if not calls:
            for o in output:
                for c in o.get("content", []):
                    if c.get("type") == "output_text":
                        print(c["text"])
            return 0
        for call in calls:
            args = json.loads(call.get("arguments") or "{}")
            result = owner[call["name"]].call("tools/call", {"name": call["name"],
                                                             "arguments": args})
            text = "".join(c.get("text", "") for c in result.get("content", []))
            items += [call, {"type": "function_call_output", "call_id": call["call_id"],
                             "output": text}]
    print("mini-agent: gave up after 16 model turns", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
