"""An MCP server of the official Python SDK (FastMCP) over stdio, for the
managed-upstream tests: Switchyard runs it as a pool's process with
`transport = "stdio"`.

Tools: `echo(text)` -> "stdio: text"; `pid()` -> its process id;
`crash()` ends the process before it answers.
"""

import os

from mcp.server.fastmcp import FastMCP

server = FastMCP("stdio-echo", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Returns `text`."""
    return f"stdio: {text}"


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """Ends the process abruptly."""
    os._exit(1)


server.run(transport="stdio")
