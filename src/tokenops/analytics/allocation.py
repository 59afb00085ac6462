"""Allocation (showback / chargeback): a month's spend split over cost centres by stated rules, to the cent.

The input is spend in groups (:class:`Item`: the group's keys, e.g. ``{"team": "search", "feature": "x",
"model": "gpt-4o"}``, its exact cost and its calls) and :class:`Rules`. Each item goes to exactly one place:

1. the first **shared pool** whose match it satisfies (spend to spread: a platform team, a shared GPU feature);
2. else the first **cost centre** whose match it satisfies (its *direct* spend); without configured cost
   centres, the cost centre named by the value of one tag (``team`` by default);
3. else the **untagged** pool.

A pool is spread by its :class:`Spread`: ``proportional`` to the cost centres' direct spend (a cost centre's
negative direct spend counts as none; when no cost centre has any, evenly), ``even`` over every cost centre,
``weights`` (fixed weights of named cost centres), ``to`` one cost centre, or ``keep`` (its own
``Unallocated`` statement). A pool that has no cost centre to go to is kept too, and says why.

Every share is exact (:class:`fractions.Fraction`): the lines' exact amounts add up to the spend exactly. Then
each line is rounded to the cent by **largest remainder** (:func:`largest_remainder`): every line is rounded
down, and the cents still missing to reach the total bill (the exact total rounded half-up to the cent) go one
each to the lines that lost the most by rounding down (ties: the larger line, then the earlier one). So the
statements' totals always add up to the bill to the cent, and no line is off its exact amount by a cent or more.

Pure arithmetic: nothing here reads a ledger (see :mod:`tokenops.services.chargeback`).
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from tokenops.tags import UNTAGGED

UNALLOCATED = "Unallocated"
RULES = ("proportional", "even", "weights", "to", "keep")
ROUNDING = "largest_remainder"
CENT = Decimal("0.01")
NONE = "(none)"  # what a spend report shows for a fixed dimension without a value (model, key…)
_PICO = Decimal(1).scaleb(-12)
_CONTEXT = decimal.Context(prec=60)


@dataclass(frozen=True)
class Item:
    """Spend of one group: its keys (tag and dimension values), exact cost, calls and calls without a price."""

    keys: Mapping[str, str]
    cost: Decimal
    requests: int = 0
    unpriced: int = 0


@dataclass(frozen=True)
class CostCentre:
    name: str
    match: Mapping[str, str]


@dataclass(frozen=True)
class Spread:
    """How a pool is spread: ``rule`` is one of :data:`RULES`; ``weights`` for ``weights``, ``to`` for ``to``."""

    rule: str
    weights: Mapping[str, Decimal] = field(default_factory=dict)
    to: str | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown allocation rule {self.rule!r}")
        if self.rule == "weights" and (not self.weights or any(not w.is_finite() or w <= 0
                                                               for w in self.weights.values())):  # fmt: skip
            raise ValueError("rule weights needs weights greater than 0")
        if self.rule == "to" and not self.to:
            raise ValueError("rule to needs a cost centre")

    @property
    def label(self) -> str:
        if self.rule == "weights":
            return "weights " + ", ".join(f"{n}: {format(w.normalize(), 'f')}" for n, w in self.weights.items())
        if self.rule == "to":
            return f"to {self.to}"
        return self.rule


@dataclass(frozen=True)
class SharedPool:
    match: Mapping[str, str]
    spread: Spread
    name: str = ""  # default: "shared " and its match

    @property
    def label(self) -> str:
        return self.name or "shared " + ",".join(f"{k}={v}" for k, v in self.match.items())


@dataclass(frozen=True)
class Rules:
    cost_centres: tuple[CostCentre, ...] = ()
    cost_centre_tag: str = "team"  # without cost_centres: one cost centre per value of this key
    shared: tuple[SharedPool, ...] = ()
    untagged: Spread = Spread("keep")
    lines: tuple[str, ...] = ("team", "feature", "model")  # the keys direct (and kept) lines are grouped by
    rounding: str = ROUNDING

    def __post_init__(self) -> None:
        if self.rounding != ROUNDING:
            raise ValueError(f"unknown rounding {self.rounding!r} (only {ROUNDING})")
        names = [c.name for c in self.cost_centres]
        if len(set(names)) != len(names) or UNALLOCATED in names:
            raise ValueError(f"cost centre names must be unique and not {UNALLOCATED!r}")


@dataclass
class Line:
    """One line of a statement. ``kind``: ``direct`` (the cost centre's own spend), ``shared`` (its share of a
    shared pool) or ``untagged`` (its share of the untagged pool). ``amount`` is the line rounded to the cent."""

    kind: str
    label: str
    exact: Fraction
    keys: dict[str, str] = field(default_factory=dict)  # direct and kept lines: the values of Rules.lines
    pool: str | None = None
    rule: str | None = None
    share: Fraction | None = None  # allocated lines: the cost centre's share of the pool
    requests: int = 0  # direct and kept lines: their calls (an allocated line's calls are its pool's)
    unpriced: int = 0
    amount: Decimal = Decimal("0.00")

    @property
    def exact_usd(self) -> Decimal:
        return fraction_usd(self.exact)


@dataclass
class Statement:
    cost_centre: str
    lines: list[Line] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00"))

    @property
    def exact(self) -> Fraction:
        return sum((line.exact for line in self.lines), Fraction(0))

    @property
    def requests(self) -> int:
        return sum(line.requests for line in self.lines)

    @property
    def unpriced(self) -> int:
        return sum(line.unpriced for line in self.lines)


@dataclass
class Pool:
    """A shared or untagged pool: what it holds and how it was spread (``shares``: cost centre -> share)."""

    name: str
    kind: str  # shared | untagged
    rule: str
    exact: Decimal
    requests: int
    unpriced: int
    shares: dict[str, Fraction] = field(default_factory=dict)
    note: str = ""


@dataclass
class Allocation:
    statements: list[Statement]
    pools: list[Pool]
    total_exact: Decimal  # the spend, exact
    total: Decimal  # the bill: the spend rounded half-up to the cent
    requests: int
    unpriced: int
    rounding: str = ROUNDING

    @property
    def statements_total(self) -> Decimal:
        return sum((s.total for s in self.statements), Decimal("0.00"))

    @property
    def reconciled(self) -> bool:
        """The statements add up to the bill to the cent (always, by construction; shown as proof)."""
        return self.statements_total == self.total


def fraction_usd(value: Fraction) -> Decimal:
    """An exact amount as a Decimal at the ledger's resolution (pico-dollars, half-even)."""
    return _CONTEXT.divide(Decimal(value.numerator), Decimal(value.denominator)).quantize(_PICO, context=_CONTEXT)


