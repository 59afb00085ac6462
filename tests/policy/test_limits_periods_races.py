"""Rate limits, period rollover with a controlled clock, budget changes racing with traffic, alert dedupe."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from harness import GatewayHarness, sql, sql_value

CHAT = "/v1/chat/completions"


def body(model: str = "gpt-4o-mini", **usage: int) -> dict:
    b = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    if usage:
        b["fake"] = {"usage": usage}
    return b


async def test_requests_per_minute_limit_is_per_key_with_openai_headers(make_gateway) -> None:  # noqa: ANN001
    h: GatewayHarness = await make_gateway("limits:\n  - {name: rpm, per: key, requests_per_minute: 3}")
    for i in range(3):
        r = await h.client.post(CHAT, json=body(), headers=h.auth())
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == str(2 - i)
    r = await h.client.post(CHAT, json=body(), headers=h.auth())
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    ev = h.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "rejected" and ev.error_code == "rate_limited"


async def test_tokens_and_usd_limits(make_gateway) -> None:  # noqa: ANN001
    h = await make_gateway("limits:\n  - {name: tpm, per: scope, scope: {team: search}, tokens_per_minute: 300}\n"
                           "  - {name: usd, per: key, usd_per_hour: \"0.001\"}", key_tags={"team": "search"})  # fmt: skip
    r = await h.client.post(CHAT, json=body(input=100, output=10), headers=h.auth())
    assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "300"
    # 110 real tokens were taken: 190 left; a call that may use ~255 (prompt + max_tokens) must wait
    assert int(r.headers["x-ratelimit-remaining-tokens"]) <= 300 - 50
    r = await h.client.post(CHAT, json={**body(), "max_tokens": 250}, headers=h.auth())
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert "x-should-retry" not in r.headers  # a rate limit clears within its window: the SDK's retries may wait
    r = await h.client.post(CHAT, json={**body(), "max_tokens": 20}, headers=h.auth())
    assert r.status_code == 200
    # the USD/hour limit: $0.001 an hour; a gpt-4o call that may cost more than what is left waits
    r = await h.client.post(CHAT, json={**body("gpt-4o"), "max_tokens": 100}, headers=h.auth())
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"


async def test_daily_budget_rolls_over_at_local_midnight(make_gateway) -> None:  # noqa: ANN001
    now = [datetime(2026, 3, 28, 22, 30, tzinfo=UTC)]  # 23:30 in Berlin, the night before DST starts
    h = await make_gateway("""
budgets:
  - {name: daily, scope: {team: search}, amount_usd: "0.01", period: day, timezone: Europe/Berlin, hard: true}
""", key_tags={"team": "search"}, clock=lambda: now[0])  # fmt: skip
    r = await h.client.post(CHAT, json=body("gpt-4o", input=2000, output=1000), headers=h.auth())
    assert r.status_code == 200  # $0.015: over the $0.01
    r = await h.client.post(CHAT, json=body("gpt-4o"), headers=h.auth())
    assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"
    assert int(r.headers["retry-after"]) == 30 * 60  # until 00:00 Berlin
    assert r.headers["x-should-retry"] == "false"  # an SDK's retries would only wait: it fails at once
    now[0] = datetime(2026, 3, 28, 22, 59, 59, tzinfo=UTC)
    assert (await h.client.post(CHAT, json=body("gpt-4o"), headers=h.auth())).status_code == 429
    now[0] = datetime(2026, 3, 28, 23, 0, 0, tzinfo=UTC)  # 00:00 Berlin: a new day (23 hours long)
    r = await h.client.post(CHAT, json=body("gpt-4o", input=100, output=10), headers=h.auth())
    assert r.status_code == 200
    status = {s["name"]: s for s in await h.gateway.engine.status(now[0])}["daily"]
    assert status["period_end"] == "2026-03-29T22:00:00+00:00"  # 00:00 CEST after the switch


async def test_budget_change_racing_with_traffic_loses_no_count(make_gateway) -> None:  # noqa: ANN001
    h = await make_gateway(key_tags={"team": "search"})
    defs = h.gateway.definitions
    defs.put("budget", "live", {"scope": {"team": "search"}, "amount_usd": "100", "period": "month"}, by="test")
    await h.gateway.reload_policy()

    async def traffic() -> None:
        await asyncio.gather(*(h.client.post(CHAT, json=body(input=1000, output=100), headers=h.auth())
                               for _ in range(150)))  # fmt: skip

    async def changes() -> None:
        for amount in ("90", "80", "70", "60"):
            defs.put("budget", "live", {"scope": {"team": "search"}, "amount_usd": amount, "period": "month"},
                     by="test")  # fmt: skip
            await h.gateway.reload_policy()
            await asyncio.sleep(0)

    await asyncio.gather(traffic(), changes())
    engine = h.gateway.engine
    b = engine.budgets["live"]
    assert b.amount == Decimal("60")
    counter = await engine.counter("live")
    h.flush()
    assert counter.reserved == 0
    assert counter.spent == h.ledger.spent(b.scope, *_window(engine, b, h), "usd")
    assert counter.spent == Decimal(150) * (Decimal(1000) * Decimal("0.15") + Decimal(100) * Decimal("0.6")) / 1_000_000


def _window(engine, b, h):  # noqa: ANN001, ANN202
    w = engine.window(b, h.gateway.clock())
    return w.start, w.end


async def test_alerts_fire_once_per_period_even_across_a_restart(make_gateway) -> None:  # noqa: ANN001
    extra = """
