"""An MCP server of the official Python SDK (FastMCP) for the tests:
streamable HTTP at /mcp on 127.0.0.1:PORT.

    server.py PORT [--name NAME] [--stateless] [--json] [--answer TEXT]
                   [--page-size N] [--log FILE]

Tools (NAME defaults to "echo"):
- `echo(text)` -> "NAME: text" (every server has it: the clashing name);
- `NAME_only()` -> "NAME";
- `calls()` -> how many `echo` calls this process served;
- `answer()` -> the --answer text (read-only: `readOnlyHint`);
- `record(tag)` and `lookup(tag)` append "NAME tag" to --log, then end the
  process abruptly (the connection drops before any answer) when the log
  had no line for `tag` yet; `lookup` is read-only, `record` is not;
- `slow(seconds)` -> "NAME slept", after that long;
- `ask_client(question)` -> what the client's sampling callback answered.

Answers are SSE streams unless --json; --stateless keeps no session;
--page-size N pages tools/list N tools at a time (cursor = offset).
"""

import argparse
import asyncio
import os

from mcp import types
from mcp.server.fastmcp import Context, FastMCP

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--name", default="echo")
parser.add_argument("--stateless", action="store_true")
parser.add_argument("--json", action="store_true")
parser.add_argument("--answer", default="42")
parser.add_argument("--page-size", type=int, default=0)
parser.add_argument("--log", default=os.devnull)
args = parser.parse_args()

server = FastMCP(
    args.name,
    host="127.0.0.1",
    port=args.port,
    log_level="WARNING",
    stateless_http=args.stateless,
    json_response=args.json,
    instructions=f"the {args.name} server",
)
served = {"echo": 0}
read_only = types.ToolAnnotations(readOnlyHint=True)


@server.tool()
def echo(text: str) -> str:
    """Returns `text` with the server's name."""
    served["echo"] += 1
    return f"{args.name}: {text}"


def only() -> str:
    return args.name


server.add_tool(only, name=f"{args.name}_only", description="The server's name.")


@server.tool()
def calls() -> int:
    """How many echo calls this process served."""
    return served["echo"]


@server.tool(annotations=read_only)
def answer() -> str:
    """The configured answer."""
    return args.answer


def log_and_maybe_crash(tag: str) -> str:
    seen = os.path.exists(args.log) and any(
        line.split(" ", 1)[1].strip() == tag for line in open(args.log) if " " in line
    )
    with open(args.log, "a") as log:
        log.write(f"{args.name} {tag}\n")
    if not seen:
        os._exit(1)
    return f"{args.name} did {tag}"


@server.tool()
def record(tag: str) -> str:
    """Records `tag` (a side effect: not idempotent)."""
    return log_and_maybe_crash(tag)


@server.tool(annotations=read_only)
def lookup(tag: str) -> str:
    """Looks `tag` up (read-only)."""
    return log_and_maybe_crash(tag)


slow_calls = {"now": 0, "peak": 0}


@server.tool()
async def slow(seconds: float) -> str:
    """Answers after `seconds`."""
    slow_calls["now"] += 1
    slow_calls["peak"] = max(slow_calls["peak"], slow_calls["now"])
    try:
        await asyncio.sleep(seconds)
    finally:
        slow_calls["now"] -= 1
    return f"{args.name} slept"


@server.tool()
def peak() -> int:
    """The most `slow` calls this process ran at once."""
    return slow_calls["peak"]


@server.tool()
async def ask_client(question: str, ctx: Context) -> str:
    """Asks the client's model (sampling) and returns its answer."""
    result = await ctx.session.create_message(
        messages=[
            types.SamplingMessage(
                role="user", content=types.TextContent(type="text", text=question)
            )
        ],
        max_tokens=10,
    )
    return f"{args.name} heard: {result.content.text}"


if args.page_size:

    @server._mcp_server.list_tools()
    async def paged(request: types.ListToolsRequest) -> types.ListToolsResult:
        tools = await server.list_tools()
        cursor = request.params.cursor if request.params else None
        start = int(cursor) if cursor else 0
        end = start + args.page_size
        return types.ListToolsResult(
            tools=tools[start:end], nextCursor=str(end) if end < len(tools) else None
        )


server.run(transport="streamable-http")
