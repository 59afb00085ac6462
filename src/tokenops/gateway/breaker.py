"""Per-provider circuit breakers: a provider that fails ``failures`` times in a row (429, 5xx, timeout,
unreachable) is *open* for ``cooldown`` seconds: the router passes over it (a task's cheapest model, a fallback
chain) while another model can serve. After the cooldown one call may try it again (*half-open*): a success
closes the breaker, a failure opens it for another cooldown. Counted in this process (each gateway judges the
providers it calls)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Breakers:
    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self._fails: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def healthy(self, provider: str) -> bool:
        until = self._open_until.get(provider)
        return until is None or self.clock() >= until

    def failed(self, provider: str) -> None:
        n = self._fails.get(provider, 0) + 1
        half_open = provider in self._open_until  # tried again after a cooldown, and failed again
        if n >= self.failures or half_open:
            self._open_until[provider] = self.clock() + self.cooldown
            n = 0
        self._fails[provider] = n

    def succeeded(self, provider: str) -> None:
        self._fails.pop(provider, None)
        self._open_until.pop(provider, None)

    def state(self) -> dict[str, str]:
        """Each provider that has failed lately: ``open`` or ``half-open`` (cooldown over, not yet tried)."""
        return {p: "open" if not self.healthy(p) else "half-open" for p in self._open_until}
