"""The variance split: volume, model mix, tokens per call and price effects that add up to the change exactly."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenops.analytics.variance import Effects, MixRow, decompose

B = [MixRow("gpt-4o", 100, 100_000, Decimal("1.00")), MixRow("mini", 100, 100_000, Decimal("0.10"))]


def _sum(e: Effects) -> Decimal:
    return e.volume + e.mix + e.tokens_per_call + e.price


def test_each_cause_lands_in_its_own_effect() -> None:
    more = decompose(B, [MixRow("gpt-4o", 200, 200_000, Decimal("2.00")), MixRow("mini", 200, 200_000, Decimal("0.20"))])
    assert (more.volume, more.mix, more.tokens_per_call, more.price) == (Decimal("1.1"), 0, 0, 0)
    mix = decompose(B, [MixRow("gpt-4o", 150, 150_000, Decimal("1.50")), MixRow("mini", 50, 50_000, Decimal("0.05"))])
    assert (mix.volume, mix.mix, mix.tokens_per_call, mix.price) == (0, Decimal("0.45"), 0, 0)
    longer = decompose(B, [MixRow("gpt-4o", 100, 200_000, Decimal("2.00")), MixRow("mini", 100, 100_000, Decimal("0.10"))])
    assert (longer.volume, longer.mix, longer.tokens_per_call, longer.price) == (0, 0, Decimal(1), 0)
    dearer = decompose(B, [MixRow("gpt-4o", 100, 100_000, Decimal("1.50")), MixRow("mini", 100, 100_000, Decimal("0.10"))])
    assert (dearer.volume, dearer.mix, dearer.tokens_per_call, dearer.price) == (0, 0, 0, Decimal("0.5"))
    assert dearer.largest() == "price" and "price +$0.50" in dearer.sentence()


def test_a_new_model_is_mix_and_an_empty_base_is_volume() -> None:
    new = decompose(B, [*B, MixRow("o3", 10, 10_000, Decimal("5"))])
    assert new.mix + new.volume == Decimal(5) and new.tokens_per_call == 0 and new.price == 0
    assert new.mix > new.volume
    fresh = decompose([], B)
    assert fresh.volume == Decimal("1.10") and fresh.change == Decimal("1.10")


def test_a_scaled_base_compares_one_bucket_with_the_mean_of_twelve() -> None:
    twelve = [MixRow("gpt-4o", 1200, 1_200_000, Decimal("12.00"))]
    e = decompose(twelve, [MixRow("gpt-4o", 100, 100_000, Decimal("1.00"))], base_scale=Decimal(1) / 12)
    assert e.base == Decimal("1.000000000000") and e.change == 0 and _sum(e) == 0


rows = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 10_000), st.integers(0, 10**8),
                          st.decimals(min_value=0, max_value=10**6, places=6)), max_size=6)


@settings(max_examples=300, deadline=None)
@given(rows, rows, st.sampled_from([Decimal(1), Decimal(1) / 12, Decimal("2.5")]))
def test_the_effects_always_add_up_to_the_change(base: list, actual: list, scale: Decimal) -> None:
    b = [MixRow(m, n, t, c) for m, n, t, c in base]
    a = [MixRow(m, n, t, c) for m, n, t, c in actual]
    e = decompose(b, a, base_scale=scale)
    assert _sum(e) == e.change
    assert e.actual == sum((r.cost_usd for r in a), Decimal(0))


def test_a_model_without_tokens_keeps_its_own_base() -> None:
    """Images or per-call fees (no tokens): twice the price per call is a price effect, not mix."""
    base = [MixRow("image-1", 100, 0, Decimal("10")), MixRow("gpt-4o", 100, 100_000, Decimal("1"))]
    actual = [MixRow("image-1", 100, 0, Decimal("20")), MixRow("gpt-4o", 100, 100_000, Decimal("1"))]
    e = decompose(base, actual)
    assert (e.volume, e.mix, e.tokens_per_call, e.price) == (0, 0, 0, Decimal(10))