def bill_total(exact: Decimal | Fraction) -> Decimal:
    """The bill: an exact amount rounded half-up (away from zero at half a cent) to the cent."""
    if isinstance(exact, Fraction):
        cents = abs(exact) * 100
        whole = math.floor(cents + Fraction(1, 2))
        return (Decimal(whole if exact >= 0 else -whole) / 100).quantize(CENT)
    return exact.quantize(CENT, rounding=ROUND_HALF_UP, context=_CONTEXT)


def largest_remainder(values: Sequence[Fraction], target: Decimal | None = None) -> list[Decimal]:
    """Each value rounded to the cent so that they add up to ``target`` (default: their exact sum rounded
    half-up to the cent): all rounded down, then one more cent to each of the values that lost the most (ties:
    the larger value, then the earlier one). Every result is within a cent of its value when ``target`` is the
    default."""
    total = sum(values, Fraction(0))
    goal = bill_total(total) if target is None else target.quantize(CENT)
    floors = [math.floor(v * 100) for v in values]
    missing = int(goal * 100) - sum(floors)
    if not 0 <= missing <= len(values):
        raise ValueError(f"cannot round {len(values)} amounts to a total of {goal}")
    order = sorted(range(len(values)), key=lambda i: (-(values[i] * 100 - floors[i]), -values[i], i))
    for i in order[:missing]:
        floors[i] += 1
    return [(Decimal(c) / 100).quantize(CENT) for c in floors]


def matches(keys: Mapping[str, str], match: Mapping[str, str]) -> bool:
    return all(keys.get(k) == v for k, v in match.items())


