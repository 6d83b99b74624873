"""py-agent-guard: refuse requests from listed User-Agents, as a Switchyard filter in Python.

A filter plugin (WIT `filter-plugin`, 0.1.3): a request whose `User-Agent`
contains one of `deny_agents` (case-insensitive: "python-requests", "bot")
is answered with 403 and a JSON error naming the rule, before any upstream
is asked; every other request goes on with `tag_header: 1` added, so the
upstream knows it was checked. Like nginx's `if ($http_user_agent ~* …) {
return 403; }`, as a sandboxed plugin.

Config (JSON, from the filter's `plugin.config` table):

| key | type | default | meaning |
|---|---|---|---|
| `deny_agents` | list of strings | `[]` | substrings of refused User-Agents |
| `tag_header` | string | `"x-agent-checked"` | header added to requests that pass |

Build: `componentize-py -d ../../wit -w filter-plugin componentize -p . app -o py_agent_guard.wasm`
(componentize-py from `requirements.txt`). Grant it `capabilities = ["random"]`:
CPython draws random bytes when it starts.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import filter as f
from wit_world.imports import types

from guard import parse_config, refused_agent

# componentize-py makes a new `Filter` for every call it dispatches, so
# state that outlives a call lives in the module.
CONFIG = parse_config("{}")


class Filter(exports.Filter):
    """The `filter` export: adapts the WIT calls to `guard`."""

    def configure(self, config: str) -> f.FilterNeeds:
        global CONFIG
        try:
            CONFIG = parse_config(config)
        except ValueError as e:
            raise Err(types.PluginError_InvalidConfig(f"py-agent-guard: {e}"))
        return f.FilterNeeds(
            request_headers=["user-agent"],
            on_response=False,
            response_headers=[],
            mcp_calls=False,
            mcp_results=False,
            request_body_bytes=0,
            response_body_bytes=0,
        )

    def on_request(self, request: f.HttpRequest) -> f.RequestVerdict:
        agent = next((v for n, v in request.headers if n == "user-agent"), "")
        rule = refused_agent(CONFIG, agent)
        if rule is not None:
            body = json.dumps({"error": "forbidden_agent", "rule": rule})
            return f.RequestVerdict_Respond(
                f.DirectResponse(
                    status=403,
                    headers=[("content-type", "application/json")],
                    body=body.encode(),
                )
            )
        change = f.RequestChange(path=None, set_headers=[(CONFIG.tag_header, "1")], remove_headers=[])
        return f.RequestVerdict_Change(change)

    def on_response(self, request: f.HttpRequest, response: f.HttpResponse) -> f.ResponseVerdict:
        return f.ResponseVerdict_Continue()

    def on_mcp_call(self, call: f.McpCall) -> f.McpCallVerdict:
        return f.McpCallVerdict_Continue()

    def on_mcp_result(self, call: f.McpCall, result: str) -> f.McpResultVerdict:
        return f.McpResultVerdict_Continue()
