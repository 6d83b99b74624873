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

Build: `componentize-py -d ../../wit -w balancer-plugin componentize -p . app -o py_weighted_rr.wasm`
(componentize-py from `requirements.txt`). Grant it `capabilities = ["random"]`:
CPython draws random bytes when it starts.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import balancer
from wit_world.imports import host, types

from weighted import SmoothWeighted, parse_config


# componentize-py makes a new `Balancer` for every call it dispatches, so
# state that outlives a call lives in the module.
RR = SmoothWeighted()


class Balancer(exports.Balancer):
    """The `balancer` export: adapts the WIT calls to `SmoothWeighted`."""

    def configure(self, config: str) -> balancer.Requirements:
        global RR
        try:
            RR = SmoothWeighted(parse_config(config))
        except ValueError as e:
            raise Err(types.PluginError_InvalidConfig(f"py-weighted-rr: {e}"))
        host.log(host.Level.INFO, f"py-weighted-rr configured: default_weight {RR.default_weight}")
        return balancer.Requirements(request_headers=[], observe=False)

    def update(self, version: int, endpoints: list[types.Endpoint]) -> None:
        RR.set_endpoints({e.id: e.weight for e in endpoints})

    def pick(self, request: types.RequestInfo, candidates: list[types.EndpointStats], limit: int) -> list[int]:
        if not candidates:
            raise Err(types.PluginError_NoCandidates())
        return RR.rank([c.id for c in candidates], limit)

    def observe(self, id: int, success: bool, latency_us: int) -> None:
        pass
