"""Redis failing under a gateway: a private redis-server (never the shared one) killed mid-traffic, paused,
restarted empty; a Redis holding another version's keys; a URL whose password must never be shown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import GatewayHarness, free_port, sql_value, write_config
from tokenops import keys as keymod
from tokenops.app import create_app
from tokenops.config import StateOptions
from tokenops.policy.estimate import max_cost
from tokenops.policy.redis_state import SCHEMA, RedisState, ResilientState, StateSchemaMismatch, resilient
from tokenops.policy.state import Claim, Counter, StateUnavailable

pytest_plugins = ("redis_service",)

CHAT = "/v1/chat/completions"
KEY = ("hard@0123456789", "2026-03-01T00:00:00+00:00")
BUDGET = """
budgets:
  - {{name: hard, scope: {{team: search}}, amount_usd: "{amount}", period: month, hard: true}}
  - {{name: soft, scope: {{team: soft}}, amount_usd: "5", period: month, thresholds: [{{at: 0.8}}]}}
"""


class Stack:
    """One gateway on a private Redis, with a governed key (team=search, under a hard budget), a free one
    (team=other, no budget) and one only a soft budget counts (team=soft, an alert at 80%)."""

    def __init__(self, h: GatewayHarness, keys: dict[str, str], redis: Any):
        self.h = h
        self.keys = keys
        self.redis = redis

    @property
    def state(self) -> ResilientState:
        state = self.h.gateway.state
        assert isinstance(state, ResilientState)
        return state

    async def call(self, governed: bool, i: int = 0, team: str | None = None) -> httpx.Response:
        body = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": f"call {i}"}]}
        key = self.keys[team or ("search" if governed else "other")]
        return await self.h.client.post(CHAT, json=body, headers={"authorization": f"Bearer {key}"})


Make = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack(tmp_path: Path, fake_app: Any, private_redis: Any) -> AsyncIterator[Make]:
    made: list[GatewayHarness] = []

    async def make(mode: str, amount: str = "5", timeout: float = 0.5) -> Stack:
        cfg = write_config(tmp_path, BUDGET.format(amount=amount))
        options = StateOptions(prefix="faults", when_unavailable=mode, timeout=timeout)  # type: ignore[arg-type]
        gw = create_app(cfg, transport=httpx.ASGITransport(app=fake_app),
                        state=resilient(RedisState(private_redis.url, options), options))  # fmt: skip
        keys = {}
        for team in ("search", "other", "soft"):
            key = keymod.generate()
            gw.ledger.insert_key(keymod.KeyRecord(id=keymod.new_key_id(), name=team, key_hash=keymod.hash_key(key),
                                                  key_prefix=key[:10], tags={"team": team},
                                                  created_at=datetime.now(UTC)))  # fmt: skip
            keys[team] = key
        await gw.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://gateway.test")
        h = GatewayHarness(gw, client, keys["search"], None)  # type: ignore[arg-type]
        made.append(h)
        return Stack(h, keys, private_redis)

    yield make
    for h in made:
        await h.client.aclose()
        await h.gateway.close()


async def traffic_through_a_kill(s: Stack, calls: int = 60) -> list[tuple[bool, bool, httpx.Response]]:
    """Calls, governed and free in turn, while Redis is SIGKILLed after the first third; (governed, sent after
    the kill, response) for each."""
    killed = asyncio.Event()
    out: list[tuple[bool, bool, httpx.Response]] = []

    async def caller(offset: int) -> None:
        for i in range(offset, calls, 4):
            after = killed.is_set()
            r = await s.call(i % 2 == 0, i)
            out.append((i % 2 == 0, after, r))

    async def killer() -> None:
        while len(out) < calls // 3:
            await asyncio.sleep(0.005)
        s.redis.kill()
        killed.set()

    await asyncio.gather(killer(), *(caller(k) for k in range(4)))
    return out


async def recovers(s: Stack, seconds: float = 5.0) -> float:
    """Seconds until a governed call is answered 200 again."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if (await s.call(True)).status_code == 200:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"governed calls did not recover within {seconds}s of Redis coming back")


