"""Allocation arithmetic: shares by rule, exact to the fraction, and cents that always add up to the bill."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenops.analytics.allocation import (
    UNALLOCATED,
    CostCentre,
    Item,
    Rules,
    SharedPool,
    Spread,
    allocate,
    bill_total,
    largest_remainder,
)

D = Decimal
SEARCH, SUPPORT = CostCentre("CC-100 Search", {"team": "search"}), CostCentre("CC-200 Support", {"team": "support"})


def item(team: str | None, cost: str | None, feature: str = "f", requests: int = 1) -> Item:
    keys = {"team": team or "(untagged)", "feature": feature, "model": "m"}
    return Item(keys, D(cost or 0), requests, requests if cost is None else 0)


def by_centre(items: list[Item], rules: Rules) -> dict[str, Decimal]:
    allocation = allocate(items, rules)
    assert allocation.reconciled
    return {s.cost_centre: s.total for s in allocation.statements}


def test_direct_spend_goes_to_the_first_matching_cost_centre() -> None:
    rules = Rules(cost_centres=(SEARCH, SUPPORT, CostCentre("everyone", {"feature": "f"})))
    got = by_centre([item("search", "1.25"), item("support", "2.50"), item("ads", "0.75")], rules)
    assert got == {"CC-100 Search": D("1.25"), "CC-200 Support": D("2.50"), "everyone": D("0.75")}


def test_proportional_even_and_weights() -> None:
    items = [item("search", "30"), item("support", "10"), item("platform", "8")]
    pool = {"team": "platform"}
    shares = {
        "proportional": {"CC-100 Search": D("36.00"), "CC-200 Support": D("12.00")},
        "even": {"CC-100 Search": D("34.00"), "CC-200 Support": D("14.00")},
    }
    for rule, want in shares.items():
        assert by_centre(items, Rules(cost_centres=(SEARCH, SUPPORT), shared=(SharedPool(pool, Spread(rule)),))) == want
    weights = Spread("weights", {"CC-100 Search": D(1), "CC-200 Support": D(3)})
    assert by_centre(items, Rules(cost_centres=(SEARCH, SUPPORT), shared=(SharedPool(pool, weights),))) == {
        "CC-100 Search": D("32.00"), "CC-200 Support": D("16.00")}  # fmt: skip
    allocation = allocate(items, Rules(cost_centres=(SEARCH, SUPPORT), shared=(SharedPool(pool, weights),)))
    assert allocation.pools[0].shares == {"CC-100 Search": Fraction(1, 4), "CC-200 Support": Fraction(3, 4)}
    line = next(x for x in allocation.statements[1].lines if x.kind == "shared")
    assert (line.pool, line.rule, line.share, line.exact) == ("shared team=platform", weights.label, Fraction(3, 4), 6)


def test_shared_pools_come_before_cost_centres_and_untagged_spend_is_spread_or_kept() -> None:
    items = [item("search", "6", feature="shared-gpu"), item("search", "2"), item("support", "2"), item(None, "1")]
    gpu = SharedPool({"feature": "shared-gpu"}, Spread("even"), name="GPU cluster")
    got = by_centre(items, Rules(cost_centres=(SEARCH, SUPPORT), shared=(gpu,), untagged=Spread("to", to="CC-200 Support")))
    assert got == {"CC-100 Search": D("5.00"), "CC-200 Support": D("6.00")}
    kept = allocate(items, Rules(cost_centres=(SEARCH, SUPPORT), shared=(gpu,)))
    assert [s.cost_centre for s in kept.statements] == ["CC-100 Search", "CC-200 Support", UNALLOCATED]
    assert kept.statements[-1].total == D("1.00") and kept.statements[-1].lines[0].kind == "untagged"


def test_the_default_is_one_cost_centre_per_team_and_untagged_spend_kept_apart() -> None:
    allocation = allocate([item("search", "1"), item("ads", "2"), item(None, "0.5"), item(None, None)], Rules())
    assert [(s.cost_centre, s.total) for s in allocation.statements] == [
        ("ads", D("2.00")), ("search", D("1.00")), (UNALLOCATED, D("0.50"))]  # fmt: skip
    assert allocation.unpriced == 1 and allocation.statements[-1].unpriced == 1


def test_a_rule_that_cannot_apply_says_so() -> None:
    only_pool = allocate([item("platform", "3")], Rules(shared=(SharedPool({"team": "platform"}, Spread("proportional")),)))
    assert only_pool.pools[0].note.startswith("no cost centre") and only_pool.statements[0].cost_centre == UNALLOCATED
    no_direct = allocate([item("platform", "3")], Rules(cost_centres=(SEARCH, SUPPORT),
                                                        shared=(SharedPool({"team": "platform"}, Spread("proportional")),)))  # fmt: skip
    assert no_direct.pools[0].note.startswith("no direct spend") and [s.total for s in no_direct.statements] == [
        D("1.50"), D("1.50")]  # fmt: skip


def test_cents_go_by_largest_remainder_and_add_up() -> None:
    third = Fraction(1, 3)
    assert largest_remainder([third, third, third]) == [D("0.34"), D("0.33"), D("0.33")]
    assert largest_remainder([Fraction("0.004"), Fraction("0.006"), Fraction("0.005")]) == [D("0.00"), D("0.01"),
                                                                                            D("0.01")]  # fmt: skip
    assert bill_total(D("0.005")) == D("0.01") and bill_total(D("-0.005")) == D("-0.01")
    assert bill_total(Fraction(-1, 200)) == D("-0.01") and bill_total(Fraction(1, 300)) == D("0.00")
    three_ways = allocate([item("search", "0.01"), item("support", "0.01"), item("platform", "0.01"),
                           item("x", "0.000000000001")],
                          Rules(cost_centres=(SEARCH, SUPPORT), shared=(SharedPool({"team": "platform"}, Spread("even")),)))  # fmt: skip
    assert three_ways.total == D("0.03") and three_ways.statements_total == D("0.03")


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError):
        Spread("weights")
    with pytest.raises(ValueError):
        Spread("weights", {"a": D(0)})
    with pytest.raises(ValueError):
        Spread("sideways")
    with pytest.raises(ValueError):
        Rules(cost_centres=(SEARCH, SEARCH))
    with pytest.raises(ValueError):
        Rules(rounding="banker")


# --- the property: every allocation adds up to the bill, to the cent --------------------------------------
TEAMS = ["search", "support", "ads", "platform", None]
FEATURES = ["chat", "shared-gpu", "summary"]
costs = st.one_of(
    st.integers(0, 10**14).map(lambda n: D(n).scaleb(-12)),  # up to $100 at pico-dollar resolution
    st.integers(-10**6, 10**6).map(lambda n: D(n).scaleb(-9)),  # corrections: small, possibly negative
    st.just(D(0)),
)
items_strategy = st.lists(
    st.builds(lambda team, feature, cost, n, unpriced: Item(
        {"team": team or "(untagged)", "feature": feature, "model": "m"}, cost, n, min(n, unpriced)),
        st.sampled_from(TEAMS), st.sampled_from(FEATURES), costs, st.integers(0, 50), st.integers(0, 5)),
    max_size=40,
)  # fmt: skip
weights = st.dictionaries(st.sampled_from(["search", "support", "CC-100 Search", "CC-200 Support"]),
                          st.integers(1, 1000).map(D), min_size=1)  # fmt: skip
spreads = st.one_of(st.sampled_from(["proportional", "even", "keep"]).map(Spread),
                    weights.map(lambda w: Spread("weights", w)),
                    st.sampled_from(["search", "CC-100 Search"]).map(lambda to: Spread("to", to=to)))  # fmt: skip
rules_strategy = st.builds(
    lambda configured, shared, untagged: Rules(cost_centres=(SEARCH, SUPPORT) if configured else (),
                                               shared=tuple(shared), untagged=untagged),
    st.booleans(),
    st.lists(st.builds(SharedPool, st.sampled_from([{"team": "platform"}, {"feature": "shared-gpu"}]),
                       spreads.filter(lambda s: s.rule != "to")), max_size=2),
    spreads,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(items_strategy, rules_strategy)
def test_statements_always_add_up_to_the_bill_to_the_cent(items: list[Item], rules: Rules) -> None:
    allocation = allocate(items, rules)
    exact_total = sum((i.cost for i in items), D(0))
    assert allocation.total_exact == exact_total
    assert allocation.total == bill_total(exact_total)
    assert allocation.reconciled and sum(s.total for s in allocation.statements) == allocation.total
    lines = [line for s in allocation.statements for line in s.lines]
    assert sum((line.exact for line in lines), Fraction(0)) == Fraction(exact_total)  # nothing lost, nothing made
    for line in lines:
        assert abs(Fraction(line.amount) - line.exact) < Fraction(1, 100)  # no line off by a cent or more
        assert line.amount == line.amount.quantize(D("0.01"))
    for pool in allocation.pools:
        assert not pool.shares or sum(pool.shares.values()) == 1
    assert sum(s.requests for s in allocation.statements) + sum(p.requests for p in allocation.pools if p.shares) == sum(
        i.requests for i in items)  # every call is on a line, or in a pool that was spread  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fractions(min_value=-1000, max_value=1000, max_denominator=10**6), max_size=30))
def test_largest_remainder_reconciles_any_amounts(values: list[Fraction]) -> None:
    cents = largest_remainder(values)
    assert sum(cents, D(0)) == bill_total(sum(values, Fraction(0)))
    assert all(abs(Fraction(c) - v) < Fraction(1, 100) for c, v in zip(cents, values, strict=True))
