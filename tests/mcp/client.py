"""An MCP client of the official Python SDK for the tests: connects to URL
over streamable HTTP, runs STEPS (a JSON list) and prints one JSON line
per step.

    client.py URL STEPS [OPTIONS]

OPTIONS, a JSON object: "headers" sent with every request (an API key,
say); "oauth" {"client_id", "client_secret", "scope", "issuer"}: the
SDK's OAuth client (client-credentials grant) authorizes the session,
discovering the authorization server from the server's 401 as the MCP
authorization specification says; "oauth" {"flow": "code"}: the SDK's
OAuth client registers itself with the authorization server (RFC 7591)
and signs the user in by the authorization-code grant with PKCE, the
user's browser played by `sign_in` (tests/oidc/provider.mjs completes
its pages), stepping up when a call needs more scopes.

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
from urllib.parse import parse_qs, urlsplit

import httpx
from mcp import ClientSession, types
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.auth import OAuthClientMetadata

# Where the authorization server sends the browser back with the code;
# nothing listens there: the browser stops at the redirect.
REDIRECT_URI = "http://127.0.0.1:9/callback"


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


class Browser:
    """The user's browser, headless: follows the authorization URL's
    redirects through the provider's login and consent pages (cookies
    kept) to the redirect URI, and hands its code and state back."""

    def __init__(self):
        self.codes = asyncio.Queue()

    async def sign_in(self, authorization_url):
        async with httpx.AsyncClient() as browser:
            url = authorization_url
            while not url.startswith(REDIRECT_URI):
                response = await browser.get(url)
                if response.status_code not in (302, 303):
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
                url = str(response.url.join(response.headers["location"]))
        query = parse_qs(urlsplit(url).query)
        if "code" not in query:
            raise RuntimeError(f"no code in {url}")
        await self.codes.put((query["code"][0], query.get("state", [None])[0]))

    async def callback(self):
        return await self.codes.get()


async def main(url, steps, options):
    auth = None
    oauth = options.get("oauth")
    if oauth and oauth.get("flow") == "code":
        browser = Browser()
        auth = OAuthClientProvider(
            server_url=url,
            client_metadata=OAuthClientMetadata(
                client_name="switchyard tests",
                redirect_uris=[REDIRECT_URI],
                grant_types=["authorization_code"],
                response_types=["code"],
                token_endpoint_auth_method="none",
            ),
            storage=Memory(),
            redirect_handler=browser.sign_in,
            callback_handler=browser.callback,
        )
    elif oauth:
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