# --- fail_closed ------------------------------------------------------------------------------------------
async def test_fail_closed_refuses_governed_calls_serves_free_ones_and_recovers(stack: Make) -> None:
    s = await stack("fail_closed")
    assert (await s.call(True)).status_code == 200 and (await s.call(False)).status_code == 200
    out = await traffic_through_a_kill(s)
    assert all(r.status_code == 200 for governed, _, r in out if not governed)  # no budget, no limit: no Redis
    refused = [r for governed, after, r in out if governed and after]
    assert refused and all(r.status_code == 503 and r.json()["error"]["code"] == "state_unavailable" for r in refused)
    assert await s.state.status() == ("redis", "unavailable (fail_closed)")
    with pytest.raises(StateUnavailable, match=f"127.0.0.1:{s.redis.port}"):
        await s.state.reserve("x", [Claim(KEY, Decimal(1), Decimal(5))], 60)
    assert await s.state.reserve("y", [Claim(KEY, Decimal(1), None)], 60) is None  # soft only: admitted uncounted
    await s.state.settle("y", {KEY: Decimal(1)})

    s.redis.start()  # the same port, empty (no persistence)
    took = await recovers(s)
    assert took < 3 and await s.state.status() == ("redis", "ok")
    print(f"\nfail_closed: governed calls answered again {took:.2f}s after Redis restarted")


async def test_fail_closed_without_redis_at_all_still_serves_free_calls(stack: Make) -> None:
    s = await stack("fail_closed")
    s.redis.kill()
    r = await s.call(True)
    assert r.status_code == 503 and r.json()["error"]["code"] == "state_unavailable"
    assert r.headers["retry-after"]
    assert (await s.call(False)).status_code == 200


async def test_fail_closed_a_call_only_soft_budgets_count_still_passes(stack: Make) -> None:
    s = await stack("fail_closed")
    assert (await s.call(False, team="soft")).status_code == 200
    s.redis.kill()
    r = await s.call(False, team="soft")
    assert r.status_code == 200, r.text


# --- fail_open --------------------------------------------------------------------------------------------
async def test_fail_open_keeps_calls_flowing_and_returns_to_redis(stack: Make) -> None:
    s = await stack("fail_open")
    out = await traffic_through_a_kill(s)
    assert all(r.status_code == 200 for _, _, r in out), [r.text for _, _, r in out if r.status_code != 200]
    assert await s.state.status() == ("redis", "unavailable, serving with local state (fail_open)")
    s.redis.start()
    deadline = time.monotonic() + 5
    while await s.state.status() != ("redis", "ok"):
        assert time.monotonic() < deadline, "fail_open did not return to Redis"
        await asyncio.sleep(0.1)
    assert (await s.call(True)).status_code == 200
    counter = await s.h.gateway.engine.counter("hard")
    assert counter.spent > 0 and counter.reserved == 0  # counted in Redis again (the outage's calls are not)


async def test_fail_open_holds_a_hard_budget_locally_from_the_last_count_it_saw(stack: Make) -> None:
    budget = Decimal("0.0002")
    s = await stack("fail_open", amount=str(budget))
    assert (await s.call(True)).status_code == 200  # about $0.00001 each
    seen = await s.h.gateway.engine.counter("hard")
    s.redis.kill()
    codes = [(await s.call(True, i)).status_code for i in range(60)]
    assert 200 in codes and codes[-1] == 429
    s.h.flush()
    spent = sql_value(s.h.ledger, "SELECT sum(cost_usd) FROM events WHERE team = 'search' AND status = 'ok'")
    row = s.h.gateway.catalog.lookup(("openai",), "gpt-4o-mini", s.h.gateway.clock())
    assert seen.spent > 0 and spent <= budget + max_cost(row, 100, 20)


