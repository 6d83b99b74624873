"""An MCP server of the official Python SDK 2.x (MCPServer), which speaks
the 2026-07-28 revision (server/discover, no session) besides the older
ones: streamable HTTP at /mcp on 127.0.0.1:PORT, JSON answers.

    server_modern.py PORT NAME

Tools: `echo(text)` -> "NAME: text" (every server has it) and
`NAME_only()` -> "NAME".
"""

import sys

from mcp.server.mcpserver import MCPServer

port, name = int(sys.argv[1]), sys.argv[2]
server = MCPServer(name, instructions=f"the {name} server")


@server.tool()
def echo(text: str) -> str:
    """Returns `text` with the server's name."""
    return f"{name}: {text}"


def only() -> str:
    return name


server.add_tool(only, name=f"{name}_only", description="The server's name.")

server.run(transport="streamable-http", host="127.0.0.1", port=port, json_response=True)
