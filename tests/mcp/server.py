"""An MCP server of the official Python SDK (FastMCP) for the tests:
streamable HTTP at /mcp on 127.0.0.1:PORT, one tool, `echo`."""

import sys

from mcp.server.fastmcp import FastMCP

server = FastMCP("echo", host="127.0.0.1", port=int(sys.argv[1]), log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Returns `text`."""
    return text


server.run(transport="streamable-http")
