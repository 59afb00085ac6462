"""End users are people, not sessions: Claude Code's ``metadata.user_id`` (a new session id each run) becomes the
account, else the device; a key handed to one person fixes its end user; the header beats the body. Per-user
limits count the person."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from harness import GatewayHarness
from tokenops.errors import UsageError
from tokenops.services.keys import create_key
from tokenops.tags import claude_code_person, end_user_id

DEVICE = "3f" * 32
ACCOUNT = "0e5c6c3a-7d7b-4b8e-9f41-2a6d1c9b8e77"
SESSIONS = ("9a1b2c3d-0000-4000-8000-000000000001", "9a1b2c3d-0000-4000-8000-000000000002")
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"


def claude_code(session: str, account: str = ACCOUNT, device: str = DEVICE) -> str:
    """What Claude Code sends as metadata.user_id (a JSON string)."""
    return json.dumps({"device_id": device, "account_uuid": account, "session_id": session})


def legacy(session: str, account: str = ACCOUNT, device: str = DEVICE) -> str:
    """What older Claude Code versions send."""
    return f"user_{device}_account_{account}_session_{session}"


def messages_body(user_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-3-5-haiku", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    if user_id is not None:
        body["metadata"] = {"user_id": user_id}
    return body


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], **extra}


async def end_user(h: GatewayHarness, path: str, body: dict[str, Any], key: str | None = None, **headers: str) -> Any:
    r = await h.client.post(path, json=body, headers={"authorization": f"Bearer {key or h.key}", **headers})
    assert r.status_code == 200, r.text
    return h.event(r.headers["x-tokenops-request-id"]).end_user


# --- the pure function ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user_id", "person"),
    [
        (claude_code(SESSIONS[0]), f"account:{ACCOUNT}"),
        (claude_code(SESSIONS[1]), f"account:{ACCOUNT}"),
        (claude_code(SESSIONS[0], account=""), f"device:{DEVICE}"),
        (json.dumps({"device_id": DEVICE, "session_id": SESSIONS[0]}), f"device:{DEVICE}"),  # no account key
        (claude_code(SESSIONS[0], account=ACCOUNT.upper()), f"account:{ACCOUNT}"),
        (legacy(SESSIONS[0]), f"account:{ACCOUNT}"),
        (legacy(SESSIONS[1], account=""), f"device:{DEVICE}"),
    ],
)
def test_claude_code_ids_become_the_person(user_id: str, person: str) -> None:
    assert claude_code_person(user_id) == person
    assert end_user_id(user_id) == person
    assert SESSIONS[0] not in person and SESSIONS[1] not in person


@pytest.mark.parametrize(
    "user_id",
    [
        "u-7",
        "alice@example.com",
        '{"device_id": "not-hex", "account_uuid": "", "session_id": "s"}',
        json.dumps({"device_id": DEVICE, "account_uuid": "not-a-uuid", "session_id": SESSIONS[0]}),
        json.dumps({"device_id": DEVICE, "account_uuid": ACCOUNT}),  # no session: not Claude Code's shape
        json.dumps([DEVICE, ACCOUNT]),
        "{not json}",
        f"user_{DEVICE}_account_{ACCOUNT}",
        f"user_{DEVICE[:-1]}_account__session_{SESSIONS[0]}",
    ],
)
def test_any_other_user_id_is_kept_as_it_is(user_id: str) -> None:
    assert claude_code_person(user_id) is None
    assert end_user_id(user_id) == user_id


# --- through the gateway --------------------------------------------------------------------------------------
async def test_two_claude_code_sessions_of_one_account_are_one_end_user(gw: GatewayHarness) -> None:
    first = await end_user(gw, MESSAGES, messages_body(claude_code(SESSIONS[0])))
    second = await end_user(gw, MESSAGES, messages_body(claude_code(SESSIONS[1])))
    assert first == second == f"account:{ACCOUNT}"


async def test_without_an_account_the_device_is_the_end_user(gw: GatewayHarness) -> None:
    ids = {await end_user(gw, MESSAGES, messages_body(claude_code(s, account=""))) for s in SESSIONS}
    assert ids == {f"device:{DEVICE}"}


async def test_legacy_claude_code_ids_are_resolved_too(gw: GatewayHarness) -> None:
    assert await end_user(gw, MESSAGES, messages_body(legacy(SESSIONS[0]))) == f"account:{ACCOUNT}"
    assert await end_user(gw, MESSAGES, messages_body(legacy(SESSIONS[1], account=""))) == f"device:{DEVICE}"


async def test_other_metadata_user_ids_are_kept(gw: GatewayHarness) -> None:
    assert await end_user(gw, MESSAGES, messages_body("u-7")) == "u-7"


@pytest.mark.parametrize("route", ["chat", "messages"])
async def test_the_header_wins_over_the_body(gw: GatewayHarness, route: str) -> None:
    path, body = (CHAT, chat_body(user="u-body")) if route == "chat" else (MESSAGES, messages_body(claude_code(SESSIONS[0])))
    assert await end_user(gw, path, body, **{"x-tokenops-user": "alice"}) == "alice"
    assert await end_user(gw, path, body) != "alice"  # without the header, the body's


async def test_the_responses_route_reads_safety_identifier_then_user(gw: GatewayHarness) -> None:
    body = {"model": "gpt-4o-mini", "input": "hi", "user": "u-old", "safety_identifier": "s-new"}
    assert await end_user(gw, RESPONSES, body) == "s-new"
    assert await end_user(gw, RESPONSES, {**body, "safety_identifier": None}) == "u-old"
    assert await end_user(gw, RESPONSES, body, **{"x-tokenops-user": "alice"}) == "alice"
    r = await gw.client.post(RESPONSES, json={**body, "safety_identifier": "a\x00b"}, headers=gw.auth())
    assert r.status_code == 400 and r.json()["error"]["param"] == "safety_identifier"


async def test_a_key_with_an_end_user_wins_over_header_and_body(gw: GatewayHarness) -> None:
    rec, key = create_key(gw.ledger, "bob's laptop", end_user="bob")
    assert rec.end_user == "bob" and gw.ledger.list_keys()[-1].end_user == "bob"
    assert await end_user(gw, CHAT, chat_body(user="u-body"), key=key, **{"x-tokenops-user": "alice"}) == "bob"
    assert await end_user(gw, MESSAGES, messages_body(claude_code(SESSIONS[0])), key=key) == "bob"
    assert await end_user(gw, CHAT, chat_body(), key=key) == "bob"
    assert await end_user(gw, CHAT, chat_body(user="u-body"), **{"x-tokenops-user": "alice"}) == "alice"  # other key


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "x" * 257])
def test_a_key_end_user_is_bounded(gw: GatewayHarness, bad: str) -> None:
    if bad.strip():
        with pytest.raises(UsageError, match="end user"):
            create_key(gw.ledger, "k", end_user=bad)
    else:
        assert create_key(gw.ledger, "k", end_user=bad)[0].end_user is None  # blank: no end user


async def test_per_user_limits_count_the_person_not_the_session(make_gateway: Callable[..., Any]) -> None:
    h = await make_gateway("limits:\n  - {name: per-user, per: user, requests_per_minute: 2}\n")
    for session in SESSIONS:  # two runs of Claude Code by one person
        r = await h.client.post(MESSAGES, json=messages_body(claude_code(session)), headers={"x-api-key": h.key})
        assert r.status_code == 200, r.text
    third = "9a1b2c3d-0000-4000-8000-000000000003"
    r = await h.client.post(MESSAGES, json=messages_body(claude_code(third)), headers={"x-api-key": h.key})
    assert r.status_code == 429, "a third session of the same person is over the person's two calls a minute"
    other = "1c1c1c1c-7d7b-4b8e-9f41-2a6d1c9b8e77"
    r = await h.client.post(MESSAGES, json=messages_body(claude_code(third, account=other)),
                            headers={"x-api-key": h.key})  # fmt: skip
    assert r.status_code == 200, "another person has a bucket of their own"


async def test_admin_api_creates_and_lists_a_key_with_an_end_user(make_gateway: Callable[..., Any]) -> None:
    admin = "admin-secret-key-0123"
    h = await make_gateway(f"admin_key: {admin}\n")
    headers = {"authorization": f"Bearer {admin}"}
    r = await h.client.post("/v1/admin/keys", json={"name": "carol's", "end_user": "carol"}, headers=headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["end_user"] == "carol"
    listed = {k["id"]: k for k in (await h.client.get("/v1/admin/keys", headers=headers)).json()}
    assert listed[created["id"]]["end_user"] == "carol" and listed[h.key_record.id]["end_user"] is None
    assert await end_user(h, CHAT, chat_body(user="u-body"), key=created["key"]) == "carol"
    r = await h.client.post("/v1/admin/keys", json={"name": "x", "end_user": "a\u0000b"}, headers=headers)
    assert r.status_code in (400, 422), r.text
