"""The decision of py-agent-guard, apart from the WIT bindings (tested natively)."""

import json


class Config:
    """The plugin's config: which User-Agents are refused, and the tag header."""

    def __init__(self, deny_agents, tag_header):
        self.deny_agents = deny_agents
        self.tag_header = tag_header


def parse_config(text):
    """Parses the JSON config; ValueError names the key and the reason."""
    raw = json.loads(text or "{}")
    if not isinstance(raw, dict):
        raise ValueError("the config is not a table")
    unknown = sorted(set(raw) - {"deny_agents", "tag_header"})
    if unknown:
        raise ValueError(f"unknown key `{unknown[0]}` (keys: deny_agents, tag_header)")
    deny = raw.get("deny_agents", [])
    if not isinstance(deny, list) or not all(isinstance(d, str) and d for d in deny):
        raise ValueError("deny_agents: a list of non-empty strings")
    tag = raw.get("tag_header", "x-agent-checked")
    if not isinstance(tag, str) or not tag or tag.lower() != tag or " " in tag:
        raise ValueError("tag_header: a lower-case header name")
    return Config([d.lower() for d in deny], tag)


def refused_agent(config, user_agent):
    """The deny_agents entry `user_agent` contains (case-insensitive), or None."""
    agent = (user_agent or "").lower()
    return next((d for d in config.deny_agents if d in agent), None)
