"""Three gateways sharing one Redis (a fresh prefix per test), as replicas behind a load balancer would: one
hard budget, one rate limit, one alert and one approval request between them. Each has its own spool and
writer; on the duckdb-memory test stack each also has its own DuckDB ledger, on postgresql-redis they share one
database. The same key is valid on all three."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import GatewayHarness, sql_value, write_config
from tokenops import keys as keymod
from tokenops.app import create_app
from tokenops.config import StateOptions
from tokenops.policy.estimate import max_cost
from tokenops.policy.redis_state import RedisState, resilient

pytest_plugins = ("redis_service",)

CHAT = "/v1/chat/completions"
Replicas = Callable[..., Awaitable[list[GatewayHarness]]]


@pytest.fixture
async def replicas(tmp_path: Path, fake_app: Any, redis_url: str, redis_prefix: str) -> AsyncIterator[Replicas]:
    made: list[GatewayHarness] = []

    async def make(extra: str, n: int = 3, tags: dict[str, str] | None = None) -> list[GatewayHarness]:
        key = keymod.generate()
        rec = keymod.KeyRecord(id=keymod.new_key_id(), name="shared", key_hash=keymod.hash_key(key),
                               key_prefix=key[:10], tags=tags or {"team": "search"}, created_at=datetime.now(UTC))  # fmt: skip
        for _ in range(n):
            folder = tmp_path / f"gw{len(made)}"
            folder.mkdir()
            cfg = write_config(folder, extra)
            # a loaded CI machine can starve one event loop driving three replicas for over a second: these
            # tests are about budgets and alerts, not about Redis timeouts (tests/gateway/test_scale_out.py)
            options = StateOptions(prefix=redis_prefix, timeout=10.0)
            state = resilient(RedisState(redis_url, options), options)
            gw = create_app(cfg, transport=httpx.ASGITransport(app=fake_app), state=state)
            if all(k.id != rec.id for k in gw.ledger.list_keys()):  # on PostgreSQL the replicas share one ledger
                gw.ledger.insert_key(rec)
            await gw.start()
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://gateway.test")
            made.append(GatewayHarness(gw, client, key, rec))
        return made[-n:]

    yield make
    for h in made:
        await h.client.aclose()
        await h.gateway.close()


def total(hs: list[GatewayHarness], sql: str) -> Any:
    """``sql``'s value summed over the replicas' ledgers (one ledger when they share a PostgreSQL database)."""
    out: Any = 0
    for h in hs:
        h.flush()
    for url in {h.ledger.url for h in hs}:
        h = next(h for h in hs if h.ledger.url == url)
        out += sql_value(h.ledger, sql) or 0
    return out


async def test_a_hard_budget_holds_across_replicas_under_hundreds_of_concurrent_calls(replicas: Replicas) -> None:
    budget = Decimal("0.05")
    hs = await replicas(f"""
budgets:
  - {{name: shared-hard, scope: {{team: search}}, amount_usd: "{budget}", period: month, hard: true}}
