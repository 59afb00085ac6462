"""Fallbacks and provider health: on 429, 5xx, a timeout or an unreachable provider the call goes to the next
model of its chain before anything reaches the client, priced for the model that answered, its reservation
sized for the dearest model it may end on; a provider that keeps failing is skipped for a while (circuit
breaker); when every model fails, 502 naming what was tried.

Prices (https://platform.openai.com/docs/pricing, read 2026-12-02): gpt-4o $2.50 / $10, gpt-4o-mini $0.15 /
$0.60, gpt-4.1 $2 / $8 per 1M input / output tokens.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from harness import GatewayHarness, free_port
from tokenops.call import Call
from tokenops.config import parse_config
from tokenops.errors import ConfigError

M = Decimal(1_000_000)
NOW = datetime.now(UTC)


def routing(extra: str = "") -> str:
    return f"""routing:
  fallbacks:
    gpt-4o: [gpt-4o-mini, gpt-4.1]
    broken: [gpt-4o-mini]
  backoff: 0
  breaker: {{failures: 3, cooldown: 60}}
models:
  - {{name: broken, provider: down, model: gpt-4o}}
{extra}"""


def chat(model: str, **fake: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 40}
    if fake:
        body["fake"] = fake
    return body


class Unreachable(httpx.AsyncBaseTransport):
    """The fake provider in-process, except at ``port``, where nothing answers (connection refused)."""

    def __init__(self, app: Any, port: int):
        self.inner = httpx.ASGITransport(app=app)
        self.port = port

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.port == self.port:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture
def make(make_gateway: Any, fake_app: Any) -> Any:
    """A gateway with the chains above and a provider "down" that nothing answers."""
    port = free_port()
    down = f'  down: {{base_url: "http://127.0.0.1:{port}/v1", kind: openai, api_key: k}}\n'

    async def build(extra: str = "") -> GatewayHarness:
        gw: GatewayHarness = await make_gateway(routing(extra), providers=down, transport=Unreachable(fake_app, port))
        return gw

    return build


async def test_a_5xx_goes_to_the_next_model_priced_for_the_one_that_answered(make: Any, fake_app: Any) -> None:
    gw: GatewayHarness = await make()
    r = await gw.client.post("/v1/chat/completions", json=chat("gpt-4o", status=503, status_models="gpt-4o"),
                             headers=gw.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["x-tokenops-model"].startswith("gpt-4o-mini") and r.headers["x-tokenops-routed-from"] == "gpt-4o"
    assert [x["body"]["model"] for x in list(fake_app.state.received)[-2:]] == ["gpt-4o", "gpt-4o-mini"]
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.model_requested == "gpt-4o" and ev.model_used.startswith("gpt-4o-mini") and ev.status == "ok"
    assert ev.route_reason == "fallback: gpt-4o (503) failed"
    u = ev.usage
    assert ev.cost_usd == (Decimal(u.input_tokens) * Decimal("0.15") + Decimal(u.output_tokens) * Decimal("0.60")) / M
    # a 429 likewise, down two models of the chain; a stream falls back on its status, before any byte
    r = await gw.client.post("/v1/chat/completions", json={**chat("gpt-4o", status=429,
                             status_models="gpt-4o,gpt-4o-mini"), "stream": True}, headers=gw.auth())  # fmt: skip
    assert r.status_code == 200 and "data: [DONE]" in r.text
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.model_used.startswith("gpt-4.1") and ev.route_reason == "fallback: gpt-4o (429); gpt-4o-mini (429) failed"
    assert ev.cost_usd == (Decimal(ev.usage.input_tokens) * 2 + Decimal(ev.usage.output_tokens) * 8) / M


async def test_an_unreachable_provider_falls_back_and_its_breaker_opens(make: Any) -> None:
    gw: GatewayHarness = await make()
    for _ in range(3):  # three failures in a row: the breaker of provider "down" opens (failures: 3)
        r = await gw.client.post("/v1/chat/completions", json=chat("broken"), headers=gw.auth())
        assert r.status_code == 200 and r.headers["x-tokenops-model"].startswith("gpt-4o-mini")
        assert gw.event(r.headers["x-tokenops-request-id"]).route_reason == "fallback: broken (unreachable) failed"
    assert gw.gateway.breakers.state() == {"down": "open"}
    r = await gw.client.post("/v1/chat/completions", json=chat("broken"), headers=gw.auth())
    assert r.status_code == 200
    assert gw.event(r.headers["x-tokenops-request-id"]).route_reason == "fallback: broken (breaker open) failed"
    # while it is open, a task's router passes over the provider too
    assert gw.gateway.router.healthy("down") is False and gw.gateway.router.healthy("openai") is True


async def test_every_model_failing_is_a_502_naming_what_was_tried(make: Any) -> None:
    gw: GatewayHarness = await make()
    r = await gw.client.post("/v1/chat/completions", json=chat("gpt-4o", status=500), headers=gw.auth())
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "fallbacks_exhausted"
    assert err["message"] == "every model tried failed: gpt-4o (500), gpt-4o-mini (500), gpt-4.1 (500)"
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "error" and ev.cost_usd == 0 and ev.error_code == "fallbacks_exhausted"
    # without a chain the provider's own error is relayed, as ever
    r = await gw.client.post("/v1/chat/completions", json=chat("gpt-4o-mini", status=503), headers=gw.auth())
    assert r.status_code == 503


async def test_the_reservation_covers_the_dearest_model_of_the_chain(make_gateway: Any) -> None:
    """gpt-4o-mini's fallback is gpt-4o, 17x dearer: the call reserves what it would cost at most on gpt-4o."""
    budget = 'budgets:\n  - {name: all, scope: {}, amount_usd: "10", period: month, hard: true}\n'
    reserved: list[Decimal] = []

    async def peek(call: Call) -> None:  # a stage after the policy: what the call holds on the budget
        reserved.append(call.reservation.claims[0].amount)

    body = chat("gpt-4o-mini") | {"max_tokens": 30}
    for chain in ("", "routing:\n  fallbacks: {gpt-4o-mini: [gpt-4o]}\n"):
        gw: GatewayHarness = await make_gateway(budget + chain)
        gw.gateway.stages.append(peek)
        r = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
        assert r.status_code == 200, r.text
    alone, chained = reserved
    mini, big = gw.gateway.catalog.lookup(("openai",), "gpt-4o-mini", NOW), gw.gateway.catalog.lookup(("openai",), "gpt-4o", NOW)
    assert mini is not None and big is not None
    # the same input bound and output limit, at each model's rates
    tokens_in = (alone - 30 * mini.output_per_mtok / M) / (mini.input_per_mtok / M)
    assert chained == (tokens_in * big.input_per_mtok + 30 * big.output_per_mtok) / M and chained > 10 * alone


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("routing:\n  fallbacks: {gpt-4o: []}\n", "the list is empty"),
        ("routing:\n  fallbacks: {gpt-4o: [gpt-4o-mini, gpt-4o]}\n", "repeat a model"),
        ("routing:\n  fallbacks: {gpt-4o: [gpt-4o-mini, gpt-4o-mini]}\n", "repeat a model"),
        ("routing:\n  fallbacks: {gpt-4o: [tokenops/auto]}\n", "routing alias"),
        ("routing:\n  breaker: {failures: 0}\n", "greater than or equal to 1"),
    ],
)
def test_a_malformed_chain_is_a_config_error(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert fragment in str(err.value), str(err.value)

