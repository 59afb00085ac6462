"""Hard limits are upper bounds: whatever a call asks for (n answers, images, documents, no output limit on a
reasoning model) and however many run at once, spend ends at most one call's maximum cost over a hard budget
or an approval grant's cap; and for random requests the real cost never exceeds what the call reserved."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import GatewayHarness, sql_value
from tokenops.ledger.events import SpendEvent
from tokenops.policy.estimate import max_cost
from tokenops.services.approvals import decide

CHAT = "/v1/chat/completions"
MSG = "/v1/messages"


def hard_budget(amount: str, name: str = "hard") -> str:
    return f"budgets:\n  - {{name: {name}, scope: {{team: t}}, amount_usd: \"{amount}\", period: month, hard: true}}\n"


def spent(h: GatewayHarness, where: str = "team = 't'") -> Decimal:
    h.flush()
    return Decimal(sql_value(h.ledger, f"SELECT coalesce(sum(cost_usd), 0) FROM events WHERE {where}"))


def price(h: GatewayHarness, model: str, provider: str = "openai") -> Any:
    return h.gateway.catalog.lookup((provider,), model, h.gateway.clock())


async def burst(h: GatewayHarness, body: dict[str, Any], n: int, path: str = CHAT) -> list[httpx.Response]:
    headers = h.auth() if path == CHAT else {"x-api-key": h.key}
    return list(await asyncio.gather(*(h.client.post(path, json=body, headers=headers) for _ in range(n))))


async def test_n_answers_are_reserved_n_times(make_gateway: Any) -> None:
    h = await make_gateway(hard_budget("0.01"), key_tags={"team": "t"})
    body = {"model": "gpt-4o-mini", "n": 100, "max_tokens": 40, "messages": [{"role": "user", "content": "go"}]}
    rs = await burst(h, body, 20)
    assert {r.status_code for r in rs} <= {200, 429} and any(r.status_code == 429 for r in rs)
    one_call = max_cost(price(h, "gpt-4o-mini"), 200, 100 * 40)
    total = spent(h)
    assert total <= Decimal("0.01") + one_call, f"spent {total} on a $0.01 hard budget"


async def test_images_are_reserved_at_what_they_can_be_billed(make_gateway: Any) -> None:
    h = await make_gateway(hard_budget("0.01"), key_tags={"team": "t"})
    parts = [{"type": "text", "text": "what is in these?"}] + [
        {"type": "image_url", "image_url": {"url": f"https://img.example/{i}.png"}} for i in range(20)]
    body = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": parts}],
            "fake": {"usage": {"input": 22_110, "output": 10}}}  # what OpenAI bills for 20 large images  # fmt: skip
    assert len(orjson.dumps(body)) < 2000
    rs = await burst(h, body, 20)
    assert sum(r.status_code == 200 for r in rs) == 1, "one call's reservation covers the whole budget"
    assert spent(h) <= Decimal("0.01") + max_cost(price(h, "gpt-4o"), 2000 + 20 * 6000, 10)


async def test_documents_are_reserved_at_the_context_window(make_gateway: Any) -> None:
    h = await make_gateway(hard_budget("0.01"), key_tags={"team": "t"})
    parts = [{"type": "file", "file": {"file_id": "file-abc"}}, {"type": "text", "text": "summarise"}]
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": parts}],
            "fake": {"usage": {"input": 120_000, "output": 10}}}  # a long PDF  # fmt: skip
    rs = await burst(h, body, 10)
    assert sum(r.status_code == 200 for r in rs) == 1
    window = price(h, "gpt-4o-mini").context_window
    assert window and window >= 120_000
    assert spent(h) <= Decimal("0.01") + max_cost(price(h, "gpt-4o-mini"), window, 10)


async def test_without_max_tokens_a_hard_budget_sends_the_ceiling_upstream(make_gateway: Any, fake_app: Any) -> None:
    h = await make_gateway(hard_budget("0.05"), key_tags={"team": "t"})
    body = {"model": "o3", "messages": [{"role": "user", "content": "prove it"}], "fake": {"think": 1_000_000}}
    rs = await burst(h, body, 5)
    ok = [r for r in rs if r.status_code == 200]
    assert ok and all("set by TokenOps" in r.headers["x-tokenops-clamped"] for r in ok)
    sent = [req["body"] for req in fake_app.state.received if req["body"] and req["body"].get("model") == "o3"]
    assert sent and all(b.get("max_tokens") == 16384 for b in sent)
    ceiling = max_cost(price(h, "o3"), 300, 16384)
    assert spent(h) <= Decimal("0.05") + ceiling, "a reasoning model spent far past a hard budget"
    stream = await h.client.post(CHAT, json={**body, "stream": True}, headers=h.auth())
    assert stream.status_code in (200, 429)


async def test_without_a_hard_limit_the_request_is_left_as_it_is(make_gateway: Any, fake_app: Any) -> None:
    h = await make_gateway("budgets:\n  - {name: soft, amount_usd: \"100\", period: month}\n", key_tags={"team": "t"})
    r = await h.client.post(CHAT, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                            headers=h.auth())  # fmt: skip
    assert r.status_code == 200 and "x-tokenops-clamped" not in r.headers
    assert "max_tokens" not in fake_app.state.received[-1]["body"]


async def test_an_official_openai_upstream_gets_max_completion_tokens(make_gateway: Any) -> None:
    from tokenops.gateway.providers.openai import OpenAIAdapter

    official = OpenAIAdapter("https://api.openai.com/v1", "k", {})
    out, _ = official.prepare("chat.completions", {"model": "o3", "messages": []}, "o3", 16384)
    assert out["max_completion_tokens"] == 16384 and "max_tokens" not in out
    out, _ = official.prepare("chat.completions", {"model": "o3", "max_tokens": 99999}, "o3", 500)
    assert out["max_tokens"] == 500  # the field the client chose is the one clamped


async def test_an_approval_grant_cap_holds_under_concurrency(make_gateway: Any) -> None:
    h = await make_gateway("rules:\n  - {name: gate, models: ['gpt-4o'], require_approval: true}\n",
                           key_tags={"team": "t"})  # fmt: skip
    body = {"model": "gpt-4o", "max_tokens": 2000, "messages": [{"role": "user", "content": "go"}],
            "fake": {"usage": {"output": 2000}}}  # fmt: skip
    r = await h.client.post(CHAT, json=body, headers=h.auth())
    assert r.status_code == 403
    approval = r.headers["x-tokenops-approval-id"]
    h.flush()
    decide(h.ledger, approval, approve=True, by="test", max_usd=Decimal("0.01"))
    await h.gateway.reload_policy()
    rs = await burst(h, body, 30)
    assert sum(r.status_code == 200 for r in rs) >= 1
    assert {r.json()["error"]["code"] for r in rs if r.status_code != 200} <= {"budget_exceeded", "approval_required"}
    under_grant = spent(h, f"approval_id = '{approval}'")
    one_call = max_cost(price(h, "gpt-4o"), 200, 2000)
    assert under_grant <= Decimal("0.01") + one_call, f"spent {under_grant} under a $0.01 grant"


# --- the property: real cost <= reservation --------------------------------------------------------------
IMAGE_MAX = {"gpt-4o": 85 + 8 * 170, "gpt-4o-mini": 2833 + 8 * 5667, "o3": 75 + 8 * 150,
             "claude-sonnet-4-5": 1600}  # each provider's documented most for one image  # fmt: skip


class WorstProvider:
    """Bills every call the most its request allows: every byte a token, every image at its model's maximum,
    a whole context window when a document is attached, the full output limit for every answer (a million
    tokens when the request set none)."""

    def __init__(self, windows: dict[str, int]):
        self.windows = windows

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        model = body["model"]
        images = docs = 0
        for m in body.get("messages", []):
            content = m.get("content")
            for part in content if isinstance(content, list) else []:
                images += part.get("type") in ("image_url", "image")
                docs += part.get("type") in ("file", "document")
        # every byte of what the prompt is made of a token (a BPE token covers at least one byte)
        prompt = len(orjson.dumps(body.get("messages"))) + images * IMAGE_MAX[model]
        if docs:  # a document can fill the context window, and no prompt is longer than that
            prompt = self.windows[model]
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 1_000_000
        output = limit * (body.get("n") or 1)
        if request.url.path.endswith("/messages"):
            usage = {"input_tokens": prompt, "output_tokens": output}
            return httpx.Response(200, json={"id": "m", "type": "message", "model": model, "content": [], "usage": usage})
        usage = {"prompt_tokens": prompt, "completion_tokens": output}
        return httpx.Response(200, json={"id": "c", "model": model, "choices": [], "usage": usage})


requests = st.fixed_dictionaries({
    "model": st.sampled_from(sorted(IMAGE_MAX)),
    "text": st.text(max_size=3000),
    "messages": st.integers(1, 4),
    "images": st.integers(0, 4),
    "docs": st.integers(0, 1),
    "n": st.integers(1, 4),
    "max_tokens": st.one_of(st.none(), st.integers(1, 50_000)),
})  # fmt: skip


def test_for_random_requests_the_real_cost_never_exceeds_the_reservation(make_gateway: Any, tmp_path: Any) -> None:
    from harness import create_key, write_config
    from tokenops.app import create_app

    loop = asyncio.new_event_loop()
    cfg = write_config(tmp_path, hard_budget("1000000") + "models:\n  - {name: claude-sonnet-4-5, provider: anthropic, "
                       "model: claude-sonnet-4-5}\n")  # fmt: skip
    gw = create_app(cfg)
    windows = {m: gw.catalog.lookup(("openai", "anthropic"), m, gw.clock()).context_window for m in IMAGE_MAX}
    assert all(windows.values())
    gw = create_app(cfg, transport=httpx.MockTransport(WorstProvider(windows)))  # type: ignore[arg-type]
    _, key = create_key(gw.ledger, tags={"team": "t"})
    loop.run_until_complete(gw.start())
    pairs: list[tuple[Decimal, Decimal | None, dict[str, Any]]] = []

    async def compare(call: Any, event: SpendEvent) -> None:
        held = call.reservation
        pairs.append((held.claims[0].amount, event.cost_usd, call.body))

    gw.meter.listeners.append(compare)  # type: ignore[union-attr]
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://gw.test")

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(req=requests)
    def one(req: dict[str, Any]) -> None:
        anthropic = req["model"].startswith("claude")
        parts: list[dict[str, Any]] = [{"type": "text", "text": req["text"]}]
        for i in range(req["images"]):
            parts.append({"type": "image", "source": {"type": "url", "url": f"https://x/{i}"}} if anthropic
                         else {"type": "image_url", "image_url": {"url": f"https://x/{i}"}})  # fmt: skip
        for _ in range(req["docs"]):
            parts.append({"type": "document", "source": {"type": "file", "file_id": "f"}} if anthropic
                         else {"type": "file", "file": {"file_id": "f"}})  # fmt: skip
        body: dict[str, Any] = {"model": req["model"], "messages": [{"role": "user", "content": parts}] * req["messages"]}
        if anthropic:
            body["max_tokens"] = req["max_tokens"] or 4096
            path, headers = MSG, {"x-api-key": key}
        else:
            body["n"] = req["n"]
            if req["max_tokens"]:
                body["max_tokens"] = req["max_tokens"]
            path, headers = CHAT, {"authorization": f"Bearer {key}"}
        r = loop.run_until_complete(client.post(path, json=body, headers=headers))
        assert r.status_code == 200, r.text
        reserved, cost, _ = pairs[-1]
        assert cost is not None and cost <= reserved, f"cost {cost} > reservation {reserved} for {req}"

    try:
        one()
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(gw.close())
        loop.close()
    assert len(pairs) >= 100


async def test_token_budgets_reserve_every_answer_too(make_gateway: Any) -> None:
    h = await make_gateway("budgets:\n  - {name: tok, scope: {team: t}, amount_tokens: 1000, period: day, hard: true}\n",
                           key_tags={"team": "t"})  # fmt: skip
    body = {"model": "o3", "n": 10, "max_tokens": 40, "messages": [{"role": "user", "content": "go"}],
            "fake": {"think": 1000}}  # every answer thinks through its whole limit  # fmt: skip
    rs = await burst(h, body, 10)
    assert any(r.status_code == 429 for r in rs)
    h.flush()
    used = sql_value(h.ledger, "SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM events WHERE status = 'ok'")
    one_call = len(orjson.dumps(body)) + 10 * 40
    assert used <= 1000 + one_call, f"{used} tokens on a 1000-token hard budget"


FALLBACK_IMAGES = [{"type": "text", "text": "what is in these?"}] + [
    {"type": "image_url", "image_url": {"url": f"https://img.example/{i}.png"}} for i in range(2)]  # fmt: skip


async def test_a_fallback_named_by_alias_is_reserved_at_its_own_image_tokens(make_gateway: Any) -> None:
    """gpt-4o-mini bills an image at ~33× gpt-4.1-nano's tokens; the fallback is named by an alias, whose name
    no image table knows: the reservation must still be gpt-4o-mini's."""
    h = await make_gateway(hard_budget("0.01") + "models:\n  - {name: mini, provider: openai, model: gpt-4o-mini}\n"
                           "routing:\n  backoff: 0\n  fallbacks: {gpt-4.1-nano: [mini]}\n", key_tags={"team": "t"})
    body = {"model": "gpt-4.1-nano", "max_tokens": 10, "messages": [{"role": "user", "content": FALLBACK_IMAGES}],
            "fake": {"status": 503, "status_models": "gpt-4.1-nano", "usage": {"input": 96_348, "output": 10}}}
    rs = await burst(h, body, 20)
    assert {r.status_code for r in rs} <= {200, 429} and any(r.status_code == 200 for r in rs)
    one_call = max_cost(price(h, "gpt-4o-mini"), 96_348, 10)
    total = spent(h)
    assert total <= Decimal("0.01") + one_call, f"spent {total} on a $0.01 hard budget"


