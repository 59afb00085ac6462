"""The same tests on both policy states: InMemoryState (the reference) and RedisState (shared Redis, a fresh
key prefix per test). What only Redis has (key expiry, rounding past 12 places, several OS processes, seeding
required) is tested on Redis alone."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from multiprocessing import get_context

import pytest

from tokenops.config import StateOptions
from tokenops.money import MAX_USD
from tokenops.policy.redis_state import DEFAULT_COUNTER_TTL, CountersMissing, RedisState
from tokenops.policy.state import BucketWant, Claim, Counter, InMemoryState, PolicyState

pytest_plugins = ("redis_service",)

D = Decimal
PICO = D("0.000000000001")
A = ("team-a@0123456789", "2026-03-01T00:00:00+01:00")
B = ("team-b@0123456789", "2026-03-01T00:00:00+01:00")
G = ("grant:apr_abc", "")
# these tests are about counts, not Redis timeouts (tests/policy/test_redis_faults.py): 300 concurrent calls on a
# loaded 2-core CI machine can wait past the default second
OP_TIMEOUT = 10.0


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[PolicyState]:
    if request.param == "memory":
        yield InMemoryState()
        return
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    s = RedisState(url, StateOptions(prefix=prefix, timeout=OP_TIMEOUT))
    yield s
    await s.close()


@pytest.fixture
async def redis_state(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisState]:
    s = RedisState(redis_url, StateOptions(prefix=redis_prefix, timeout=OP_TIMEOUT))
    yield s
    await s.close()


async def one(state: PolicyState, key: tuple[str, str]) -> Counter:
    (c,) = await state.counters([key])
    return c


# --- counters -----------------------------------------------------------------------------------------
async def test_reserve_is_all_or_none_and_a_refusal_names_the_full_counter(state: PolicyState) -> None:
    await state.seed(B, D("10"))
    assert await state.reserve("r1", [Claim(A, D("3"), D("5")), Claim(B, D("1"), D("10"))], 60) == B
    assert await state.counters([A, B]) == [Counter(), Counter(spent=D("10"))]  # nothing reserved on A
    assert await state.reserve("r2", [Claim(A, D("3"), D("5")), Claim(G, D("3"), None)], 60) is None
    assert await state.counters([A, G]) == [Counter(reserved=D("3")), Counter(reserved=D("3"))]
    # committed 3 < 5: admitted, ending over the limit by at most this one claim
    assert await state.reserve("r3", [Claim(A, D("4"), D("5"))], 60) is None
    assert await state.reserve("r4", [Claim(G, D("1"), None), Claim(A, D("0.01"), D("5"))], 60) == A
    assert (await one(state, G)).reserved == D("3")


async def test_settle_replaces_the_reservation_and_an_unknown_or_second_settle_changes_nothing(
        state: PolicyState) -> None:  # fmt: skip
    await state.reserve("r1", [Claim(A, D("2.5"), D("100")), Claim(B, D("7"), None)], 60)
    await state.settle("r1", {A: D("1.25"), B: D("3")})
    assert await state.counters([A, B]) == [Counter(spent=D("1.25")), Counter(spent=D("3"))]
    await state.settle("r1", {A: D("1.25"), B: D("3")})  # twice
    await state.settle("never-reserved", {A: D("9")})
    assert await state.counters([A, B]) == [Counter(spent=D("1.25")), Counter(spent=D("3"))]
    await state.reserve("r2", [Claim(A, D("1"), None)], 60)
    await state.settle("r2", {})  # a failed call: released, nothing spent
    assert await one(state, A) == Counter(spent=D("1.25"))


async def test_a_lapsed_reservation_stops_counting_and_its_late_settle_is_a_no_op(state: PolicyState) -> None:
    assert await state.reserve("dies", [Claim(A, D("5"), D("5"))], 0.3) is None
    assert await state.reserve("refused", [Claim(A, D("1"), D("5"))], 60) == A
    await asyncio.sleep(0.5)
    assert await state.reserve("after", [Claim(A, D("1"), D("5"))], 60) is None
    assert await one(state, A) == Counter(reserved=D("1"))
    await state.settle("dies", {A: D("5")})  # its process was only slow: the reservation is gone all the same
    assert await one(state, A) == Counter(reserved=D("1"))


async def test_seed_sets_only_an_absent_counter_and_raise_spent_only_raises(state: PolicyState) -> None:
    await state.seed(A, D("5"))
    await state.seed(A, D("7"))
    assert await one(state, A) == Counter(spent=D("5"))
    await state.reserve("r", [Claim(B, D("1"), None)], 60)
    await state.seed(B, D("40"))  # the counter exists (a reservation made it): a seed never overwrites
    assert await one(state, B) == Counter(reserved=D("1"))
    await state.raise_spent(G, D("3"))
    await state.raise_spent(G, D("2"))
    assert await one(state, G) == Counter(spent=D("3"))
    await state.raise_spent(G, D("3.000000000001"))
    assert await one(state, G) == Counter(spent=D("3.000000000001"))


async def test_counters_of_several_keys_at_once_absent_ones_zero(state: PolicyState) -> None:
    await state.seed(A, D("1.5"))
    await state.raise_spent(G, D("2"))
    await state.reserve("r", [Claim(B, D("0.25"), None)], 60)
    assert await state.counters([A, ("nobody@x", "p"), B, G]) == [
        Counter(spent=D("1.5")), Counter(), Counter(reserved=D("0.25")), Counter(spent=D("2"))]  # fmt: skip
    assert await state.counters([]) == []


async def test_money_is_exact_over_thousands_of_random_settles(state: PolicyState) -> None:
    rng = random.Random(7)
    amounts = [D(rng.randrange(0, 5 * 10**12)).scaleb(-12) for _ in range(3000)]
    amounts += [D("0.000000000001"), D("0.999999999999"), D("4999.999999999999")]
    for start in range(0, len(amounts), 200):
        batch = list(enumerate(amounts[start:start + 200], start))
        await asyncio.gather(*(state.reserve(f"m{i}", [Claim(A, a * 2 + PICO, D("1e12"))], 60) for i, a in batch))
        await asyncio.gather(*(state.settle(f"m{i}", {A: a}) for i, a in batch))
    assert await one(state, A) == Counter(spent=sum(amounts, D(0)))


@pytest.mark.parametrize("unit", ["usd", "tokens"])
async def test_large_counters_are_exact_and_compared_exactly_at_the_limit(state: PolicyState, unit: str) -> None:
    small = PICO if unit == "usd" else D(1)
    await state.seed(A, D("999999999.999999999999") if unit == "usd" else D(10**9 - 1))
    await state.reserve("r", [Claim(A, small, None)], 60)
    await state.settle("r", {A: small})
    assert await one(state, A) == Counter(spent=D(10**9))
    # a counter a pico (a token) under the largest budget there is: admitted; at it: refused
    await state.raise_spent(B, MAX_USD - small)
    assert await state.reserve("x", [Claim(B, small, MAX_USD)], 60) is None
    await state.settle("x", {B: small})
    assert await one(state, B) == Counter(spent=MAX_USD)
    assert await state.reserve("y", [Claim(B, small, MAX_USD)], 60) == B
    big = D("123456789012345.678901234567") if unit == "usd" else D(123456789012345678)
    await state.raise_spent(G, big)
    await state.reserve("z", [Claim(G, big, None)], 60)
    assert await one(state, G) == Counter(spent=big, reserved=big)


async def test_concurrent_reserves_never_admit_past_one_claim_over_the_limit(state: PolicyState) -> None:
    rng = random.Random(11)
    limit = D("2")
    amounts = [D(rng.randrange(1, 50_000)).scaleb(-6) for _ in range(200)]  # up to $0.05; $5 wanted in all
    done = await asyncio.gather(*(state.reserve(f"c{i}", [Claim(A, a, limit)], 60) for i, a in enumerate(amounts)))
    admitted = [a for a, full in zip(amounts, done, strict=True) if full is None]
    total = sum(admitted, D(0))
    assert limit <= total < limit + max(admitted), (total, max(admitted))
    assert await one(state, A) == Counter(reserved=total)


async def test_two_processes_reserving_at_once_never_admit_past_one_claim_over(redis_url: str,
                                                                               redis_prefix: str) -> None:  # fmt: skip
    from redis_service import reserve_from_process

    rng = random.Random(5)
    limit = "1.5"
    lists = [[str(D(rng.randrange(1, 20_000)).scaleb(-6)) for _ in range(100)] for _ in range(2)]  # 200 in all
    loop = asyncio.get_running_loop()
    start_at = time.time() + 4  # both processes are started and connected by then
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        runs = [loop.run_in_executor(pool, reserve_from_process, redis_url, redis_prefix, A, amounts, limit,
                                     start_at) for amounts in lists]  # fmt: skip
        admitted = [D(a) for run in await asyncio.gather(*runs) for a in run]
    total = sum(admitted, D(0))
    assert D(limit) <= total < D(limit) + max(admitted), (total, max(admitted))
    state = RedisState(redis_url, StateOptions(prefix=redis_prefix))
    try:
        assert await one(state, A) == Counter(reserved=total)
    finally:
        await state.close()


async def test_concurrent_reserve_and_settle_keep_every_count(state: PolicyState) -> None:
    async def call(i: int) -> D:
        if await state.reserve(f"s{i}", [Claim(A, D("0.01"), D("1")), Claim(G, D("0.01"), None)], 60) is not None:
            return D(0)
        await asyncio.sleep(0)
        await state.settle(f"s{i}", {A: D("0.004"), G: D("0.004")})
        return D("0.004")

    spent = sum(await asyncio.gather(*(call(i) for i in range(300))), D(0))
    assert D("0.4") <= spent <= D("1.2")  # how many fit depends on how reserves and settles interleave
    assert await state.counters([A, G]) == [Counter(spent=spent), Counter(spent=spent)]


# --- buckets ------------------------------------------------------------------------------------------
RPM = ("rpm", "key-1", "requests")
TPM = ("tpm", "key-1", "tokens")


def want(key: tuple[str, str, str], amount: int | str, capacity: int, period: float) -> BucketWant:
    return BucketWant(key, D(amount), D(capacity), period)


async def test_bucket_admits_refuses_with_a_wait_and_refills_over_wall_time(state: PolicyState) -> None:
    levels = []
    for _ in range(3):
        admitted, wait, (view,) = await state.take([want(RPM, 1, 3, 0.6)])
        assert admitted and wait == 0.0 and view.capacity == 3 and view.period == 0.6
        levels.append(view.level)
    assert [int(v) for v in levels] == [2, 1, 0]
    admitted, wait, (view,) = await state.take([want(RPM, 1, 3, 0.6)])
    assert not admitted and 0 < wait <= 0.2 and view.level < 1  # a third of the period refills one request
    await asyncio.sleep(wait + 0.02)
    assert (await state.take([want(RPM, 1, 3, 0.6)]))[0]
    await asyncio.sleep(0.7)  # a whole period: full again
    admitted, _, (view,) = await state.take([want(RPM, 0, 3, 0.6)])
    assert admitted and view.level == 3


async def test_buckets_are_all_or_none(state: PolicyState) -> None:
    assert (await state.take([want(TPM, 90, 100, 60)]))[0]
    admitted, wait, (rpm, tpm) = await state.take([want(RPM, 1, 10, 60), want(TPM, 50, 100, 60)])
    assert not admitted and 23.9 < wait <= 24 and rpm.level == 10 and 10 <= tpm.level < 10.1  # 40 tokens missing
    admitted, _, (rpm,) = await state.take([want(RPM, 1, 10, 60)])
    assert admitted and 8.99 < rpm.level <= 9.01  # the refused take took nothing from the request bucket


async def test_a_request_bigger_than_the_bucket_waits_for_a_full_one(state: PolicyState) -> None:
    admitted, _, (view,) = await state.take([want(TPM, 250, 100, 0.5)])
    assert admitted and -150 <= view.level < -149.9  # admitted while full; the bucket goes below zero
    admitted, wait, _ = await state.take([want(TPM, 250, 100, 0.5)])
    assert not admitted and 1.2 < wait <= 1.25  # until full again: 250 missing at 100 per 0.5 s
    await asyncio.sleep(wait + 0.05)
    assert (await state.take([want(TPM, 250, 100, 0.5)]))[0]


async def test_adjust_gives_back_or_takes_more_and_a_new_capacity_starts_full(state: PolicyState) -> None:
    await state.take([want(TPM, 80, 100, 60)])
    await state.adjust(TPM, D(30))  # the call used 30 fewer tokens than it took
    _, _, (view,) = await state.take([want(TPM, 0, 100, 60)])
    assert 50 <= view.level < 50.1
    await state.adjust(TPM, D(-70))
    admitted, _, (view,) = await state.take([want(TPM, 1, 100, 60)])
    assert not admitted and -20 <= view.level < -19.9
    await state.adjust(("nobody", "x", "tokens"), D(5))  # an unknown bucket: nothing
    admitted, _, (view,) = await state.take([want(TPM, 1, 200, 60)])  # the limit was changed: a fresh bucket
    assert admitted and view.level == 199


async def test_usd_bucket_takes_decimal_amounts(state: PolicyState) -> None:
    usd = ("usd", "key-1", "usd")
    for _ in range(4):
        assert (await state.take([BucketWant(usd, D("0.00025"), D("0.001"), 3600.0)]))[0]
    admitted, wait, (view,) = await state.take([BucketWant(usd, D("0.00025"), D("0.001"), 3600.0)])
    assert not admitted and 890 < wait <= 900 and abs(view.level) < D("0.00001")


# --- claims -------------------------------------------------------------------------------------------
async def test_claim_holds_the_first_value_until_released_or_expired(state: PolicyState) -> None:
    assert await state.claim("alert:x", "first", 60) == "first"
    assert await state.claim("alert:x", "second", 60) == "first"
    await state.release("alert:x")
    assert await state.claim("alert:x", "second", 60) == "second"
    assert await state.claim("pending:k:r", "a", 0.2) == "a"
    await asyncio.sleep(0.3)
    assert await state.claim("pending:k:r", "b", 60) == "b"
    won = await asyncio.gather(*(state.claim("race", f"v{i}", 60) for i in range(50)))
    assert len(set(won)) == 1


async def test_ping_and_close(state: PolicyState) -> None:
    await state.ping()
    await state.close()


# --- Redis only -------------------------------------------------------------------------------------
async def test_every_key_expires(redis_state: RedisState, redis_url: str, redis_prefix: str) -> None:
    from redis_service import keys_under

    p = redis_prefix
    at = time.time() + 3 * 86_400
    await redis_state.seed(A, D("1"), expires_at=at)
    await redis_state.reserve("r", [Claim(A, D("1"), None), Claim(B, D("1"), None)], 600)  # B: made by the reserve
    await redis_state.take([want(RPM, 1, 60, 60), want(TPM, 300, 100, 60)])
    await redis_state.claim("alert:x", "v", 120)
    ttl = keys_under(redis_url, p)
    a, b = f"{p}:c:team-a@0123456789:{A[1]}", f"{p}:c:team-b@0123456789:{B[1]}"
    assert abs(ttl[a] / 1000 - (at - time.time())) < 5
    assert ttl[a.replace(":c:", ":d:")] == pytest.approx(ttl[a], abs=5000)  # reservations go with their counter
    assert ttl[b] / 1000 == pytest.approx(DEFAULT_COUNTER_TTL, abs=5)
    assert ttl[b.replace(":c:", ":d:")] / 1000 == pytest.approx(DEFAULT_COUNTER_TTL, abs=5)
    assert 59_000 < ttl[f"{p}:b:rpm:key-1:requests"] <= 60_002  # a bucket lives until it is full again
    assert 179_000 < ttl[f"{p}:b:tpm:key-1:tokens"] <= 180_002  # 200 tokens missing at 100 a minute
    assert 119_000 < ttl[f"{p}:k:alert:x"] <= 120_000
    assert ttl[f"{p}:schema"] == -1
    assert all(v > 0 for k, v in ttl.items() if k != f"{p}:schema")


async def test_amounts_past_twelve_places_round_towards_refusing(redis_state: RedisState) -> None:
    tiny = D("0.0000000000001")  # a tenth of a pico
    await redis_state.reserve("r", [Claim(A, tiny, None)], 60)
    assert await one(redis_state, A) == Counter(reserved=PICO)  # reserved up
    await redis_state.settle("r", {A: D("0.0000000000015")})
    assert await one(redis_state, A) == Counter(spent=D("0.000000000002"))  # spent half-even, like the ledger
    await redis_state.seed(B, D("0.999999999999"))
    assert await redis_state.reserve("s", [Claim(B, PICO, D("0.9999999999995"))], 60) == B  # the limit rounds down


async def test_require_seeded_reports_absent_counters_and_reserves_nothing(redis_state: RedisState) -> None:
    await redis_state.seed(A, D("1"))
    with pytest.raises(CountersMissing) as info:
        await redis_state.reserve("r", [Claim(A, D("1"), D("5")), Claim(B, D("1"), D("5"))], 60, require_seeded=True)
    assert info.value.keys == [B]
    assert await redis_state.counters([A, B]) == [Counter(spent=D("1")), Counter()]
    await redis_state.seed(B, D("4"))
    assert await redis_state.reserve("r", [Claim(A, D("1"), D("5")), Claim(B, D("1"), D("5"))], 60,
                                     require_seeded=True) is None  # fmt: skip


async def test_reservation_ids_of_two_replicas_do_not_collide(redis_url: str, redis_prefix: str) -> None:
    one_, two = (RedisState(redis_url, StateOptions(prefix=redis_prefix)) for _ in range(2))
    try:
        await one_.reserve("0", [Claim(A, D("1"), None)], 60)  # each engine counts its ids from 0
        await two.reserve("0", [Claim(A, D("2"), None)], 60)
        await one_.settle("0", {A: D("0.5")})
        assert await one(two, A) == Counter(spent=D("0.5"), reserved=D("2"))
        await two.settle("0", {A: D("1")})
        assert await one(one_, A) == Counter(spent=D("1.5"))
    finally:
        await one_.close()
        await two.close()