# --- the state itself -------------------------------------------------------------------------------------
async def test_a_paused_redis_fails_within_the_timeout_and_fast_while_down(private_redis: Any) -> None:
    options = StateOptions(prefix="paused", timeout=0.3)
    state = ResilientState(RedisState(private_redis.url, options), options)
    try:
        await state.reserve("r", [Claim(KEY, Decimal("0.5"), Decimal(5))], 60)
        private_redis.pause()
        start = time.monotonic()
        with pytest.raises(StateUnavailable, match="did not answer within 0.3s"):
            await state.ping()
        assert time.monotonic() - start < 0.6
        await state.settle("r", {KEY: Decimal("0.25")})  # the call is over: not an error, sent again later
        start = time.monotonic()
        with pytest.raises(StateUnavailable):
            await state.counters([KEY])  # within a second of the failure: refused at once, no new wait
        assert time.monotonic() - start < 0.05
        private_redis.resume()
        await asyncio.sleep(1.05)
        assert await state.counters([KEY]) == [Counter(spent=Decimal("0.25"))]  # the settle was sent again
    finally:
        private_redis.resume()
        await state.close()


async def test_another_versions_keys_under_the_prefix_are_refused(redis_url: str, redis_prefix: str,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.set(f"{redis_prefix}:schema", "tokenops-state/0")
    state = RedisState(redis_url, StateOptions(prefix=redis_prefix))
    try:
        with pytest.raises(StateSchemaMismatch) as info:
            await state.counters([KEY])
        message = str(info.value)
        assert "another version" in message and f"prefix {redis_prefix!r}" in message and SCHEMA in message
        assert "choose another state_options.prefix" in message
        with pytest.raises(StateSchemaMismatch):
            await state.ping()
    finally:
        await state.close()
    for mode in ("fail_closed", "fail_open"):  # a gateway refuses to start on it, even one that may fail open
        options = StateOptions(prefix=redis_prefix, when_unavailable=mode)  # type: ignore[arg-type]
        cfg = write_config(tmp_path, BUDGET.format(amount="5"))
        gw = create_app(cfg, state=resilient(RedisState(redis_url, options), options))
        with pytest.raises(StateUnavailable, match="another version"):
            await gw.start()
        await gw.state.close()


async def test_the_password_is_never_shown(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    state = RedisState(f"redis://app:s3cret@127.0.0.1:{port}/0", StateOptions(timeout=0.5))
    assert state.name == f"redis://app:***@127.0.0.1:{port}/0"
    assert RedisState("redis://127.0.0.1:6379/0?password=s3cret").name == "redis://127.0.0.1:6379/0?password=%2A%2A%2A"
    with pytest.raises(StateUnavailable) as info:
        await state.counters([KEY])
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    await state.close()


async def test_a_redis_restarted_empty_is_seeded_again_from_the_ledger(stack: Make) -> None:
    """Redis keeps nothing on disk here: after a restart every counter is gone. The first call that needs one
    seeds it from the ledger, so what was spent this period still counts and the hard budget still holds."""
    s = await stack("fail_closed", amount="0.0001")
    statuses = [(await s.call(True, i)).status_code for i in range(40)]
    assert 200 in statuses and statuses[-1] == 429, statuses
    s.h.flush()  # what the gateway spent is in the ledger
    s.redis.kill()
    s.redis.start()  # the same port, empty
    await back(s)  # Redis answers again; no governed call was made meanwhile
    r = await s.call(True, 99)
    assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded", "the spend before the restart was lost"
    (counter,) = await s.state.counters([_hard_key(s)])
    assert counter.spent >= Decimal("0.0001")


def _hard_key(s: Stack) -> Any:
    from tokenops.policy.engine import counter_key

    engine = s.h.gateway.engine
    b = engine.budgets["hard"]
    return counter_key(b, engine.window(b, s.h.gateway.clock()))


async def back(s: Stack, seconds: float = 5.0) -> None:
    start = time.monotonic()
    while await s.state.status() != ("redis", "ok"):
        assert time.monotonic() - start < seconds, "Redis did not come back"
        await asyncio.sleep(0.1)
