"""Live policy state: budget counters with reservations, and rate-limit buckets.

This is an interface with an in-process implementation; a Redis implementation (atomic Lua scripts) lets
several gateways share it. Every operation that decides admission is atomic: :meth:`reserve` checks every
budget of a call and reserves on all of them, or on none.

Counters are keyed by ``(budget name, period start)``, so a period rolls over by itself: the first call of a
new period finds a fresh counter. ``spent`` is settled money (or tokens); ``reserved`` is the maximum cost of
calls in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from tokenops.money import ZERO

CounterKey = tuple[str, str]  # (budget name, period start ISO)


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


@dataclass
class Reservation:
    id: str
    claims: tuple[Claim, ...]
    settled: bool = False


class BudgetState(Protocol):
    def reserve(self, reservation_id: str, claims: Sequence[Claim]) -> CounterKey | None:
        """Reserve all claims atomically; returns the key of a budget that is full (and reserves nothing)."""

    def settle(self, reservation_id: str, actual: dict[CounterKey, Decimal]) -> None:
        """Replace the reservation by the real amounts (0 for a failed call)."""

    def counter(self, key: CounterKey) -> Counter: ...

    def snapshot(self, keys: Sequence[CounterKey]) -> list[Counter]: ...

    def seed(self, key: CounterKey, spent: Decimal) -> None:
        """Set a counter's settled amount from the ledger (at start, or for a new or changed budget)."""


@dataclass
class InMemoryState:
    """Counters in this process, guarded by one lock (the critical sections are a few dict operations)."""

    counters: dict[CounterKey, Counter] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reserve(self, reservation_id: str, claims: Sequence[Claim]) -> CounterKey | None:
        with self._lock:
            for c in claims:
                counter = self.counters.get(c.key)
                committed = counter.committed if counter else ZERO
                # Admit while something is left: a hard budget ends at most one call's maximum cost over.
                if c.limit is not None and committed >= c.limit:
                    return c.key
            for c in claims:
                self.counters.setdefault(c.key, Counter()).reserved += c.amount
            self.reservations[reservation_id] = Reservation(reservation_id, tuple(claims))
            return None

    def settle(self, reservation_id: str, actual: dict[CounterKey, Decimal]) -> None:
        with self._lock:
            res = self.reservations.pop(reservation_id, None)
            if res is None:
                return
            for c in res.claims:
                counter = self.counters.setdefault(c.key, Counter())
                counter.reserved -= c.amount
                counter.spent += actual.get(c.key, ZERO)

    def counter(self, key: CounterKey) -> Counter:
        with self._lock:
            c = self.counters.get(key)
            return Counter(c.spent, c.reserved) if c else Counter()

    def snapshot(self, keys: Sequence[CounterKey]) -> list[Counter]:
        """Several counters read at one moment (one lock for all)."""
        with self._lock:
            return [Counter(c.spent, c.reserved) if (c := self.counters.get(k)) else Counter() for k in keys]

    def seed(self, key: CounterKey, spent: Decimal) -> None:
        with self._lock:
            self.counters.setdefault(key, Counter()).spent = spent

    def forget(self, keep: Callable[[CounterKey], bool]) -> None:
        """Drop counters of finished periods (memory stays flat over months of uptime)."""
        with self._lock:
            for key in [k for k in self.counters if not keep(k)]:
                if not any(c.key == key for r in self.reservations.values() for c in r.claims):
                    del self.counters[key]


@dataclass
class Bucket:
    """A token bucket: ``capacity`` per ``period`` seconds, refilled continuously."""

    capacity: Decimal
    period: float
    level: Decimal
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.level = min(self.capacity, self.level + self.capacity * Decimal(elapsed / self.period))
        self.updated = now

    def seconds_until(self, amount: Decimal) -> float:
        missing = amount - self.level
        if missing <= 0:
            return 0.0
        return float(missing / self.capacity) * self.period


@dataclass
class RateState:
    """Rate-limit buckets for this process."""

    clock: Callable[[], float] = time.monotonic
    buckets: dict[tuple[str, str, str], Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, wants: Sequence[tuple[tuple[str, str, str], Decimal, Decimal, float]]) -> tuple[bool, float, list[Bucket]]:
        """Take ``amount`` from each ``(key, amount, capacity, period)`` bucket, all or none.

        Returns (admitted, seconds to wait when refused, the buckets after the decision).
        """
        now = self.clock()
        with self._lock:
            buckets = []
            wait = 0.0
            for key, amount, capacity, period in wants:
                b = self.buckets.get(key)
                if b is None or b.capacity != capacity:
                    b = self.buckets[key] = Bucket(capacity, period, capacity, now)
                b.refill(now)
                buckets.append(b)
                # a single request bigger than the bucket is admitted when the bucket is full (else never)
                need = min(amount, capacity)
                if b.level < need:
                    wait = max(wait, b.seconds_until(need))
            if wait > 0:
                return False, wait, buckets
            for (_, amount, _, _), b in zip(wants, buckets, strict=True):
                b.level -= amount
            return True, 0.0, buckets

    def prune(self) -> int:
        """Forget buckets that have refilled completely: they hold no state (memory stays flat however many
        users pass through a per-user limit)."""
        now = self.clock()
        with self._lock:
            idle = [k for k, b in self.buckets.items() if now - b.updated >= b.period]
            for k in idle:
                del self.buckets[k]
        return len(idle)

    def adjust(self, key: tuple[str, str, str], delta: Decimal) -> None:
        """Give back (positive) or take more (negative) once the real usage is known; may go below zero."""
        with self._lock:
            b = self.buckets.get(key)
            if b is not None:
                b.level = min(b.capacity, b.level + delta)
