"""Live policy state: what every gateway process must see the same while it runs.

    PolicyState (async; chosen by the config's ``state:``)
    ├── budget and grant counters: reserve (all claims or none), settle, read, seed-if-absent
    ├── rate-limit buckets on wall-clock time: take (all or none), adjust
    └── once-only markers: an alert fired, a pending approval request

Two implementations: :class:`InMemoryState` (one process; ``state: memory``) and
:class:`tokenops.policy.redis_state.RedisState` (``state: redis://…``, atomic Lua scripts, shared by every
gateway on that Redis). Every operation that decides admission is atomic: :meth:`PolicyState.reserve` checks
every budget of a call and reserves on all of them, or on none.

Counters are keyed by ``(budget, period start)``: a period rolls over by itself, the first call of a new period
finds a fresh counter. ``spent`` is settled money (or tokens); ``reserved`` is the maximum cost of calls in
flight. A counter is **seeded** from the ledger only if it does not exist yet (a restarting replica never
overwrites what the others have counted). A reservation that is never settled (its process died) stops
counting after its ``ttl``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from tokenops.money import ZERO

CounterKey = tuple[str, str]  # (counter name: a budget's or a grant's, period start ISO)
BucketKey = tuple[str, str, str]  # (limit name, subject, measure)


@dataclass
class Counter:
    spent: Decimal = ZERO
    reserved: Decimal = ZERO

    @property
    def committed(self) -> Decimal:
        return self.spent + self.reserved


@dataclass(frozen=True)
class Claim:
    """One budget's part of a reservation: the counter, the amount, and the limit admission is checked against
    (``None``: counted but never refused, a soft budget)."""

    key: CounterKey
    amount: Decimal
    limit: Decimal | None


@dataclass(frozen=True)
class BucketWant:
    """Take ``amount`` from a token bucket of ``capacity`` per ``period`` seconds."""

    key: BucketKey
    amount: Decimal
    capacity: Decimal
    period: float


@dataclass(frozen=True)
class BucketView:
    """A bucket after a decision: what is left, and how long until it is full again."""

    capacity: Decimal
    level: Decimal
    period: float

    def seconds_until(self, amount: Decimal) -> float:
        missing = amount - self.level
        if missing <= 0:
            return 0.0
        return float(missing / self.capacity) * self.period


class StateUnavailable(Exception):
    """The shared state cannot be reached (Redis down): the caller decides between failing closed and open."""


class StateSchemaMismatch(StateUnavailable):
    """The shared state holds keys of another TokenOps state layout under this prefix (never failed open)."""


class CountersMissing(StateUnavailable):
    """``reserve(require_seeded=True)`` found counters that do not exist (a new period, a Redis that restarted
    or evicted them): seed them from the ledger, then reserve again."""

    def __init__(self, keys: list[CounterKey]):
        super().__init__(f"counters not seeded: {', '.join(f'{n}@{p}' for n, p in keys)}")
        self.keys = keys


class PolicyState(Protocol):
    """What the policy engine asks of its state (see the module docstring)."""

    name: str  # "memory" or the Redis URL without its password

    async def reserve(self, reservation_id: str, claims: Sequence[Claim], ttl: float, *,
                      require_seeded: bool = False) -> CounterKey | None:  # fmt: skip
        """Reserve all claims atomically; returns the key of a full counter (and reserves nothing). With
        ``require_seeded``, raise :class:`CountersMissing` (reserving nothing) if a counter does not exist yet."""

    async def settle(self, reservation_id: str, actual: Mapping[CounterKey, Decimal]) -> None:
        """Replace the reservation by the real amounts (0 for a failed call); a no-op for an unknown id."""

    async def counters(self, keys: Sequence[CounterKey]) -> list[Counter]:
        """Several counters read at one moment."""

    async def seed(self, key: CounterKey, spent: Decimal, *, expires_at: float | None = None) -> None:
        """Set a counter's spend from the ledger, only if the counter does not exist yet."""

    async def raise_spent(self, key: CounterKey, spent: Decimal) -> None:
        """Raise a counter's spend to at least ``spent`` (a grant's spend as the ledger knows it)."""

    async def take(self, wants: Sequence[BucketWant]) -> tuple[bool, float, list[BucketView]]:
        """Take from every bucket or none; (admitted, seconds to wait when refused, the buckets after)."""

    async def adjust(self, key: BucketKey, delta: Decimal) -> None:
        """Give back (positive) or take more (negative) once the real usage is known; may go below zero."""

    async def claim(self, name: str, value: str, ttl: float) -> str:
        """Set ``name`` to ``value`` if it is not set; returns the value that holds (an earlier one, or ``value``)."""

    async def release(self, name: str) -> None:
        """Forget a claim."""

    def prune(self, keep: Callable[[CounterKey], bool]) -> None:
        """Drop counters of finished periods and full buckets (memory only: Redis keys expire by themselves)."""

    async def ping(self) -> None:
        """Raise :class:`StateUnavailable` if the state cannot be reached."""

    async def health(self) -> tuple[str | None, str | None]:
        """For /readyz: (a problem that makes the gateway unready, a warning that does not); both None if well."""

    async def close(self) -> None: ...


@dataclass
class _Bucket:
    capacity: Decimal
    period: float
    level: Decimal
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.level = min(self.capacity, self.level + self.capacity * Decimal(elapsed / self.period))
        self.updated = now


@dataclass
class _Reservation:
    claims: tuple[Claim, ...]
    expires: float


