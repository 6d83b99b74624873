"""The algorithm of py-weighted-rr, free of bindings so it runs (and is
unit-tested) under plain CPython: `python3 -m unittest` in this directory."""

import json


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
