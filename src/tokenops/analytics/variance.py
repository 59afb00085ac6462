"""Why spend changed: a change in cost split into volume, model mix, tokens per call and price effects.

Spend is ``Σ_m N · s_m · t_m · p_m`` over the models m: N calls, s_m the share of calls on model m, t_m its
tokens per call and p_m its cost per token. Going from a base (last month, the hour before a spike, the plan a
budget implies) to the actual, each factor is changed in turn, in that order:

* **volume**: more or fewer calls at the base's cost per call, ``(N1 − N0) · C0/N0``;
* **mix**: the same number of calls spread differently over the models, ``N1 · Σ (s1_m − s0_m) · t0_m · p0_m``;
* **tokens per call**: longer or shorter calls, ``Σ n1_m · (t1_m − t0_m) · p0_m``;
* **price**: the rest, ``Σ n1_m · t1_m · (p1_m − p0_m)``: a price change, or a different blend of input, output and
  cached tokens at the same list prices.

A model new in the actual has no base tokens or price: its calls count under mix at their own cost. The four
effects add up to the change exactly (the price effect is computed as the remainder, so that Decimal rounding in
the shares can never leave a dollar unexplained). Calls without a price are left out of both sides and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tokenops.money import ZERO, format_usd

EFFECTS = ("volume", "mix", "tokens_per_call", "price")
_PLACES = Decimal("1e-12")  # the ledger's precision (DECIMAL(38,12))


@dataclass(frozen=True)
class MixRow:
    """What one model did in a window: calls, tokens and their (priced) cost."""

    model: str
    requests: int
    tokens: int
    cost_usd: Decimal


@dataclass(frozen=True)
class Effects:
    base: Decimal
    actual: Decimal
    volume: Decimal
    mix: Decimal
    tokens_per_call: Decimal
    price: Decimal

    @property
    def change(self) -> Decimal:
        return self.actual - self.base

    def largest(self) -> str:
        """The effect that moved spend most (by absolute size)."""
        return max(EFFECTS, key=lambda name: abs(getattr(self, name)))

    def to_json(self) -> dict[str, Any]:
        return {"base_usd": format_usd(self.base), "actual_usd": format_usd(self.actual),
                "change_usd": format_usd(self.change),
                **{f"{name}_usd": format_usd(getattr(self, name)) for name in EFFECTS}}  # fmt: skip

    def sentence(self) -> str:
        """``volume +$12.00, mix +$3.10, tokens/call −$0.40, price $0.00``."""
        label = {"volume": "volume", "mix": "model mix", "tokens_per_call": "tokens/call", "price": "price"}
        return ", ".join(f"{label[n]} {_signed(getattr(self, n))}" for n in EFFECTS)


def _signed(value: Decimal) -> str:
    """For people: cents from a dollar up, else four decimals (exact amounts are in :meth:`Effects.to_json`)."""
    size = abs(value)
    text = format_usd(size.quantize(Decimal("0.01") if size >= 1 else Decimal("0.0001")))
    return ("+$" if value > 0 else "−$" if value < 0 else "$") + text


def _merge(rows: Iterable[MixRow]) -> dict[str, MixRow]:
    out: dict[str, MixRow] = {}
    for r in rows:
        if r.model in out:
            o = out[r.model]
            r = MixRow(r.model, o.requests + r.requests, o.tokens + r.tokens, o.cost_usd + r.cost_usd)
        out[r.model] = r
    return out


def decompose(base: Iterable[MixRow], actual: Iterable[MixRow], *, base_scale: Decimal = Decimal(1)) -> Effects:
    """Split ``actual − base·base_scale`` into the four effects (``base_scale`` turns, e.g., twelve baseline
    buckets into one: 1/12). Exact: ``volume + mix + tokens_per_call + price == actual − base``."""
    b = _merge(base)
    a = _merge(actual)
    n0 = Decimal(sum(r.requests for r in b.values())) * base_scale
    n1 = Decimal(sum(r.requests for r in a.values()))
    c0 = (sum((r.cost_usd for r in b.values()), ZERO) * base_scale).quantize(_PLACES)
    c1 = sum((r.cost_usd for r in a.values()), ZERO)
    if n0 == 0:  # nothing to compare with: all of it is new volume
        return Effects(c0, c1, c1 - c0, ZERO, ZERO, ZERO)
    per_call0 = c0 / n0
    volume = (n1 - n0) * per_call0

    def base_of(m: str) -> tuple[Decimal, Decimal]:
        """(tokens per call, cost per token) in the base; a model the base lacks uses its actual ones."""
        r = b.get(m)
        if r is None or r.requests == 0:
            r = a.get(m) or r
        if r is None or r.requests == 0:
            return ZERO, ZERO
        tpc = Decimal(r.tokens) / r.requests
        ppt = r.cost_usd / r.tokens if r.tokens else ZERO
        if r.tokens == 0:  # no tokens (images, fixed fees): the cost per call stands for tokens × price
            return Decimal(1), r.cost_usd / r.requests
        return tpc, ppt

    mix = ZERO
    tokens = ZERO
    for m in set(a) | set(b):
        t0, p0 = base_of(m)
        s0 = Decimal(b[m].requests) * base_scale / n0 if m in b else ZERO
        s1 = Decimal(a[m].requests) / n1 if m in a and n1 else ZERO
        mix += n1 * (s1 - s0) * t0 * p0
        if m in a and a[m].requests:
            t1 = Decimal(a[m].tokens) / a[m].requests if a[m].tokens else Decimal(1)
            if m in b and b[m].requests and b[m].tokens and a[m].tokens:
                tokens += a[m].requests * (t1 - t0) * p0
    volume, mix, tokens = (v.quantize(_PLACES) for v in (volume, mix, tokens))
    price = (c1 - c0) - volume - mix - tokens
    return Effects(c0, c1, volume, mix, tokens, price)


def mix_rows(rows: Iterable[Mapping[str, Any]]) -> list[MixRow]:
    """Rows with ``model``, ``requests``, ``tokens`` and ``cost_usd`` keys into :class:`MixRow` values."""
    return [MixRow(str(r["model"]), int(r["requests"]), int(r["tokens"]), Decimal(r["cost_usd"])) for r in rows]
