"""An MCP client of the official Python SDK for the tests: connects to URL
over streamable HTTP, runs STEPS (a JSON list) and prints one JSON line
per step.

    client.py URL STEPS [OPTIONS]

OPTIONS, a JSON object: "headers" sent with every request (an API key,
say); "oauth" {"client_id", "client_secret", "scope", "issuer"}: the
SDK's OAuth client (client-credentials grant) authorizes the session,
discovering the authorization server from the server's 401 as the MCP
authorization specification says.

Steps: {"op": "tools"} -> every tool name, following nextCursor;
{"op": "page", "cursor": C} -> one page: {"names": [...], "next": C};
{"op": "call", "tool": T, "args": {...}} -> {"text": ..., "error": bool,
"meta": the result's _meta} (a failed call prints {"exception": "..."});
{"op": "resources"} -> every resource URI, following nextCursor;
{"op": "read", "uri": U} -> the resource's text; {"op": "session"} -> the
session id; {"op": "instructions"} -> the
server's instructions.
The sampling callback answers every request with "yes from the client".
"""

import asyncio
import json
import sys

from mcp import ClientSession, types
from mcp.client.auth import TokenStorage
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamablehttp_client


async def sampling(context, params):
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text="yes from the client"),
        model="test",
    )


class Memory(TokenStorage):
    """Tokens and client information kept for the session only."""

    def __init__(self):
        self.tokens, self.client = None, None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


async def main(url, steps, options):
    auth = None
    if "oauth" in options:
        oauth = options["oauth"]
        auth = ClientCredentialsOAuthProvider(
            server_url=url,
            storage=Memory(),
            client_id=oauth["client_id"],
            client_secret=oauth["client_secret"],
            scopes=oauth.get("scope"),
            issuer=oauth.get("issuer"),
        )
    async with streamablehttp_client(url, headers=options.get("headers"), auth=auth) as (
        read,
        write,
        session_id,
    ):
        async with ClientSession(read, write, sampling_callback=sampling) as session:
            hello = await session.initialize()
            for step in steps:
                op = step["op"]
                try:
                    if op == "tools":
                        names, cursor = [], None
                        while True:
                            page = await session.list_tools(cursor=cursor)
                            names += [t.name for t in page.tools]
                            cursor = page.nextCursor
                            if not cursor:
                                break
                        out = names
                    elif op == "page":
                        page = await session.list_tools(cursor=step.get("cursor"))
                        out = {"names": [t.name for t in page.tools], "next": page.nextCursor}
                    elif op == "call":
                        result = await session.call_tool(step["tool"], step.get("args", {}))
                        text = "".join(c.text for c in result.content if c.type == "text")
                        out = {"text": text, "error": result.isError, "meta": result.meta}
                    elif op == "resources":
                        uris, cursor = [], None
                        while True:
                            page = await session.list_resources(cursor=cursor)
                            uris += [str(r.uri) for r in page.resources]
                            cursor = page.nextCursor
                            if not cursor:
                                break
                        out = uris
                    elif op == "read":
                        result = await session.read_resource(step["uri"])
                        out = "".join(getattr(c, "text", "") for c in result.contents)
                    elif op == "session":
                        out = session_id()
                    elif op == "instructions":
                        out = hello.instructions
                    else:
                        out = {"exception": f"unknown op {op}"}
                except Exception as e:  # the test reads what went wrong
                    out = {"exception": f"{type(e).__name__}: {e}"}
                print(json.dumps(out), flush=True)


def causes(error):
    """The exceptions at the leaves of an exception group."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in causes(inner)]
    return [f"{type(error).__name__}: {error}"]


try:
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}))
except BaseException as error:
    # One line first, above the traceback, for a test's failure message.
    print("client failed:", "; ".join(causes(error)), file=sys.stderr, flush=True)
    raise

