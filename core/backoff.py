"""The one retry backoff of both daemons: capped exponential, with jitter so that a fleet of gateways (or receivers)
that lost the same broker does not come back in step."""

from __future__ import annotations

import random


class Backoff:
    """The n-th delay is uniform in [d/2, d], d = min(max_s, min_s * 2**n); reset() after a success."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        """The longest delay of the given attempt (0 is the first)."""
        return min(self.max_s, self.min_s * 2.0 ** min(attempt, 30))

    def next_delay(self) -> float:
        ceiling = self.ceiling(self.attempt)
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