budgets:
  - {name: small, scope: {team: search}, amount_usd: "0.001", period: month, thresholds: [{at: 0.5}, {at: 1.0}]}
"""
    h = await make_gateway(extra, key_tags={"team": "search"})
    for _ in range(3):
        await h.client.post(CHAT, json=body(input=5000, output=100), headers=h.auth())
    await h.gateway.close()
    first = sql(h.ledger, "SELECT kind, threshold FROM alerts ORDER BY threshold")
    assert first == [("threshold", 0.5), ("threshold", 1.0)]
    h2 = await make_gateway(extra, key_tags={"team": "search"})  # same ledger: a restart
    await h2.client.post(CHAT, json=body(input=5000, output=100), headers=h2.auth())
    await h2.gateway.close()
    assert sql_value(h2.ledger, "SELECT count(*) FROM alerts WHERE kind = 'threshold'") == 2


async def test_forecast_alert_names_the_day(make_gateway) -> None:  # noqa: ANN001
    now = [datetime(2026, 11, 10, 12, tzinfo=UTC)]  # a third into November
    h = await make_gateway("""
budgets:
  - {name: monthly, scope: {team: search}, amount_usd: "1.00", period: month}
""", key_tags={"team": "search"}, clock=lambda: now[0])  # fmt: skip
    await h.client.post(CHAT, json=body("gpt-4o", input=200_000, output=0), headers=h.auth())  # $0.50 in 9.5 days
    await h.gateway.close()
    message = sql_value(h.ledger, "SELECT message FROM alerts WHERE kind = 'forecast'")
    assert "will be exhausted around Nov 20" in message


@pytest.mark.parametrize(
    ("yaml", "fragment"),
    [
        ('budgets: [{name: b, amount_usd: "-5", period: month}]', "must not be negative"),
        ("budgets: [{name: b, amount_usd: lots, period: month}]", "not a decimal number"),
        ("budgets: [{name: b, amount_usd: 12.5, period: month}]", "quoted decimal"),
        ('budgets: [{name: b, amount_usd: "5", period: fortnight}]', "budgets[0].period"),
        ('budgets: [{name: b, amount_usd: "5", timezone: Mars/Base}]', "unknown time zone"),
        ('budgets: [{name: b, amount_usd: "5", scope: "team"}]', "not key=value"),
        ('budgets: [{name: b, amount_usd: "5", thresholds: [{at: 0.8, action: downgrade}]}]', "model to downgrade"),
        ('budgets: [{name: b, amount_usd: "5", thresholds: [{at: 0.8, action: block}, {at: 0.9, action: downgrade, model: m}]}]',
         "cannot relax"),
        ('budgets: [{name: b, amount_usd: "5"}, {name: b, amount_tokens: 5}]', "unique"),
        ("rules: [{name: a, scope: {env: dev}, allow_models: [gpt-4o]}, {name: b, scope: {env: dev}, deny_models: [gpt-4o]}]",
         "contradict"),
        ("limits: [{name: l, per: key}]", "needs requests_per_minute"),
    ],
)
def test_bad_policy_config_is_reported_at_load(yaml: str, fragment: str) -> None:
    from tokenops.config import parse_config
    from tokenops.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(yaml, file="t.yaml", env={})
    assert fragment in str(info.value), str(info.value)


