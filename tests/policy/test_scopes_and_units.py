"""Nested scopes (a call counts against every budget it falls in; the tightest decides), key and user scopes,
token budgets, and alert channels that fail without touching calls."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

import harness
from harness import GatewayHarness, sql_value
from tokenops.scopes import Scope, ScopeIndex

CHAT = "/v1/chat/completions"


def body(model: str = "gpt-4o-mini", **usage: int) -> dict:
    b = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    if usage:
        b["fake"] = {"usage": usage}
    return b


async def test_nested_scopes_count_everywhere_and_the_tightest_blocks(make_gateway) -> None:  # noqa: ANN001
    h: GatewayHarness = await make_gateway("""
budgets:
  - {name: org, amount_usd: "100", period: month, hard: true}
  - {name: team, scope: {team: search}, amount_usd: "10", period: month, hard: true}
  - {name: team-prod, scope: "team=search,env=prod", amount_usd: "0.001", period: month, hard: true}
""", key_tags={"team": "search", "env": "prod"})  # fmt: skip
    r = await h.client.post(CHAT, json=body(input=10_000, output=0), headers=h.auth())  # $0.0015
    assert r.status_code == 200
    assert r.headers["x-tokenops-budget-remaining-usd"] == "0.00"  # the tightest budget's remainder
    engine = h.gateway.engine
    for name in ("org", "team", "team-prod"):
        assert (await engine.counter(name)).spent == Decimal("0.0015")
    r = await h.client.post(CHAT, json=body(), headers=h.auth())
    assert r.status_code == 429 and "team-prod" in r.json()["error"]["message"]
    # the same team in dev is outside the exhausted scope
    r = await h.client.post(CHAT, json=body(), headers=h.auth(**{"x-tokenops-tags": "env=dev"}))
    assert r.status_code == 200


async def test_key_user_and_token_budgets(make_gateway) -> None:  # noqa: ANN001
    h = await make_gateway(key_tags={"team": "t"})
    key_id = h.key_record.id
    defs = h.gateway.definitions
    defs.put("budget", "per-key", {"scope": {"key": key_id}, "amount_tokens": 1000, "hard": True}, by="test")
    defs.put("budget", "alice", {"scope": {"user": "alice"}, "amount_usd": "0.0001", "hard": True}, by="test")
    await h.gateway.reload_policy()
    r = await h.client.post(CHAT, json={**body(input=300, output=50), "user": "alice"}, headers=h.auth())
    assert r.status_code == 200  # alice: $0.000075; key: 350 tokens
    r = await h.client.post(CHAT, json={**body(input=300, output=50), "user": "alice"}, headers=h.auth())
    assert r.status_code == 200  # alice now over $0.0001
    r = await h.client.post(CHAT, json={**body(), "user": "alice"}, headers=h.auth())
    assert r.status_code == 429 and "alice" in r.json()["error"]["message"]
    r = await h.client.post(CHAT, json={**body(input=400, output=0), "user": "bob"}, headers=h.auth())
    assert r.status_code == 200  # key at 1100 tokens of 1000
    r = await h.client.post(CHAT, json={**body(), "user": "bob"}, headers=h.auth())
    assert r.status_code == 429 and "per-key" in r.json()["error"]["message"]


async def test_failing_alert_channels_never_fail_or_slow_calls(make_gateway) -> None:  # noqa: ANN001
    h = await make_gateway("""
budgets:
  - {name: tiny, amount_usd: "0.000001", period: month, thresholds: [{at: 0.5}, {at: 1.0}]}
alerts:
  channels:
    - {type: webhook, name: down, url: "http://127.0.0.1:9/hook", retries: 3, backoff: 0.2}
    - {type: email, name: nomail, host: 127.0.0.1, port: 9, sender: a@example.com, to: [b@example.com]}