""")  # fmt: skip

    async def one(i: int) -> tuple[int, str | None]:
        h = hs[i % len(hs)]
        body = {"model": "gpt-4o", "max_tokens": 40, "stream": i % 4 == 0,
                "messages": [{"role": "user", "content": f"call number {i} " + "x" * (i % 50)}]}  # fmt: skip
        r = await h.client.post(CHAT, json=body, headers=h.auth())
        return r.status_code, r.json()["error"]["code"] if r.status_code != 200 else None

    results: list[tuple[int, str | None]] = []
    for wave in range(20):  # waves of 150 calls spread over the replicas, until a whole wave is refused
        batch = await asyncio.gather(*(one(wave * 150 + i) for i in range(150)))
        results += batch
        if all(s == 429 for s, _ in batch):
            break
    ok = sum(1 for s, _ in results if s == 200)
    assert ok > 0 and {c for s, c in results if s != 200} == {"budget_exceeded"}
    spent = total(hs, "SELECT sum(cost_usd) FROM events WHERE team = 'search' AND status = 'ok'")
    row = hs[0].gateway.catalog.lookup(("openai",), "gpt-4o", hs[0].gateway.clock())
    one_call_max = max_cost(row, 400, 40)  # the longest body of the run, 40 output tokens
    assert budget <= spent <= budget + one_call_max, f"spent {spent} of {budget}, one call's max {one_call_max}"
    for h in hs:  # every replica reads the one counter: all settled, nothing lost
        counter = await h.gateway.engine.counter("shared-hard")
        assert counter.reserved == 0 and counter.spent == spent
    print(f"\nreplicas: {ok} admitted of {len(results)}, spent {spent} of {budget}, overshoot "
          f"{max(Decimal(0), spent - budget)} / bound {one_call_max}")


async def test_a_rate_limit_is_global_across_replicas(replicas: Replicas) -> None:
    hs = await replicas("limits:\n  - {name: rpm, per: key, requests_per_minute: 10}")
    body = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    rs = await asyncio.gather(*(hs[i % 3].client.post(CHAT, json=body, headers=hs[i % 3].auth()) for i in range(30)))
    codes = [r.status_code for r in rs]
    assert codes.count(200) == 10 and codes.count(429) == 20, codes  # one request refills every 6 s
    assert {r.json()["error"]["code"] for r in rs if r.status_code == 429} == {"rate_limited"}
    late = await hs[2].client.post(CHAT, json=body, headers=hs[2].auth())
    assert late.status_code == 429 and late.headers["x-ratelimit-remaining-requests"] == "0"


async def test_a_threshold_alert_fires_once_across_replicas(replicas: Replicas) -> None:
    hs = await replicas("""
budgets:
  - {name: small, scope: {team: search}, amount_usd: "0.01", period: month, thresholds: [{at: 0.5}]}
""")  # fmt: skip
    submitted: list[Any] = []
    for h in hs:
        assert h.gateway.engine.alerts is not None
        h.gateway.engine.alerts.submit = submitted.append  # what each replica hands its dispatcher
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "fake": {"usage": {"input": 10_000, "output": 100}}}  # $0.00156 a call: 50% after four  # fmt: skip
    for _ in range(3):
        await asyncio.gather(*(h.client.post(CHAT, json=body, headers=h.auth()) for h in hs for _ in range(3)))
    for h in hs:
        await h.gateway.close()  # the last drain records every alert in the ledgers
    assert [(a.kind, a.threshold) for a in submitted if a.kind == "threshold"] == [("threshold", 0.5)]
    assert total(hs, "SELECT count(*) FROM alerts WHERE kind = 'threshold'") == 1


async def test_an_approval_request_is_one_id_across_replicas(replicas: Replicas) -> None:
    hs = await replicas("rules:\n  - {name: gate, models: ['gpt-4o'], require_approval: true}\n")
    body = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    rs = await asyncio.gather(*(hs[i % 3].client.post(CHAT, json=body, headers=hs[i % 3].auth()) for i in range(12)))
    assert {r.status_code for r in rs} == {403}
    ids = {r.headers["x-tokenops-approval-id"] for r in rs}
    assert len(ids) == 1
    assert total(hs, "SELECT count(*) FROM approvals") == 1  # recorded once, by the replica that opened it


async def test_gateways_with_different_budgets_on_one_state_say_so(replicas: Replicas) -> None:
    """Two configs on one database and one Redis: the counters are shared, the limits are not. The gateway that
    finds the other's config says so in /readyz (a warning: a rolling deploy passes through this) and the log."""
    (a,) = await replicas("budgets:\n  - {name: team, scope: {team: search}, amount_usd: '10', period: month}", n=1)
    (b,) = await replicas("budgets:\n  - {name: team, scope: {team: search}, amount_usd: '20', period: month}", n=1)
    same = await replicas("budgets:\n  - {name: team, scope: {team: search}, amount_usd: '10', period: month}", n=1)
    warned = [(await h.client.get("/readyz")).json()["warnings"] for h in (a, b, same[0])]
    assert warned[0] == [] and warned[2] == [], "the first config holds the claim; an identical one agrees"
    assert len(warned[1]) == 1 and "different budgets, limits or rules" in warned[1][0], warned
    assert a.gateway.governance_fingerprint in warned[1][0] and b.gateway.governance_fingerprint in warned[1][0]
    assert (await b.client.get("/readyz")).status_code == 200, "a warning, not unready"
