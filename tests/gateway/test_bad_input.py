"""Bad input and upstream failures: the right status, in the route's provider error shape, never a traceback."""

from __future__ import annotations

import httpx
import pytest

from harness import GatewayHarness

CHAT = "/v1/chat/completions"
MSG = "/v1/messages"
OK_CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}


def openai_error(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"type", "code", "message"} <= set(body["error"]), body
    return body["error"]


def anthropic_error(r: httpx.Response) -> dict:
    body = r.json()
    assert body["type"] == "error" and {"type", "message"} <= set(body["error"]), body
    return body["error"]


@pytest.mark.parametrize(
    ("content", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "'model' is required"),
        (b'{"model": "gpt-4o-mini"}', "messages", "'messages' is required"),
        (b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}', "model", "non-empty string"),
        (b'{"model": "m", "messages": "hello"}', "messages", "non-empty array"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream", "boolean"),
        (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": "10"}', "max_tokens", "integer"),
    ],
)
async def test_malformed_openai_requests_get_400_naming_the_field(
    gw: GatewayHarness, content: bytes, param: str | None, fragment: str
) -> None:
    r = await gw.client.post(CHAT, content=content, headers=gw.auth(**{"content-type": "application/json"}))
    assert r.status_code == 400
    err = openai_error(r)
    assert fragment in err["message"] and err["param"] == param and err["type"] == "invalid_request_error"
    assert r.headers["x-tokenops-request-id"].startswith("req_")


async def test_malformed_anthropic_request_uses_anthropic_shape(gw: GatewayHarness) -> None:
    r = await gw.client.post(MSG, json={"model": "claude-3-5-haiku", "messages": []}, headers={"x-api-key": gw.key})
    assert r.status_code == 400
    assert anthropic_error(r)["type"] == "invalid_request_error"
    r = await gw.client.post(MSG, json={"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "x"}]},
                             headers={"x-api-key": gw.key})  # fmt: skip
    assert r.status_code == 400 and "max_tokens" in anthropic_error(r)["message"]


async def test_rejected_calls_are_recorded_for_the_key(gw: GatewayHarness) -> None:
    r = await gw.client.post(CHAT, content=b"{oops", headers=gw.auth())
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "rejected" and ev.http_status == 400 and ev.cost_usd == 0
    assert ev.tags == {"team": "search", "env": "prod"}  # still attributed to the key's owner


async def test_body_over_the_limit_is_413(make_gateway) -> None:  # noqa: ANN001
    h = await make_gateway("gateway: {max_body_bytes: 1000, writer_interval: 0.2, writer: thread}")
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 2000}]}
    r = await h.client.post(CHAT, json=big, headers=h.auth())
    assert r.status_code == 413 and openai_error(r)["code"] == "request_too_large"
    r = await h.client.post(MSG, json=big, headers={"x-api-key": h.key})
    assert r.status_code == 413 and anthropic_error(r)["type"] == "request_too_large"
    ev = h.event(r.headers["x-tokenops-request-id"])  # a known key's refused call is recorded
    assert ev.status == "rejected" and ev.http_status == 413


async def test_unknown_route_404_and_wrong_method_405(gw: GatewayHarness) -> None:
    r = await gw.client.post("/v1/nope", json={}, headers=gw.auth())
    assert r.status_code == 404 and openai_error(r)["code"] == "not_found"
    r = await gw.client.get(CHAT, headers=gw.auth())
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await gw.client.get(MSG, headers=gw.auth())
    assert r.status_code == 405 and anthropic_error(r)
    r = await gw.client.post("/v1/models", headers=gw.auth())
    assert r.status_code == 405


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer tok-unknown"}, {"x-api-key": "nope"},
                                     {"authorization": "Basic abc"}])  # fmt: skip
async def test_missing_or_unknown_key_is_401(gw: GatewayHarness, headers: dict[str, str]) -> None:
    r = await gw.client.post(CHAT, json=OK_CHAT, headers=headers)
    assert r.status_code == 401 and openai_error(r)["type"] == "authentication_error"
    r = await gw.client.post(MSG, json={**OK_CHAT, "max_tokens": 5}, headers=headers)
    assert r.status_code == 401 and anthropic_error(r)["type"] == "authentication_error"
    # the SDKs (and Claude Code, which retries a 401 for minutes otherwise) give up at once
    assert r.headers["x-should-retry"] == "false"
    assert "x-tokenops-model" not in r.headers  # refused before any model was read: no empty header


async def test_revoked_key_is_401(gw: GatewayHarness) -> None:
    assert (await gw.client.post(CHAT, json=OK_CHAT, headers=gw.auth())).status_code == 200
    assert gw.ledger.revoke_key(gw.key_record.id)
    gw.gateway.keys.reload()  # what the writer's periodic refresh does
    r = await gw.client.post(CHAT, json=OK_CHAT, headers=gw.auth())
    assert r.status_code == 401 and "revoked" in openai_error(r)["message"]


@pytest.mark.parametrize("value", ["team", "team=", "=x", "team=a,,b=c", "te am=x", "team=a,team=b"])
async def test_malformed_tags_header_is_400_naming_it(gw: GatewayHarness, value: str) -> None:
    r = await gw.client.post(CHAT, json=OK_CHAT, headers=gw.auth(**{"x-tokenops-tags": value}))
    assert r.status_code == 400
    err = openai_error(r)
    assert err["code"] == "invalid_tags" and "X-TokenOps-Tags" in err["message"]


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limit_exceeded"), (500, "server_error"), (400, None)])
async def test_upstream_errors_are_relayed_with_status_and_body(gw: GatewayHarness, status: int, kind: str) -> None:
    r = await gw.client.post(CHAT, json={**OK_CHAT, "fake": {"status": status, "retry_after": 7}}, headers=gw.auth())
    assert r.status_code == status
    assert "error" in r.json()
    assert "x-should-retry" not in r.headers  # the provider did not say: the gateway does not either
    if status == 429:
        assert r.headers["retry-after"] == "7" and r.json()["error"]["code"] == kind
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "upstream_error" and ev.http_status == status and ev.cost_usd == 0