async def test_a_token_budget_reserves_for_the_fallback_too(make_gateway: Any) -> None:
    h = await make_gateway("budgets:\n  - {name: tok, scope: {team: t}, amount_tokens: 20000, period: month, "
                           "hard: true}\nrouting:\n  backoff: 0\n  fallbacks: {gpt-4o: [gpt-4o-mini]}\n",
                           key_tags={"team": "t"})  # fmt: skip
    body = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": FALLBACK_IMAGES}],
            "fake": {"status": 503, "status_models": "gpt-4o", "usage": {"input": 96_348, "output": 10}}}
    rs = await burst(h, body, 20)
    assert any(r.status_code == 200 for r in rs)
    h.flush()
    tokens = int(sql_value(h.ledger, "SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM events "
                                     "WHERE team = 't'"))  # fmt: skip
    assert tokens <= 20_000 + 96_358, f"{tokens} tokens on a 20,000-token hard budget"


async def test_a_call_that_outlives_its_reservation_is_still_counted(make_gateway: Any) -> None:
    """The state lets a reservation lapse after state_options.reservation_ttl (its process may have died): a call
    still running then (a long stream or background response) is counted when it ends, not lost."""
    h = await make_gateway(hard_budget("0.01"), key_tags={"team": "t"})
    h.gateway.engine.reservation_ttl = 1.0  # state_options.reservation_ttl (the stack's own state_options stay)
    body = {"model": "gpt-4o", "max_tokens": 400, "messages": [{"role": "user", "content": "slow"}],
            "fake": {"delay_ms": 1500, "usage": {"input": 10, "output": 400}}}  # ~$0.004 each, past the ttl
    quick = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "quick"}]}

    async def later() -> None:  # a reservation made after the ttl: the state lets the slow calls' lapse
        await asyncio.sleep(1.2)
        await h.client.post(CHAT, json=quick, headers=h.auth())

    for _ in range(4):
        await asyncio.gather(burst(h, body, 2), later())
    total = spent(h)
    one_call = max_cost(price(h, "gpt-4o"), 10, 400)
    assert total <= Decimal("0.01") + one_call, f"spent {total} on a $0.01 hard budget"
    (status,) = await h.gateway.engine.status()
    assert Decimal(status["spent"]) == total  # the counter holds every call the ledger holds
