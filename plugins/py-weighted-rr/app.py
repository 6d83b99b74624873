"""py-weighted-rr: smooth weighted round robin, as a Switchyard balancer in Python.

The algorithm is nginx's smooth weighted round robin
(ngx_http_upstream_round_robin.c): on every pick each candidate's current
weight grows by its effective weight, the candidate with the largest current
weight wins (ties to the earlier candidate) and its current weight drops by
the total. Over any window of `sum(weights)` picks each instance is chosen
exactly `weight` times, spread out rather than in bursts (3:1 gives a a b a).

The ranking puts the winner first and the rest by current weight, so when the
host skips the winner (unhealthy, already tried) the next best takes over.

Config (JSON, from the pool's `strategy.config` table):

| key | type | default | meaning |
|---|---|---|---|
| `default_weight` | integer >= 1 | `1` | weight of an instance configured with weight 0 |

Build: `componentize-py -d ../../wit -w balancer-plugin componentize app -o py_weighted_rr.wasm`
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import balancer
from wit_world.imports import host, types


def parse_config(text: str) -> int:
    """The `default_weight` of a config text; raises ValueError with the reason."""
    config = json.loads(text or "{}")
    if not isinstance(config, dict):
        raise ValueError("config must be a JSON object")
    unknown = set(config) - {"default_weight"}
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))}")
    default_weight = config.get("default_weight", 1)
    if not isinstance(default_weight, int) or isinstance(default_weight, bool) or default_weight < 1:
        raise ValueError("`default_weight` must be an integer >= 1")
    return default_weight


class SmoothWeighted:
    """The pure algorithm, testable without a host: weights by id, one `rank` per pick."""

    def __init__(self, default_weight: int = 1):
        self.default_weight = default_weight
        self.weights: dict[int, int] = {}
        self.current: dict[int, int] = {}

    def set_endpoints(self, weights: dict[int, int]) -> None:
        self.weights = {i: (w or self.default_weight) for i, w in weights.items()}
        # Instances that stay keep their position in the cycle.
        self.current = {i: self.current.get(i, 0) for i in self.weights}

    def rank(self, candidates: list[int], limit: int) -> list[int]:
        ids = [i for i in candidates if i in self.weights] or list(candidates)
        total = 0
        for i in ids:
            w = self.weights.get(i, self.default_weight)
            self.current[i] = self.current.get(i, 0) + w
            total += w
        ranked = sorted(ids, key=lambda i: -self.current[i])  # stable: ties keep order
        self.current[ranked[0]] -= total
        return ranked[:limit]


class Balancer(exports.Balancer):
    """The `balancer` export: adapts the WIT calls to `SmoothWeighted`."""

    def __init__(self):
        self.rr = SmoothWeighted()

    def configure(self, config: str) -> balancer.Requirements:
        try:
            self.rr = SmoothWeighted(parse_config(config))
        except ValueError as e:
            raise Err(types.PluginError_InvalidConfig(f"py-weighted-rr: {e}"))
        host.log(host.Level.INFO, f"py-weighted-rr configured: default_weight {self.rr.default_weight}")
        return balancer.Requirements(request_headers=[], observe=False)

    def update(self, version: int, endpoints: list[types.Endpoint]) -> None:
        self.rr.set_endpoints({e.id: e.weight for e in endpoints})

    def pick(self, request: types.RequestInfo, candidates: list[types.EndpointStats], limit: int) -> list[int]:
        if not candidates:
            raise Err(types.PluginError_NoCandidates())
        return self.rr.rank([c.id for c in candidates], limit)

    def observe(self, id: int, success: bool, latency_us: int) -> None:
        pass