async def test_upstream_anthropic_overloaded_is_relayed(gw: GatewayHarness) -> None:
    r = await gw.client.post(MSG, json={**OK_CHAT, "model": "claude-3-5-haiku-20241022", "max_tokens": 5,
                                        "fake": {"status": 529}}, headers={"x-api-key": gw.key})  # fmt: skip
    assert r.status_code == 529 and anthropic_error(r)["type"] == "overloaded_error"


async def test_upstream_garbage_is_502(gw: GatewayHarness) -> None:
    r = await gw.client.post(CHAT, json={**OK_CHAT, "fake": {"garbage": True}}, headers=gw.auth())
    assert r.status_code == 502 and openai_error(r)["code"] == "upstream_invalid_response"
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "error" and ev.http_status == 502


async def test_upstream_unreachable_is_502_and_timeout_is_504(make_gateway) -> None:  # noqa: ANN001
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    h = await make_gateway(transport=httpx.MockTransport(refuse))
    r = await h.client.post(CHAT, json=OK_CHAT, headers=h.auth())
    assert r.status_code == 502 and openai_error(r)["code"] == "upstream_unreachable"
    r = await h.client.post(MSG, json={**OK_CHAT, "max_tokens": 5}, headers={"x-api-key": h.key})
    assert r.status_code == 502 and anthropic_error(r)["type"] == "api_error"

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    h2 = await make_gateway(transport=httpx.MockTransport(slow))
    r = await h2.client.post(CHAT, json=OK_CHAT, headers=h2.auth())
    assert r.status_code == 504 and openai_error(r)["code"] == "upstream_timeout"
    ev = h2.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "error" and ev.http_status == 504


async def test_model_on_a_provider_of_the_other_format_is_translated_or_400(make_gateway) -> None:  # noqa: ANN001
    """Chat completions and messages translate into each other; a route with no translation says where to go."""
    h = await make_gateway("models:\n  - {name: claude, provider: anthropic, model: claude-3-5-haiku}")
    r = await h.client.post(CHAT, json={**OK_CHAT, "model": "claude"}, headers=h.auth())
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    assert h.event(r.headers["x-tokenops-request-id"]).provider == "anthropic"
    r = await h.client.post("/v1/embeddings", json={"model": "claude", "input": "x"}, headers=h.auth())
    assert r.status_code == 400 and "/v1/messages" in openai_error(r)["message"]


async def test_count_tokens_bad_input_answers_in_anthropics_shape(gw: GatewayHarness) -> None:
    path = "/v1/messages/count_tokens"
    ok = {"model": "claude-3-5-haiku-20241022", "messages": [{"role": "user", "content": "x"}]}
    r = await gw.client.post(path, json=ok, headers={"x-api-key": "nope"})
    assert r.status_code == 401 and anthropic_error(r)["type"] == "authentication_error"
    r = await gw.client.post(path, content=b"{not json", headers=gw.auth())
    assert r.status_code == 400 and anthropic_error(r)["type"] == "invalid_request_error"
    assert "not valid JSON" in anthropic_error(r)["message"]
    r = await gw.client.post(path, json=[1, 2], headers=gw.auth())
    assert r.status_code == 400 and "must be a JSON object" in anthropic_error(r)["message"]
    for body in ({"messages": ok["messages"]}, {"model": 7}, {"model": "claude\r\nx", "messages": ok["messages"]}):
        r = await gw.client.post(path, json=body, headers=gw.auth())
        assert r.status_code == 400 and "model" in anthropic_error(r)["message"], body
    r = await gw.client.post(path, json={"model": ok["model"]}, headers=gw.auth())  # the provider says what is wrong
    assert r.status_code == 400 and "messages" in anthropic_error(r)["message"]
    r = await gw.client.get(path, headers=gw.auth())
    assert r.status_code == 405 and anthropic_error(r)
    r = await gw.client.post(path, json=ok, headers=gw.auth())
    assert r.status_code == 200 and r.json()["input_tokens"] > 0
    gw.flush()
    assert gw.ledger.count_events() == 0, "counting is never spend"


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/embeddings"])
async def test_a_model_only_another_kind_of_provider_serves_is_refused_where_it_cannot_go(
        gw: GatewayHarness, path: str) -> None:  # fmt: skip
    # Anthropic serves Claude models; the Responses and embeddings APIs have no translation to its API: a clear
    # 400 that says where to call, not a call sent to OpenAI (a 404 there, recorded unpriced)
    body = {"model": "claude-sonnet-4-5", "input": "hi"}
    r = await gw.client.post(path, json=body, headers=gw.auth())
    assert r.status_code == 400, r.text
    err = openai_error(r)
    assert err["code"] == "wrong_route" and err["param"] == "model"
    assert "provider 'anthropic'" in err["message"] and "/v1/messages or /v1/chat/completions" in err["message"]
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "rejected" and ev.cost_usd == 0
    ok = await gw.client.post("/v1/chat/completions", headers=gw.auth(),
                              json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200  # translated to Anthropic's API, as before