@dataclass
class InMemoryState:
    """The state of one process, guarded by one lock (each critical section is a few dict operations).

    ``clock`` is wall-clock seconds (buckets refill by it; reservations expire by it)."""

    clock: Callable[[], float] = time.time
    name: str = "memory"
    counters_: dict[CounterKey, Counter] = field(default_factory=dict)
    reservations: dict[str, _Reservation] = field(default_factory=dict)
    buckets: dict[BucketKey, _Bucket] = field(default_factory=dict)
    claims_: dict[str, tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- counters -------------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        for rid in [r for r, res in self.reservations.items() if res.expires <= now]:
            self._release(rid, {})

    def _release(self, reservation_id: str, actual: Mapping[CounterKey, Decimal]) -> None:
        res = self.reservations.pop(reservation_id, None)
        if res is None:
            return
        for c in res.claims:
            counter = self.counters_.setdefault(c.key, Counter())
            counter.reserved -= c.amount
            counter.spent += actual.get(c.key, ZERO)

    async def reserve(self, reservation_id: str, claims: Sequence[Claim], ttl: float, *,
                      require_seeded: bool = False) -> CounterKey | None:  # fmt: skip
        now = self.clock()
        with self._lock:
            self._expire(now)
            missing = [c.key for c in claims if c.key not in self.counters_]
            if require_seeded and missing:
                raise CountersMissing(missing)
            for c in claims:
                counter = self.counters_.get(c.key)
                committed = counter.committed if counter else ZERO
                # Admit while something is left: a hard budget ends at most one call's maximum cost over.
                if c.limit is not None and committed >= c.limit:
                    return c.key
            for c in claims:
                self.counters_.setdefault(c.key, Counter()).reserved += c.amount
            self.reservations[reservation_id] = _Reservation(tuple(claims), now + ttl)
            return None

    async def settle(self, reservation_id: str, actual: Mapping[CounterKey, Decimal]) -> None:
        with self._lock:
            self._release(reservation_id, actual)

    async def counters(self, keys: Sequence[CounterKey]) -> list[Counter]:
        with self._lock:
            return [Counter(c.spent, c.reserved) if (c := self.counters_.get(k)) else Counter() for k in keys]

    async def seed(self, key: CounterKey, spent: Decimal, *, expires_at: float | None = None) -> None:
        with self._lock:
            self.counters_.setdefault(key, Counter(spent=spent))

    async def raise_spent(self, key: CounterKey, spent: Decimal) -> None:
        with self._lock:
            counter = self.counters_.setdefault(key, Counter())
            counter.spent = max(counter.spent, spent)

    # --- buckets --------------------------------------------------------------------------------
    async def take(self, wants: Sequence[BucketWant]) -> tuple[bool, float, list[BucketView]]:
        now = self.clock()
        with self._lock:
            buckets = []
            wait = 0.0
            for w in wants:
                b = self.buckets.get(w.key)
                if b is None or b.capacity != w.capacity:
                    b = self.buckets[w.key] = _Bucket(w.capacity, w.period, w.capacity, now)
                b.refill(now)
                buckets.append(b)
                # a single request bigger than the bucket is admitted when the bucket is full (else never)
                need = min(w.amount, w.capacity)
                if b.level < need:
                    wait = max(wait, BucketView(b.capacity, b.level, b.period).seconds_until(need))
            if wait <= 0:
                for w, b in zip(wants, buckets, strict=True):
                    b.level -= w.amount
            return wait <= 0, wait, [BucketView(b.capacity, b.level, b.period) for b in buckets]

    async def adjust(self, key: BucketKey, delta: Decimal) -> None:
        with self._lock:
            b = self.buckets.get(key)
            if b is not None:
                b.level = min(b.capacity, b.level + delta)

    # --- claims ---------------------------------------------------------------------------------
    async def claim(self, name: str, value: str, ttl: float) -> str:
        now = self.clock()
        with self._lock:
            held = self.claims_.get(name)
            if held is not None and held[1] > now:
                return held[0]
            self.claims_[name] = (value, now + ttl)
            return value

    async def release(self, name: str) -> None:
        with self._lock:
            self.claims_.pop(name, None)

    # --- upkeep ---------------------------------------------------------------------------------
    def prune(self, keep: Callable[[CounterKey], bool]) -> None:
        """Drop counters of finished periods, full buckets and expired claims (memory stays flat over months)."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            held = {c.key for r in self.reservations.values() for c in r.claims}
            for key in [k for k in self.counters_ if not keep(k) and k not in held]:
                del self.counters_[key]
            for bkey in [k for k, b in self.buckets.items() if now - b.updated >= b.period]:
                del self.buckets[bkey]
            for name in [n for n, (_, until) in self.claims_.items() if until <= now]:
                del self.claims_[name]

    async def ping(self) -> None:
        return None

    async def health(self) -> tuple[str | None, str | None]:
        return None, None

    async def close(self) -> None:
        return None


def open_state(url: str, options: Any = None) -> PolicyState:
    """The state the config's ``state:`` names: ``memory`` or ``redis://host:port/db``; ``options`` is the config's
    ``state_options`` (key prefix, what to do when Redis is unavailable, timeouts)."""
    if url == "memory":
        return InMemoryState()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tokenops.policy.redis_state import RedisState, resilient

        return resilient(RedisState(url, options), options)
    raise ValueError(f"unknown state {url!r}: expected memory or redis://host:port/db")
