"""An MCP client of the official Python SDK 2.x (`mcp.Client`, mode
"auto": `server/discover` first, the 2026-07-28 revision when the server
answers it), for the tests: connects to URL, runs STEPS (a JSON list) and
prints one JSON line per step.

    client_modern.py URL STEPS

Steps: {"op": "version"} -> the protocol revision agreed;
{"op": "tools"} -> every tool name; {"op": "call", "tool": T, "args": {...}}
-> {"text": ..., "error": bool} (a failed call prints {"exception": "..."}).
"""

import asyncio
import json
import sys

from mcp import Client


async def main(url, steps):
    async with Client(url, cache=None) as client:
        for step in steps:
            op = step["op"]
            try:
                if op == "version":
                    out = client.protocol_version
                elif op == "tools":
                    names, cursor = [], None
                    while True:
                        page = await client.list_tools(cursor=cursor)
                        names += [t.name for t in page.tools]
                        cursor = page.next_cursor
                        if not cursor:
                            break
                    out = names
                elif op == "call":
                    result = await client.call_tool(step["tool"], step.get("args", {}))
                    text = "".join(c.text for c in result.content if c.type == "text")
                    out = {"text": text, "error": result.is_error}
                else:
                    out = {"exception": f"unknown op {op}"}
            except Exception as e:  # the test reads what went wrong
                out = {"exception": f"{type(e).__name__}: {e}"}
            print(json.dumps(out), flush=True)


asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