def allocate(items: Iterable[Item], rules: Rules) -> Allocation:
    """Statements per cost centre (see the module's doc), every line rounded to the cent, reconciled."""
    items = list(items)
    pools: list[list[Item]] = [[] for _ in rules.shared]
    direct: dict[str, list[Item]] = {c.name: [] for c in rules.cost_centres}
    untagged: list[Item] = []
    for item in items:
        index = next((i for i, p in enumerate(rules.shared) if matches(item.keys, p.match)), None)
        if index is not None:
            pools[index].append(item)
            continue
        centre = _centre(item, rules)
        if centre is None:
            untagged.append(item)
        else:
            direct.setdefault(centre, []).append(item)
    centres = _centres(rules, direct)
    base = {c: max(Fraction(0), sum((Fraction(i.cost) for i in direct.get(c, ())), Fraction(0))) for c in centres}
    statements = {c: Statement(c) for c in centres}
    for c in centres:
        statements[c].lines += _detail(direct.get(c, []), rules.lines, "direct")
    kept = Statement(UNALLOCATED)
    out_pools: list[Pool] = []
    spreads = [(p.label, "shared", p.spread, held) for p, held in zip(rules.shared, pools, strict=True)]
    spreads.append(("untagged", "untagged", rules.untagged, untagged))
    for name, kind, spread, held in spreads:
        if not held:
            continue
        exact = sum((Fraction(i.cost) for i in held), Fraction(0))
        pool = Pool(name, kind, spread.label, fraction_usd(exact), sum(i.requests for i in held),
                    sum(i.unpriced for i in held))  # fmt: skip
        pool.shares, pool.note = _shares(spread, centres, base)
        out_pools.append(pool)
        if not pool.shares:
            kept.lines += _detail(held, rules.lines, kind, pool=name, rule="keep")
            continue
        for centre, share in pool.shares.items():
            statement = statements.setdefault(centre, Statement(centre))
            statement.lines.append(Line(kind, name, exact * share, pool=name, rule=spread.label, share=share))
    ordered = list(statements.values()) + ([kept] if kept.lines else [])
    lines = [line for s in ordered for line in s.lines]
    total_exact = sum((i.cost for i in items), Decimal(0))
    total = bill_total(total_exact)
    for line, amount in zip(lines, largest_remainder([line.exact for line in lines], total), strict=True):
        line.amount = amount
    return Allocation(ordered, out_pools, total_exact, total, sum(i.requests for i in items),
                      sum(i.unpriced for i in items), rules.rounding)  # fmt: skip


def _centre(item: Item, rules: Rules) -> str | None:
    if rules.cost_centres:
        return next((c.name for c in rules.cost_centres if matches(item.keys, c.match)), None)
    value = item.keys.get(rules.cost_centre_tag)
    return None if value in (None, "", UNTAGGED, NONE) else value


def _centres(rules: Rules, direct: Mapping[str, list[Item]]) -> list[str]:
    """The cost centres: the configured ones in order; else those with direct spend and those a rule names,
    by name."""
    if rules.cost_centres:
        return [c.name for c in rules.cost_centres]
    named = set(direct)
    for spread in [p.spread for p in rules.shared] + [rules.untagged]:
        named |= set(spread.weights) | ({spread.to} if spread.to else set())
    return sorted(named)


def _shares(spread: Spread, centres: list[str], base: Mapping[str, Fraction]) -> tuple[dict[str, Fraction], str]:
    """Each cost centre's share of a pool (adding up to 1), and a note where the rule could not apply as stated;
    no shares: the pool is kept apart."""
    if spread.rule == "keep":
        return {}, ""
    if spread.rule == "to":
        assert spread.to is not None
        return {spread.to: Fraction(1)}, ""
    if spread.rule == "weights":
        weights = {n: Fraction(w) for n, w in spread.weights.items()}
        whole = sum(weights.values(), Fraction(0))
        return {n: w / whole for n, w in weights.items()}, ""
    if not centres:
        return {}, "no cost centre to spread over: kept apart"
    whole = sum(base.values(), Fraction(0))
    if spread.rule == "proportional" and whole > 0:
        return {c: base[c] / whole for c in centres if base[c] > 0}, ""
    note = "no direct spend to be proportional to: spread evenly" if spread.rule == "proportional" else ""
    return {c: Fraction(1, len(centres)) for c in centres}, note


def _detail(items: list[Item], dims: Sequence[str], kind: str, *, pool: str | None = None,
            rule: str | None = None) -> list[Line]:  # fmt: skip
    """Items grouped into lines by ``dims``, biggest first."""
    groups: dict[tuple[str, ...], Line] = {}
    for item in items:
        values = tuple(item.keys.get(d, UNTAGGED) for d in dims)
        line = groups.get(values)
        if line is None:
            keys = dict(zip(dims, values, strict=True))
            line = groups[values] = Line(kind, ", ".join(f"{k}={v}" for k, v in keys.items()) or kind, Fraction(0),
                                         keys=keys, pool=pool, rule=rule)  # fmt: skip
        line.exact += Fraction(item.cost)
        line.requests += item.requests
        line.unpriced += item.unpriced
    return sorted(groups.values(), key=lambda line: (-line.exact, line.label))
