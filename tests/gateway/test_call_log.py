"""The call log (``gateway.call_log: true``): one logfmt line per recorded call on the gateway's standard output,
the same figures as the ledger's event, never the key or the prompt; off by default."""

from __future__ import annotations

import json
import re
import signal
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import openai

from harness import PROVIDER_KEY, create_key, free_port, start_gateway, write_config
from tokenops.fakeprovider import create_fake_provider
from tokenops.gateway.call_log import line
from tokenops.ledger import open_ledger
from tokenops.ledger.events import SpendEvent
from tokenops.servers import BackgroundServer
from tokenops.usage import Usage


def fields(text: str) -> dict[str, str]:
    """A logfmt line's fields (values quoted JSON-style where they need it)."""
    pairs = re.findall(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|\S*)(?: |$)', text)
    assert " ".join(f"{k}={v}" for k, v in pairs) == text, text  # the whole line is key=value pairs
    return {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}


def test_a_line_quotes_what_needs_it_and_leaves_out_what_is_empty() -> None:
    ev = SpendEvent(request_id="req_1", ts=datetime(2026, 12, 3, 7, 41, 2, 118000, tzinfo=UTC), source="gateway",
                    provider="openai", model_requested="tokenops/auto", model_used="gpt-4o-mini",
                    route="chat.completions", usage=Usage(input_tokens=12, output_tokens=30),
                    cost_usd=Decimal("0.00001905"), end_user='Ann "A" Lee\n', tags={"team": "search", "env": "prod"},
                    latency_ms=123.45, cache="miss")  # fmt: skip
    text = line(ev)
    assert "\n" not in text and text.startswith("ts=2026-12-03T07:41:02.118Z request_id=req_1 status=200 outcome=ok")
    got = fields(text)
    assert got["user"] == 'Ann "A" Lee\n' and got["tags"] == "env=prod,team=search"
    assert got["requested"] == "tokenops/auto" and got["model"] == "gpt-4o-mini" and got["cost_usd"] == "0.00001905"
    assert got["latency_ms"] == "123.5" and "error" not in got and "key" not in got and "estimated" not in got
    odd = line(SpendEvent(request_id="req_3", ts=ev.ts, source="gateway", provider="openai", model_requested="m",
                          model_used="m", tags={"team": "a\u2028b\x85c", "site": "Zürich"}))  # fmt: skip
    assert len(odd.splitlines()) == 1 and fields(odd)["tags"] == "site=Zürich,team=a\u2028b\x85c"
    assert "Zürich" not in odd  # a value with a separator in it is written in ASCII escapes, whole
    unpriced = line(SpendEvent(request_id="req_2", ts=ev.ts, source="gateway", provider="local", model_requested="m",
                               model_used="m", cost_usd=None, usage_estimated=True))  # fmt: skip
    assert fields(unpriced)["cost_usd"] == "unpriced" and fields(unpriced)["estimated"] == "true"
    assert "requested" not in fields(unpriced)


def test_the_running_gateway_logs_each_call_as_the_ledger_records_it(tmp_path: Path) -> None:
    fake = BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)).start()
    write_config(tmp_path, upstream=fake.url, gateway="call_log: true")
    cfg = tmp_path / "tokenops.yaml"
    from tokenops.config import load_config

    ledger = open_ledger(load_config(str(cfg)).ledger, str(tmp_path))
    _, key = create_key(ledger, tags={"team": "search"})
    ledger.close()
    port = free_port()
    proc = start_gateway(cfg, port, tmp_path / "gw.log")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        r = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a secret prompt"}], user="Ann Lee")
        rid = r.headers["x-tokenops-request-id"]
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                           extra_body={"fake": {"status": 500}})  # fmt: skip
        except openai.InternalServerError as exc:
            failed = exc.response.headers["x-tokenops-request-id"]
        stranger = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-proj-not-a-tokenops-key",
                                 max_retries=0)  # fmt: skip
        try:
            stranger.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        except openai.AuthenticationError as exc:
            refused = exc.response.headers["x-tokenops-request-id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        fake.stop()
    log = (tmp_path / "gw.log").read_text()
    lines = {fields(t)["request_id"]: fields(t) for t in log.splitlines() if t.startswith("ts=")}
    assert set(lines) == {rid, failed, refused}
    assert {k: lines[refused][k] for k in ("status", "outcome", "error", "route")} == {
        "status": "401", "outcome": "refused", "error": "invalid_api_key", "route": "chat.completions"}
    assert "key" not in lines[refused]  # the key is checked before the body is read: no model either
    ledger = open_ledger(load_config(str(cfg)).ledger, str(tmp_path))
    ev = ledger.get_event(rid)
    ledger.close()
    got = lines[rid]
    assert got["cost_usd"] == r.headers["x-tokenops-cost-usd"] and Decimal(got["cost_usd"]) == ev.cost_usd
    assert (got["user"], got["tags"], got["key"]) == ("Ann Lee", "team=search", ev.key_id)
    assert (int(got["in"]), int(got["out"])) == (ev.usage.input_tokens, ev.usage.output_tokens)
    assert lines[failed]["status"] == "500" and lines[failed]["outcome"] == "upstream_error"
    assert key not in log and "secret prompt" not in log and "sk-proj" not in log


def test_off_by_default(tmp_path: Path) -> None:
    from tokenops.config import parse_config

    assert parse_config("{}").gateway.call_log is False
