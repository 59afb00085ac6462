"""The pipeline is one list of stages, assembled in one place (``build_stages``): key → validate → tags → router →
policy → cache. A stage may answer a call itself (the upstream is not called, the call is recorded once, at no
cost); the policy reads the provider, model and price the router resolved instead of asking the router again;
a budget's downgrade routes the call anew."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from harness import GatewayHarness
from tokenops.call import Call
from tokenops.gateway.stages import Answer
from tokenops.gateway.stages.auth import KeyStage
from tokenops.gateway.stages.cache import CacheStage
from tokenops.gateway.stages.policy import PolicyStage
from tokenops.gateway.stages.router import RouterStage
from tokenops.gateway.stages.tags import TagStage
from tokenops.gateway.stages.validate import ValidateStage

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


async def test_the_stages_run_in_the_documented_order(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway()
    kinds = [type(stage) for stage in gw.gateway.stages]
    assert kinds == [KeyStage, ValidateStage, TagStage, RouterStage, PolicyStage, CacheStage]
    assert gw.gateway.key_stage is gw.gateway.stages[0]


class Canned:
    """A stage that answers every call whose last message says ``canned``, as a cache hit would."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool]] = []

    async def __call__(self, call: Call) -> Answer | None:
        self.seen.append((call.provider_name, call.upstream_model, call.reservation is not None))
        if call.body["messages"][-1]["content"] != "canned":
            return None
        body = {"id": "canned", "object": "chat.completion", "model": call.upstream_model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "from a stage"},
                             "finish_reason": "stop"}]}  # fmt: skip
        return Answer(200, orjson.dumps(body), fields={"model_used": call.upstream_model})


async def test_a_stage_answers_a_call_without_the_provider_and_it_is_recorded_once_at_no_cost(
    make_gateway: Any, fake_app: Any
) -> None:
    budget = 'budgets:\n  - {name: all, scope: {}, amount_usd: "5", period: month, hard: true}\n'
    gw: GatewayHarness = await make_gateway(budget)
    canned = Canned()
    gw.gateway.stages.append(canned)  # one line: a stage after the cache
    before = len(fake_app.state.received)
    r = await gw.client.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "canned"}]},
                             headers=gw.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "from a stage"
    assert r.headers["x-tokenops-cost-usd"] == "0.00" or Decimal(r.headers["x-tokenops-cost-usd"]) == 0
    assert len(fake_app.state.received) == before  # the provider never saw it
    # the stage ran after the router and the policy: it saw the resolved provider and the call's reservation
    assert canned.seen[-1] == ("openai", "gpt-4o-mini", True)
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "ok" and ev.cost_usd == 0 and ev.model_used == "gpt-4o-mini" and ev.key_id == gw.key_record.id
    # the reservation it held was given back: the whole budget is still there for the next call
    r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=gw.auth())
    assert r.status_code == 200 and len(fake_app.state.received) == before + 1
    assert Decimal(r.headers["x-tokenops-cost-usd"]) > 0


async def test_the_policy_reads_the_routed_model_instead_of_asking_the_router(make_gateway: Any) -> None:
    rules = ('budgets:\n  - {name: all, scope: {}, amount_usd: "5", period: month, hard: true}\n'
             'rules:\n  - {name: caps, max_output_tokens: 100, max_cost_per_call_usd: "1"}\n'
             'models:\n  - {name: small, provider: openai, model: gpt-4o-mini}\n')  # fmt: skip
    gw: GatewayHarness = await make_gateway(rules)
    router = gw.gateway.router
    asked: list[str] = []
    resolve = router.resolve

    def counting(model: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(model)
        return resolve(model, *args, **kwargs)

    router.resolve = counting  # type: ignore[method-assign]
    r = await gw.client.post("/v1/chat/completions", json={**CHAT, "model": "small"}, headers=gw.auth())
    assert r.status_code == 200, r.text
    assert asked == ["small"]  # once, by the router stage: budgets, rules and caps read what it resolved
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.model_requested == "small" and ev.model_used.startswith("gpt-4o-mini") and ev.cost_usd > 0


async def test_a_downgrade_routes_the_call_to_the_cheaper_model(make_gateway: Any, fake_app: Any) -> None:
    budget = ('budgets:\n  - name: all\n    scope: {}\n    amount_usd: "0.000001"\n    period: month\n'
              '    thresholds: [{at: 0.5, action: downgrade, model: anthropic/claude-haiku-4-5}]\n')  # fmt: skip
    gw: GatewayHarness = await make_gateway(budget)
    first = await gw.client.post("/v1/messages", json={**CHAT, "model": "claude-sonnet-4-5"}, headers=gw.auth())
    assert first.status_code == 200 and "x-tokenops-downgraded-from" not in first.headers
    gw.flush()
    r = await gw.client.post("/v1/messages", json={**CHAT, "model": "claude-sonnet-4-5"}, headers=gw.auth())
    assert r.status_code == 200, r.text
    assert r.headers["x-tokenops-downgraded-from"] == "claude-sonnet-4-5"
    assert fake_app.state.received[-1]["body"]["model"] == "claude-haiku-4-5"  # routed anew: the upstream name
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.model_requested == "claude-sonnet-4-5" and ev.model_used.startswith("claude-haiku-4-5")