""")  # fmt: skip
    started = time.perf_counter()
    for _ in range(5):
        r = await h.client.post(CHAT, json=body(input=1000, output=10), headers=h.auth())
        assert r.status_code == 200
    assert time.perf_counter() - started < 5, "calls wait for nobody's alert delivery"
    await h.gateway.close()
    fired = sql_value(h.ledger, "SELECT count(*) FROM alerts")
    assert fired == 2  # recorded even though no channel could deliver them


def test_scope_index_finds_exactly_the_matching_scopes() -> None:
    scopes = [Scope.parse(s) for s in ("", "team=a", "team=a,env=prod", "team=b", "key=k1", "user=u",
                                       "model=gpt-4o*", "env=prod")]  # fmt: skip
    index = ScopeIndex([(s, i) for i, s in enumerate(scopes)])
    for tags, key, user, model in [({"team": "a", "env": "prod"}, "k1", "u", "gpt-4o-mini"),
                                   ({"team": "b"}, None, None, "claude"), ({}, "k2", "v", "o1")]:  # fmt: skip
        expected = sorted(i for i, s in enumerate(scopes) if s.matches(tags, key, user, model))
        assert sorted(index.find(tags, key, user, model)) == expected


def test_expired_and_unknown_approval_requests_are_refused(ledger) -> None:  # noqa: ANN001
    from datetime import UTC, datetime, timedelta

    import pytest

    from tokenops.errors import UsageError
    from tokenops.services.approvals import decide, list_approvals
    with ledger.connect() as conn:
        conn.execute("INSERT INTO approvals (id, status, key_id, reason, requested_at) VALUES "
                     "('apr_old', 'pending', 'k', 'rule:x', ?), ('apr_new', 'pending', 'k', 'rule:x', ?)",
                     [(datetime.now(UTC) - timedelta(days=8)).replace(tzinfo=None),
                      datetime.now(UTC).replace(tzinfo=None)])  # fmt: skip
    with pytest.raises(UsageError, match="expired"):
        decide(ledger, "apr_old", approve=True, by="me")
    with pytest.raises(UsageError, match="no approval request"):
        decide(ledger, "apr_missing", approve=True, by="me")
    with pytest.raises(UsageError, match="in the future"):
        decide(ledger, "apr_new", approve=True, by="me", until=datetime.now(UTC) - timedelta(hours=1))
    granted = decide(ledger, "apr_new", approve=True, by="me", until=datetime.now(UTC) + timedelta(hours=1),
                           max_usd=Decimal("2.5"))  # fmt: skip
    assert granted.status == "approved" and granted.max_usd == Decimal("2.5") and granted.decided_by == "me"
    assert [a.id for a in list_approvals(ledger, "expired")] == ["apr_old"]


async def test_model_rules_cannot_be_bypassed_with_an_alias_or_a_provider_prefix(make_gateway) -> None:  # noqa: ANN001
    h = await make_gateway("""
models:
  - {name: smart, provider: openai, model: gpt-4o}
rules:
  - {name: no-4o, deny_models: ["gpt-4o"]}
  - {name: caps, max_output_tokens: 10, on_exceed: clamp}
""")  # fmt: skip
    for model in ("gpt-4o", "smart", "openai/gpt-4o"):
        r = await h.client.post(CHAT, json=body(model), headers=h.auth())
        assert r.status_code == 403 and "no-4o" in r.json()["error"]["message"], model
    r = await h.client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, headers=h.auth())
    assert r.status_code == 200 and "x-tokenops-clamped" not in r.headers


async def test_a_budget_held_only_by_calls_in_flight_says_retry_shortly(make_gateway) -> None:  # noqa: ANN001
    import asyncio

    h = await make_gateway("""
budgets:
  - {name: tiny, amount_usd: "0.0001", period: month, hard: true}
""")  # fmt: skip
    slow = {**body("gpt-4o"), "max_tokens": 100, "fake": {"delay_ms": 300}}
    first = asyncio.create_task(h.client.post(CHAT, json=slow, headers=h.auth()))
    await asyncio.sleep(0.1)  # the first call holds more than the whole budget while it runs
    r = await h.client.post(CHAT, json=body("gpt-4o"), headers=h.auth())
    assert r.status_code == 429 and r.headers["retry-after"] == "1" and "in flight" in r.json()["error"]["message"]
    assert (await first).status_code == 200


@pytest.mark.skipif(harness.STACK != "duckdb-memory", reason="the in-memory state's pruning (Redis keys expire "
                    "by themselves: tests/policy/test_state_backends.py)")  # fmt: skip
async def test_finished_periods_and_idle_buckets_are_forgotten(make_gateway) -> None:  # noqa: ANN001
    from datetime import UTC, datetime

    now = [datetime(2026, 11, 30, 23, 0, tzinfo=UTC)]
    h = await make_gateway("""
budgets:
  - {name: daily, amount_usd: "10", period: day}
limits:
  - {name: per-user, per: user, requests_per_minute: 100}
""", clock=lambda: now[0])  # fmt: skip
    engine = h.gateway.engine
    for user in ("a", "b", "c"):
        await h.client.post(CHAT, json={**body(), "user": user}, headers=h.auth())
    assert len(engine.state.buckets) == 3 and len(engine.state.counters_) == 1
    now[0] = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # a new day
    await h.client.post(CHAT, json={**body(), "user": "d"}, headers=h.auth())
    engine.state.clock = lambda: 1e12  # far in the future: every bucket has refilled
    engine.prune()
    assert len(engine.state.counters_) == 1  # only today's counter is kept
    assert engine.state.buckets == {}
