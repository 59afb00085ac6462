"""Model tiers and the task matrix: a call tagged with a task goes to the cheapest healthy model of the task's
tier or above, across providers (translated), priced for the model that served it, with the model asked for
and the reason kept on its event.

Prices (https://platform.openai.com/docs/pricing, https://docs.anthropic.com/en/docs/about-claude/pricing, read
2026-12-02): gpt-4o-mini $0.15 / $0.60, gpt-4.1 $2 / $8, gpt-5 $1.25 / $10, claude-haiku-4-5 $1 / $5,
claude-sonnet-4-5 $3 / $15 per 1M input / output tokens.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from harness import GatewayHarness, write_config
from tokenops.errors import ConfigError

ROUTING = """routing:
  tiers:
    small: [gpt-4o-mini, claude-haiku-4-5]
    medium: [gpt-4.1]
    frontier: [gpt-5, claude-sonnet-4-5]
  tasks:
    classify: small
    code: frontier
"""
M = Decimal(1_000_000)


def chat(model: str, text: str = "Is this spam? Buy now!") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 50}


def task(name: str) -> dict[str, str]:
    return {"x-tokenops-tags": f"task={name}"}


async def test_a_task_goes_to_the_cheapest_model_of_its_tier_or_above(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(ROUTING)
    r = await gw.client.post("/v1/chat/completions", json=chat("gpt-5"), headers=gw.auth(**task("classify")))
    assert r.status_code == 200, r.text
    assert r.headers["x-tokenops-model"].startswith("gpt-4o-mini") and r.headers["x-tokenops-routed-from"] == "gpt-5"
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.model_requested == "gpt-5" and ev.model_used.startswith("gpt-4o-mini")
    assert ev.route_reason is not None and ev.route_reason.startswith("task classify: cheapest healthy model of tier small")
    u = ev.usage
    assert ev.cost_usd == (Decimal(u.input_tokens) * Decimal("0.15") + Decimal(u.output_tokens) * Decimal("0.60")) / M
    # a task of a higher tier: the cheapest model there (gpt-5 at $1.25 / $10 beats claude-sonnet-4-5 at $3 / $15)
    r = await gw.client.post("/v1/chat/completions", json=chat("gpt-4o-mini", "Write a parser."),
                             headers=gw.auth(**task("code")))  # fmt: skip
    assert r.status_code == 200 and r.headers["x-tokenops-model"].startswith("gpt-5")
    assert gw.event(r.headers["x-tokenops-request-id"]).model_requested == "gpt-4o-mini"
    # already the cheapest: served as asked, nothing to explain
    r = await gw.client.post("/v1/chat/completions", json=chat("gpt-4o-mini"), headers=gw.auth(**task("classify")))
    assert r.status_code == 200 and "x-tokenops-routed-from" not in r.headers
    assert gw.event(r.headers["x-tokenops-request-id"]).route_reason is None


async def test_models_outside_the_tiers_and_calls_without_a_task_are_served_as_asked(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(ROUTING)
    for model, headers in (("gpt-4o", task("classify")), ("gpt-5", {}), ("gpt-5", task("translate"))):
        r = await gw.client.post("/v1/chat/completions", json=chat(model), headers=gw.auth(**headers))
        assert r.status_code == 200 and r.headers["x-tokenops-model"].startswith(model), (model, headers)
        assert "x-tokenops-routed-from" not in r.headers


async def test_the_routing_alias_needs_a_task_and_crosses_providers(make_gateway: Any, fake_app: Any) -> None:
    gw: GatewayHarness = await make_gateway(ROUTING)
    r = await gw.client.post("/v1/chat/completions", json=chat("tokenops/auto"), headers=gw.auth())
    assert r.status_code == 400 and "task" in r.json()["error"]["message"]
    # an Anthropic-format call of a small task: gpt-4o-mini, through translation, answered in Anthropic's shape
    r = await gw.client.post("/v1/messages", json=chat("tokenops/auto"), headers=gw.auth(**task("classify")))
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "message" and fake_app.state.received[-1]["path"] == "/v1/chat/completions"
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.model_requested == "tokenops/auto" and ev.model_used.startswith("gpt-4o-mini") and ev.cost_usd > 0


async def test_an_unhealthy_provider_is_passed_over_and_none_left_is_a_503(make_gateway: Any, fake_app: Any) -> None:
    gw: GatewayHarness = await make_gateway(ROUTING)
    gw.gateway.router.healthy = lambda provider: provider != "openai"
    r = await gw.client.post("/v1/chat/completions", json=chat("gpt-5"), headers=gw.auth(**task("classify")))
    assert r.status_code == 200, r.text
    assert r.headers["x-tokenops-model"].startswith("claude-haiku-4-5")  # the cheapest left, translated
    assert fake_app.state.received[-1]["path"] == "/v1/messages"
    gw.gateway.router.healthy = lambda provider: False
    r = await gw.client.post("/v1/chat/completions", json=chat("gpt-5"), headers=gw.auth(**task("classify")))
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_model_available"
    assert "gpt-4o-mini" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("routing", "fragment"),
    [
        ("routing:\n  tiers: {small: []}\n", "tier 'small' has no models"),
        ("routing:\n  tiers: {small: [gpt-4o-mini]}\n  tasks: {code: frontier}\n", "task 'code' needs tier 'frontier'"),
        ("routing:\n  tiers: {small: [gpt-4o-mini], big: [gpt-4o-mini]}\n", "is in tiers 'small' and 'big'"),
        ("routing:\n  tiers: {small: [tokenops/auto]}\n", "routing alias"),
    ],
)
def test_a_malformed_task_matrix_is_a_config_error(tmp_path: Path, routing: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        write_config(tmp_path, routing)
    assert fragment in str(err.value) and "routing" in str(err.value), str(err.value)


async def test_a_tier_model_no_provider_serves_is_an_error_at_start(make_gateway: Any) -> None:
    with pytest.raises(ConfigError) as err:
        await make_gateway("routing:\n  tiers: {small: [no-such-model-7b]}\n")
    assert "no-such-model-7b" in str(err.value) and "routing.tiers.small" in str(err.value)


async def test_auto_routing_picks_strong_or_weak_from_the_prompt(make_gateway: Any, tmp_path: Path) -> None:
    """tokenops/auto without a task: the shipped difficulty router's estimate against the threshold (0: always the
    strong model, 1: the weak one), the reason on the event and the header."""
    for threshold, expected in (("0", "gpt-5"), ("1", "gpt-4o-mini")):
        gw: GatewayHarness = await make_gateway(
            f"routing:\n  auto: {{strong: gpt-5, weak: gpt-4o-mini, threshold: {threshold}}}\n")
        r = await gw.client.post("/v1/chat/completions", json=chat("tokenops/auto", "hi"), headers=gw.auth())
        assert r.status_code == 200, r.text
        assert r.headers["x-tokenops-model"].startswith(expected)
        ev = gw.event(r.headers["x-tokenops-request-id"])
        assert ev.model_requested == "tokenops/auto" and ev.route_reason is not None
        assert ev.route_reason.startswith("auto: p_strong ") and ("strong model" if expected == "gpt-5" else
                                                                 "weak model") in ev.route_reason  # fmt: skip


async def test_a_corrupt_router_model_file_is_an_error_at_start(make_gateway: Any, tmp_path: Path) -> None:
    bad = tmp_path / "router.json"
    bad.write_text('{"version": "router-v1", "weights": [1, 2')
    with pytest.raises(ConfigError) as err:
        await make_gateway(f"routing:\n  auto: {{strong: gpt-5, weak: gpt-4o-mini, model_file: {bad}}}\n")
    assert str(bad) in str(err.value)


def test_routing_through_the_openai_sdk(tmp_path: Path) -> None:
    """A task-tagged call to tokenops/auto from the official openai SDK, on real sockets: served by the cheapest
    model of the task's tier, the SDK reading the answer as usual."""
    import openai

    from harness import SocketStack

    stack = SocketStack(tmp_path, extra=ROUTING)
    try:
        with openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="tokenops/auto", messages=[{"role": "user", "content": "Is this spam? Buy now!"}],
                max_tokens=20, extra_headers={"X-TokenOps-Tags": "task=classify"})  # fmt: skip
            answer = raw.parse()
            assert answer.choices[0].message.content and answer.model.startswith("gpt-4o-mini")
            assert raw.headers["x-tokenops-routed-from"] == "tokenops/auto"
            with client.chat.completions.create(model="tokenops/auto", stream=True, max_tokens=20,
                                                messages=[{"role": "user", "content": "Write a parser."}],
                                                extra_headers={"X-TokenOps-Tags": "task=code"}) as chunks:  # fmt: skip
                models = {c.model for c in chunks}
            assert models and all(m.startswith("gpt-5") for m in models)
        ev = stack.event(raw.headers["x-tokenops-request-id"])
        assert ev.model_requested == "tokenops/auto" and ev.route_reason and ev.cost_usd > 0
    finally:
        stack.close()
