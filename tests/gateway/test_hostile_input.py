"""Hostile client input: every answer is in the route's error shape (never a 500 or a dropped connection), a
request id is recorded exactly once, and nothing a client sends can grow the gateway without bound."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from harness import GatewayHarness, sql_value

CHAT = "/v1/chat/completions"
MSG = "/v1/messages"


def body(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def times_recorded(h: GatewayHarness, request_id: str) -> int:
    h.flush()
    return int(sql_value(h.ledger, "SELECT count(*) FROM events WHERE request_id = ?", [request_id]))


@pytest.mark.parametrize("model", ["gpt\r\nx-evil: 1", "gpt\nx", "nul\x00", "tab\tmodel", "a" * 300])
async def test_control_characters_or_an_overlong_model_are_a_400_recorded_once(gw: GatewayHarness, model: str) -> None:
    r = await gw.client.post(CHAT, json=body(model), headers=gw.auth())
    assert r.status_code == 400 and r.json()["error"]["param"] == "model" and "x-evil" not in r.headers
    rid = r.headers["x-tokenops-request-id"]
    assert times_recorded(gw, rid) == 1 and gw.event(rid).status == "rejected"
    r = await gw.client.post(MSG, json={**body(model), "max_tokens": 5}, headers={"x-api-key": gw.key})
    assert r.status_code == 400 and r.json()["type"] == "error"


@pytest.mark.parametrize("model", ["模型", "caf\u00e9-7b", "\U0001f916-bot"])
async def test_a_non_latin1_model_name_is_answered_and_recorded_once(make_gateway: Any, model: str) -> None:
    h = await make_gateway("rules:\n  - {name: no-bots, deny_models: ['*bot*', '模*', 'caf*']}")
    r = await h.client.post(CHAT, json=body(model), headers=h.auth())  # refused by a rule: the model is in headers
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert r.headers["x-tokenops-model"].isascii() and "%" in r.headers["x-tokenops-model"]
    rid = r.headers["x-tokenops-request-id"]
    assert times_recorded(h, rid) == 1 and h.event(rid).model_requested == model


async def test_a_non_latin1_model_served_upstream_is_answered(gw: GatewayHarness) -> None:
    r = await gw.client.post(CHAT, json=body("模型-local"), headers=gw.auth())
    assert r.status_code == 200
    rid = r.headers["x-tokenops-request-id"]
    assert times_recorded(gw, rid) == 1 and gw.event(rid).status == "ok"


async def test_json_nested_deeper_than_the_encoder_allows_is_a_400(gw: GatewayHarness) -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    r = await gw.client.post(CHAT, json=body(metadata_extra=deep), headers=gw.auth())
    assert r.status_code == 400 and "nests deeper" in r.json()["error"]["message"]
    r = await gw.client.post(CHAT, content=b"[" * 5000 + b"]" * 5000, headers=gw.auth())
    assert r.status_code == 400
    wide = body(tools=[{"type": "function", "function": {"name": f"f{i}", "parameters": {"type": "object"}}}
                       for i in range(200)])  # fmt: skip
    assert (await gw.client.post(CHAT, json=wide, headers=gw.auth())).status_code == 200  # many, not deep


@pytest.mark.parametrize("n", [0, -1, 129, "2", 1.5, True])
async def test_n_out_of_range_is_a_400(gw: GatewayHarness, n: Any) -> None:
    r = await gw.client.post(CHAT, json=body(n=n), headers=gw.auth())
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


async def test_the_tags_header_is_bounded(gw: GatewayHarness) -> None:
    many = ",".join(f"k{i}=v" for i in range(60_000))
    r = await gw.client.post(CHAT, json=body(), headers=gw.auth(**{"x-tokenops-tags": many}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_tags"
    forty = ",".join(f"k{i}=v" for i in range(40))
    r = await gw.client.post(CHAT, json=body(), headers=gw.auth(**{"x-tokenops-tags": forty}))
    assert r.status_code == 400 and "at most 32" in r.json()["error"]["message"]
    meta = {f"m{i}": "v" for i in range(40)}
    r = await gw.client.post(CHAT, json=body(metadata=meta), headers=gw.auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_tags"
    ok = ",".join(f"k{i}=v" for i in range(20))
    r = await gw.client.post(CHAT, json=body(), headers=gw.auth(**{"x-tokenops-tags": ok}))
    assert r.status_code == 200 and len(gw.event(r.headers["x-tokenops-request-id"]).tags) == 22


async def test_a_utf8_tag_value_from_the_header_is_the_same_tag_as_from_metadata(gw: GatewayHarness) -> None:
    headers = [("authorization", f"Bearer {gw.key}"), ("x-tokenops-tags", "feature=café".encode())]
    r1 = await gw.client.post(CHAT, json=body(), headers=headers)
    r2 = await gw.client.post(CHAT, json=body(metadata={"feature": "café"}), headers=gw.auth())
    assert r1.status_code == r2.status_code == 200
    t1 = gw.event(r1.headers["x-tokenops-request-id"]).tags["feature"]
    t2 = gw.event(r2.headers["x-tokenops-request-id"]).tags["feature"]
    assert t1 == t2 == "café"
    bad = [("authorization", f"Bearer {gw.key}"), ("x-tokenops-tags", b"feature=caf\xe9")]  # Latin-1 bytes
    assert (await gw.client.post(CHAT, json=body(), headers=bad)).status_code == 200


@pytest.mark.parametrize("value", ["nul\x00", "x" * 5000])
async def test_tag_values_with_control_characters_or_overlong_are_refused(gw: GatewayHarness, value: str) -> None:
    r = await gw.client.post(CHAT, json=body(), headers=gw.auth(**{"x-tokenops-tags": f"feature={value}"}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_tags"


@pytest.mark.parametrize(("where", "value"), [("header", "u" * 300), ("body", "u" * 300), ("body", "a\x00b")])
async def test_end_users_are_bounded(gw: GatewayHarness, where: str, value: str) -> None:
    if where == "header":
        r = await gw.client.post(CHAT, json=body(), headers=gw.auth(**{"x-tokenops-user": value}))
    else:
        r = await gw.client.post(CHAT, json=body(user=value), headers=gw.auth())
    assert r.status_code == 400


async def test_metrics_labels_are_bounded_whatever_models_clients_name(gw: GatewayHarness) -> None:
    before = len((await gw.client.get("/metrics")).content)
    for i in range(100):
        name = f"made-up-{i}-" + "x" * 200
        r = await gw.client.post(CHAT, json=body(name), headers=gw.auth())
        assert r.status_code == 200
    text = (await gw.client.get("/metrics")).text
    assert "made-up" not in text and 'model="other"' in text
    assert len(text) < before + 20_000
    r = await gw.client.post(CHAT, json=body("gpt-4o-mini"), headers=gw.auth())
    assert 'model="gpt-4o-mini"' in (await gw.client.get("/metrics")).text


async def test_metrics_can_be_protected(make_gateway: Any) -> None:
    h = await make_gateway("gateway: {writer: thread, metrics_key: metrics-scrape-key-0123456789}\n"
                           "admin_key: admin-key-0123456789-abcdef")  # fmt: skip
    assert (await h.client.get("/metrics")).status_code == 401
    assert (await h.client.get("/metrics", headers=h.auth())).status_code == 401  # a client key is not enough
    r = await h.client.get("/metrics", headers={"authorization": "Bearer metrics-scrape-key-0123456789"})
    assert r.status_code == 200 and b"tokenops_requests" in r.content
    r = await h.client.get("/metrics", headers={"authorization": "Bearer admin-key-0123456789-abcdef"})
    assert r.status_code == 200


async def test_a_client_header_that_cannot_go_upstream_is_dropped(gw: GatewayHarness) -> None:
    headers = [("x-api-key", gw.key), ("anthropic-beta", "caf\u00e9".encode())]
    r = await gw.client.post(MSG, json={**body("claude-3-5-haiku-20241022"), "max_tokens": 5}, headers=headers)
    assert r.status_code == 200


async def test_upstream_request_keeps_working_over_a_real_socket_with_odd_models(make_gateway: Any) -> None:
    """Through uvicorn (a real HTTP server), not only the in-process transport."""
    from harness import PROVIDER_KEY
    from tokenops.fakeprovider import create_fake_provider
    from tokenops.servers import BackgroundServer

    with BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)) as fake:
        h = await make_gateway(transport=httpx.AsyncHTTPTransport(), upstream=fake.url)
        with BackgroundServer(h.gateway) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                r = await client.post(CHAT, json=body("模型", fake={"model": "gpt\u2028\u00e9"}), headers=h.auth())
                assert r.status_code == 200 and r.headers["x-tokenops-model"].isascii()


async def test_a_failure_after_the_call_was_recorded_records_nothing_more(gw: GatewayHarness,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Whatever fails between recording a call and answering it, the request id is recorded once."""
    import tokenops.gateway.upstream as upstream

    real = upstream.encode_headers
    calls = {"n": 0}

    def fails_once(headers: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug after the call was recorded")
        return real(headers)

    monkeypatch.setattr(upstream, "encode_headers", fails_once)
    r = await gw.client.post(CHAT, json=body(), headers=gw.auth())
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    rid = r.headers["x-tokenops-request-id"]
    assert times_recorded(gw, rid) == 1
    assert r.headers["x-tokenops-cost-usd"] != "0.00", "the error says what the recorded call cost"
