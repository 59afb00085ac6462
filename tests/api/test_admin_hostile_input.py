"""Hostile input on the admin API: numbers out of range, non-finite floats and money, scope values that break
the ``k=v,…`` form, absurd times, login floods and revoked keys. Every answer is a 4xx, never a 500."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from harness import GatewayHarness

ADMIN = "admin-secret-key-0123"
JSON = {"content-type": "application/json"}


@pytest.fixture
async def admin(make_gateway: Callable[..., Any]) -> GatewayHarness:
    return await make_gateway(f"admin_key: {ADMIN}\n", key_tags={"team": "a"})


def auth(key: str = ADMIN) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def put(h: GatewayHarness, path: str, body: str) -> httpx.Response:
    """A raw body: Python's JSON parser (FastAPI's) reads NaN, Infinity and 1e400 (as inf) without complaint."""
    return await h.client.put(path, content=body, headers={**JSON, **auth()})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/admin/budgets/b", '{"amount_tokens": 18446744073709551616}'),
        ("/v1/admin/budgets/b", '{"amount_tokens": 1000000000000001}'),
        ("/v1/admin/budgets/b", '{"amount_usd": "1", "thresholds": [{"at": NaN}]}'),
        ("/v1/admin/budgets/b", '{"amount_usd": "1", "thresholds": [{"at": "NaN"}]}'),
        ("/v1/admin/budgets/b", '{"amount_usd": "1", "thresholds": [{"at": "Infinity"}]}'),
        ("/v1/admin/budgets/b", '{"amount_usd": 1e400}'),
        ("/v1/admin/budgets/b", '{"amount_usd": NaN}'),
        ("/v1/admin/budgets/b", '{"amount_usd": "1", "scope": {"team": Infinity}}'),
        ("/v1/admin/limits/l", '{"requests_per_minute": 1e20}'),
        ("/v1/admin/limits/l", '{"requests_per_minute": 1000000001}'),
        ("/v1/admin/limits/l", '{"tokens_per_minute": 1000000000000000000000000000000}'),
        ("/v1/admin/rules/r", '{"max_output_tokens": 1000000000000000000000000000000}'),
        ("/v1/admin/rules/r", '{"max_input_tokens": 18446744073709551616}'),
    ],
)
async def test_numbers_out_of_range_are_refused_never_a_500(admin: GatewayHarness, path: str, body: str) -> None:
    r = await put(admin, path, body)
    assert r.status_code in (400, 422), r.text
    r.json()  # a JSON answer, whatever the input held
    listed = (await admin.client.get(path.rsplit("/", 1)[0], headers=auth())).json()
    assert path.rsplit("/", 1)[1] not in {i["name"] for i in listed.get("budgets", listed.get("items"))}


@pytest.mark.parametrize("amount", ["1e400", "NaN", "Infinity", "-Infinity", "sNaN", "-0", "0.0000000000001",
                                    "1000000000000000.01", "1e16"])  # fmt: skip
async def test_money_must_be_finite_bounded_and_exact_to_twelve_places(admin: GatewayHarness, amount: str) -> None:
    for path, field in (("/v1/admin/budgets/b", "amount_usd"), ("/v1/admin/limits/l", "usd_per_hour"),
                        ("/v1/admin/rules/r", "max_cost_per_call_usd")):  # fmt: skip
        r = await admin.client.put(path, json={field: amount}, headers=auth())
        assert r.status_code == 400, (field, amount, r.text)
        assert field in r.json()["error"]["message"]


async def test_money_at_the_bounds_is_accepted(admin: GatewayHarness) -> None:
    r = await admin.client.put("/v1/admin/budgets/b", json={"amount_usd": "1000000000000000"}, headers=auth())
    assert r.status_code == 200 and r.json()["amount"] == "1000000000000000", r.text
    r = await admin.client.put("/v1/admin/limits/l", json={"usd_per_hour": "0.000000000001"}, headers=auth())
    assert r.status_code == 200 and r.json()["usd_per_hour"] == "0.000000000001", r.text
    r = await admin.client.put("/v1/admin/budgets/t", json={"amount_tokens": 10**15}, headers=auth())
    assert r.status_code == 200, r.text
    r = await admin.client.put("/v1/admin/limits/m", json={"requests_per_minute": 10**9, "tokens_per_minute": 10**15,
                                                           "usd_per_hour": "1000000000000000"}, headers=auth())  # fmt: skip
    assert r.status_code == 200, r.text
    r = await admin.client.put("/v1/admin/rules/r", json={"max_input_tokens": 10**15, "max_output_tokens": 10**15,
                                                          "max_cost_per_call_usd": "1000000000000000"}, headers=auth())  # fmt: skip
    assert r.status_code == 200, r.text
    chat = await admin.client.post("/v1/chat/completions", headers=admin.auth(),
                                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert chat.status_code == 200, "the engine computes with the largest settings"


@pytest.mark.parametrize(("start", "end"), [("0001-01-01T00:00:00+14:00", "2026-01-01"),
                                            ("2026-01-01", "9999-12-31T23:59:59-14:00"),
                                            ("9999-12-30T00:00:00Z", "9999-12-31T23:59:59Z"),
                                            ("1969-12-31", "2026-01-01")])  # fmt: skip
async def test_custom_periods_out_of_range_are_400_and_do_not_poison_the_engine(admin: GatewayHarness, start: str,
                                                                              end: str) -> None:  # fmt: skip
    body = {"amount_usd": "1", "period": "custom", "start": start, "end": end}
    r = await admin.client.put("/v1/admin/budgets/c", json=body, headers=auth())
    assert r.status_code == 400 and "1970-01-01 and 9000-01-01" in r.json()["error"]["message"], r.text
    r = await admin.client.put("/v1/admin/budgets/d", json={"amount_usd": "1", "period": "day"}, headers=auth())
    assert r.status_code == 200, r.text


async def test_an_approval_until_beyond_the_year_9999_in_utc_is_400(admin: GatewayHarness) -> None:
    r = await admin.client.post("/v1/admin/approvals/apr_nope/approve", json={"until": "9999-12-31T23:00:00-14:00"},
                                headers=auth())  # fmt: skip
    assert r.status_code == 400 and "until" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("max_usd", ["1e400", "NaN", "-0", "0.0000000000001", "1e16"])
async def test_approval_max_usd_follows_the_money_rule(admin: GatewayHarness, max_usd: str) -> None:
    r = await admin.client.post("/v1/admin/approvals/apr_nope/approve", json={"max_usd": max_usd}, headers=auth())
    assert r.status_code == 400 and "max_usd" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("value", ["a,b", "a=b", " a", "a ", "", "x" * 201, "a\tb,c=d"])
async def test_scope_values_that_break_the_text_form_are_refused(admin: GatewayHarness, value: str) -> None:
    for path, body in (("/v1/admin/budgets/b", {"amount_usd": "1"}), ("/v1/admin/limits/l", {"requests_per_minute": 1}),
                       ("/v1/admin/rules/r", {"deny_models": ["o1*"]})):  # fmt: skip
        r = await admin.client.put(path, json={**body, "scope": {"team": value}}, headers=auth())
        assert r.status_code == 400 and "scope" in r.json()["error"]["message"], (path, value, r.text)


@pytest.mark.parametrize("query", [{"since": "99999999d"}, {"until": "99999999d"}, {"since": "9" * 60 + "h"},
                                   {"since": "0001-01-01T00:00:00+14:00"}, {"until": "9999-12-31T23:00:00-14:00"},
                                   {"since": "99999-01-01"}])  # fmt: skip
async def test_spend_report_times_out_of_range_are_400(admin: GatewayHarness, query: dict[str, str]) -> None:
    r = await admin.client.get("/v1/admin/reports/spend", params=query, headers=auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
    assert next(iter(query)) in r.json()["error"]["message"]


async def test_openapi_document_states_the_bounds(admin: GatewayHarness) -> None:
    schemas = (await admin.client.get("/openapi.json")).json()["components"]["schemas"]

    def prop(model: str, name: str) -> dict[str, Any]:
        p = schemas[model]["properties"][name]
        return next((a for a in p.get("anyOf", [p]) if a.get("type") in ("integer", "number", "string")), p)

    assert prop("BudgetIn", "amount_tokens")["maximum"] == 10**15
    assert prop("LimitIn", "requests_per_minute")["maximum"] == 10**9
    assert prop("LimitIn", "tokens_per_minute")["maximum"] == 10**15
    assert prop("RuleIn", "max_output_tokens")["maximum"] == 10**15
    assert prop("RuleIn", "max_input_tokens")["maximum"] == 10**15
    assert "12 decimal places" in schemas["BudgetIn"]["properties"]["amount_usd"]["description"]
    assert prop("ApproveIn", "max_usd")["maxLength"] == prop("LimitIn", "usd_per_hour")["maxLength"] <= 64


def _stepping_clock() -> tuple[list[datetime], Callable[[], datetime]]:
    now = [datetime(2026, 11, 2, 12, 0, tzinfo=UTC)]
    return now, lambda: now[0]


async def test_failed_admin_logins_are_throttled_per_address(make_gateway: Callable[..., Any]) -> None:
    now, clock = _stepping_clock()
    h = await make_gateway(f"admin_key: {ADMIN}\n", clock=clock)
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=h.gateway, client=("10.0.0.2", 5000)),
                              base_url="http://gateway.test")  # fmt: skip
    try:
        wrong = [{}, auth("nope"), auth(h.key)] * 4  # no key, an unknown key, a client key
        for headers in wrong[:10]:
            assert (await h.client.get("/v1/admin/keys", headers=headers)).status_code in (401, 403)
        for headers in (wrong[10], auth()):  # even the right key, from that address, until the window passes
            r = await h.client.get("/v1/admin/keys", headers=headers)
            assert r.status_code == 429, r.text
            assert r.json()["error"] == {"type": "rate_limit_error", "code": "too_many_failed_logins",
                                         "message": r.json()["error"]["message"]}  # fmt: skip
            assert 1 <= int(r.headers["retry-after"]) <= 60
        assert (await other.get("/v1/admin/keys", headers=auth())).status_code == 200, "other addresses are not held"
        now[0] += timedelta(seconds=30)
        assert (await h.client.get("/v1/admin/keys", headers=auth())).status_code == 429
        now[0] += timedelta(seconds=31)
        assert (await h.client.get("/v1/admin/keys", headers=auth())).status_code == 200
        # the model-call routes are not the admin API: a throttled address can still make calls with its key
        chat = await h.client.post("/v1/chat/completions", headers=h.auth(),
                                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert chat.status_code == 200
    finally:
        await other.aclose()


async def test_login_throttle_memory_is_bounded() -> None:
    from tokenops.api.app import LoginThrottle

    t = [0.0]
    throttle = LoginThrottle(limit=3, window=60.0, max_addresses=100, clock=lambda: t[0])
    for i in range(10_000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
        t[0] += 0.001
    assert len(throttle) <= 100
    for _ in range(3):
        throttle.failed(None)  # no client address: one shared bucket
    assert throttle.retry_after(None) is not None and throttle.retry_after("10.9.9.9") is None
    t[0] += 61
    throttle.failed("10.9.9.9")
    assert throttle.retry_after(None) is None and len(throttle) <= 100


async def test_a_revoked_key_gets_the_answer_of_an_unknown_key(admin: GatewayHarness) -> None:
    unknown = await admin.client.get("/v1/admin/keys", headers=auth("tok-not-a-key-at-all"))
    active = await admin.client.get("/v1/admin/keys", headers=auth(admin.key))
    assert (active.status_code, active.json()["error"]["code"]) == (403, "admin_key_required")
    r = await admin.client.post(f"/v1/admin/keys/{admin.key_record.id}/revoke", headers=auth())
    assert r.json()["status"] == "revoked"
    revoked = await admin.client.get("/v1/admin/keys", headers=auth(admin.key))
    assert (revoked.status_code, revoked.json()) == (unknown.status_code, unknown.json()) == (401, unknown.json())
    assert unknown.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("name", ["nul\u0000inside", "bell\u0007", "lone \udaca surrogate", "x" * 201])
async def test_a_key_name_no_ledger_can_store_is_a_400(admin: GatewayHarness, name: str) -> None:
    """PostgreSQL refuses NUL in text and UTF-8 cannot carry a lone surrogate: refused up front, on every
    ledger, rather than a 503 from the database or a 500 from echoing the input back."""
    body = json.dumps({"name": name, "tags": {"team": "a"}})  # ASCII, with \\u escapes (a lone surrogate too)
    r = await admin.client.post("/v1/admin/keys", content=body, headers={**JSON, **auth()})
    assert r.status_code in (400, 422), r.text
    r.json()
    listed = (await admin.client.get("/v1/admin/keys", headers=auth())).json()
    assert all(k["name"] != name for k in listed)
