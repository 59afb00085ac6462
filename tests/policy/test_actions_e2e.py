"""Each budget action end to end through the real ``openai`` SDK and sockets: alert (to a real webhook
receiver), downgrade, require approval (granted with the CLI), block; plus guardrails and rate limits."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from harness import PROVIDER_KEY, create_key, sql, sql_value, write_config
from tokenops.alerts import verify_signature
from tokenops.app import create_app
from tokenops.fakeprovider import create_fake_provider
from tokenops.servers import BackgroundServer

SECRET = "whsec-test"


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        ok = verify_signature(SECRET, request.headers["x-tokenops-timestamp"], body,
                              request.headers["x-tokenops-signature"])  # fmt: skip
        self.received.append({"ok": ok, "alert": orjson.loads(body)})
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    def wait_for(self, predicate: Any, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.received if predicate(r["alert"])]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no matching alert in {self.received}")


class Stack:
    def __init__(self, tmp: Path, policy: str):
        self.receiver = Receiver()
        self.hook = BackgroundServer(self.receiver.app()).start()
        self.fake = BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)).start()
        extra = policy + f"""
alerts:
  channels:
    - {{type: webhook, name: ops, url: "{self.hook.url}/hook", secret: {SECRET}}}
"""
        self.cfg_path = tmp / "tokenops.yaml"
        self.config = write_config(tmp, extra, upstream=self.fake.url)
        self.config = self.config.model_copy(update={"gateway": self.config.gateway.model_copy(
            update={"key_refresh": 0.2, "writer_interval": 0.1})})  # fmt: skip
        self.gateway = create_app(self.config)
        self.record, self.key = create_key(self.gateway.ledger, tags={"team": "alpha", "env": "prod"})
        _, self.dev_key = create_key(self.gateway.ledger, name="dev", tags={"team": "beta", "env": "dev"})
        self.server = BackgroundServer(self.gateway).start()
        self.client = openai.OpenAI(base_url=self.server.url + "/v1", api_key=self.key, max_retries=0)

    def chat(self, model: str = "gpt-4o", usage: dict[str, int] | None = None, client: Any = None, **kw: Any) -> Any:
        extra = {"fake": {"usage": usage}} if usage else None
        return (client or self.client).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hello"}], extra_body=extra, **kw)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tokenops", *args, "--config", str(self.cfg_path)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    def close(self) -> None:
        self.client.close()
        self.server.stop()
        self.fake.stop()
        self.hook.stop()


BUDGET = """
budgets:
  - name: alpha-monthly
    scope: {team: alpha}
    amount_usd: "1.00"
    period: month
    timezone: Europe/Berlin
    hard: true
    thresholds: [{at: 0.5, action: alert}, {at: 0.7, action: downgrade, model: gpt-4o-mini},
                 {at: 0.85, action: require_approval}, {at: 1.0, action: block}]
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, BUDGET)
    yield s
    s.close()


def test_alert_downgrade_approval_and_block_through_the_openai_sdk(stack: Stack) -> None:
    # gpt-4o at $2.50/$10 per 1M: 100k input + 25k output = $0.50 — the call that crosses 50%
    r = stack.chat(usage={"input": 100_000, "output": 25_000})
    assert r.headers["x-tokenops-cost-usd"] == "0.50"
    assert r.headers["x-tokenops-budget-remaining-usd"] == "0.50"
    hits = stack.receiver.wait_for(lambda a: a["kind"] == "threshold" and a["threshold"] == 0.5)
    assert hits[0]["ok"], "the webhook signature verifies"
    assert "alpha-monthly" in hits[0]["alert"]["message"] and Decimal(hits[0]["alert"]["spent_usd"]) == Decimal("0.5")

    r = stack.chat(usage={"input": 40_000, "output": 10_000})  # $0.20: now at 70%
    assert r.headers["x-tokenops-model"] == "gpt-4o"
    r = stack.chat(usage={"input": 100_000, "output": 20_000})  # downgraded: served by gpt-4o-mini
    assert r.headers["x-tokenops-model"] == "gpt-4o-mini"
    assert r.headers["x-tokenops-downgraded-from"] == "gpt-4o"
    assert r.parse().model == "gpt-4o-mini"
    downgraded = stack.gateway.meter.lookup_recent(r.headers["x-tokenops-request-id"])
    assert (downgraded.model_requested, downgraded.model_used) == ("gpt-4o", "gpt-4o-mini")  # both kept
    r = stack.chat(usage={"input": 1_000_000, "output": 0})  # gpt-4o-mini at $0.15: +$0.15, now at 85%

    with pytest.raises(openai.PermissionDeniedError) as denied:
        stack.chat()
    assert denied.value.body["code"] == "approval_required"
    approval_id = denied.value.response.headers["x-tokenops-approval-id"]
    listed = orjson.loads(stack.cli("approvals", "list", "--status", "pending", "--format", "json").stdout)
    assert [a["id"] for a in listed["approvals"]] == [approval_id]
    done = stack.cli("approvals", "approve", approval_id, "--until", "2h", "--max-usd", "5", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["status"] == "approved"
    deadline = time.monotonic() + 10
    while True:  # the gateway reloads decisions every key_refresh seconds
        try:
            r = stack.chat(usage={"input": 100_000, "output": 0})  # gpt-4o-mini: +$0.015
            break
        except openai.PermissionDeniedError:
            assert time.monotonic() < deadline, "approval never took effect"
            time.sleep(0.1)
    assert r.headers["x-tokenops-model"] == "gpt-4o-mini"
    stack.chat(usage={"input": 1_000_000, "output": 0})  # +$0.15: over 100%
    with pytest.raises(openai.RateLimitError) as blocked:
        stack.chat()
    assert blocked.value.body["code"] == "budget_exceeded"
    assert int(blocked.value.response.headers["retry-after"]) > 0
    stack.receiver.wait_for(lambda a: a["kind"] == "blocked")
    kinds = {(a["alert"]["kind"], a["alert"]["threshold"]) for a in stack.receiver.received}
    assert {("threshold", 0.5), ("threshold", 0.7), ("threshold", 0.85), ("threshold", 1.0)} <= kinds
    # each alert fires once per period, and is recorded in the ledger
    assert len(stack.receiver.received) == len(kinds)
    stack.gateway.ledger.drain(stack.gateway.spool_dir)
    recorded = sql(stack.gateway.ledger, "SELECT kind, threshold FROM alerts ORDER BY fired_at")
    granted = sql_value(stack.gateway.ledger, "SELECT count(*) FROM events WHERE approval_id = ?", [approval_id])
    assert len(recorded) == len(kinds) and granted >= 2
    status = orjson.loads(stack.cli("budgets", "status", "--format", "json").stdout)["budgets"][0]
    assert status["name"] == "alpha-monthly" and status["remaining"] == "0.00"
    assert all(t["reached"] for t in status["thresholds"])


def test_denied_approval_and_guardrails(tmp_path: Path) -> None:
    s = Stack(tmp_path, """
rules:
  - {name: dev-no-frontier, scope: {env: dev}, deny_models: ["gpt-4o", "o1*"]}
  - {name: opus-needs-approval, models: ["claude-opus-*", "gpt-4.5*"], require_approval: true}
  - {name: caps, max_output_tokens: 100, on_exceed: reject}
  - {name: clamp-dev, scope: {env: dev}, max_output_tokens: 50, on_exceed: clamp}
  - {name: prompt-cap, max_input_tokens: 1000}
  - {name: spend-cap, max_cost_per_call_usd: "0.01"}
limits:
  - {name: per-key, per: key, requests_per_minute: 1000}
""")
    try:
        dev = openai.OpenAI(base_url=s.server.url + "/v1", api_key=s.dev_key, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as info:
            s.chat(client=dev)
        assert info.value.body["code"] == "model_not_allowed" and "dev-no-frontier" in info.value.body["message"]
        r = s.chat(model="gpt-4o-mini", client=dev)
        assert r.headers["x-tokenops-clamped"].startswith("max_tokens=50")
        assert s.fake.app.state.received[-1]["body"]["max_tokens"] == 50
        dev.close()
        with pytest.raises(openai.BadRequestError) as info:
            s.chat(max_tokens=500)
        assert info.value.body["code"] == "token_limit_exceeded"
        with pytest.raises(openai.BadRequestError) as info:
            s.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x" * 8000}])
        assert info.value.body["code"] == "token_limit_exceeded"
        with pytest.raises(openai.BadRequestError) as info:  # o1 at $15/$60 per 1M: this prompt could cost ~$0.05
            s.client.chat.completions.create(model="o1", max_tokens=100,
                                             messages=[{"role": "user", "content": "y" * 3000}])  # fmt: skip
        assert info.value.body["code"] == "cost_limit_exceeded" and "0.01" in info.value.body["message"]
        assert s.chat(max_tokens=100).headers["x-ratelimit-limit-requests"] == "1000"
        with pytest.raises(openai.PermissionDeniedError) as info:
            s.chat(model="gpt-4.5-preview", max_tokens=10)
        approval_id = info.value.response.headers["x-tokenops-approval-id"]
        denied = s.cli("approvals", "deny", approval_id)
        assert denied.returncode == 0, denied.stderr
        again = s.cli("approvals", "approve", approval_id)
        assert again.returncode == 2 and "already denied" in again.stderr
        missing = s.cli("approvals", "approve", "apr_doesnotexist")
        assert missing.returncode == 2 and "no approval request" in missing.stderr
        deadline = time.monotonic() + 10
        while True:
            with pytest.raises(openai.PermissionDeniedError) as info:
                s.chat(model="gpt-4.5-preview", max_tokens=10)
            if "denied" in info.value.body["message"]:
                break
            assert time.monotonic() < deadline, "denial never reached the gateway"
            time.sleep(0.1)
    finally:
        s.close()


def test_thresholds_on_the_forecast_act_before_the_money_is_spent(tmp_path: Path) -> None:
    """Half way through a period, $0.55 of $1.00 spent projects to $1.10: a downgrade set on the forecast at 100 %
    applies to the next call, and an alert set on the forecast at 90 % has gone out, while an alert on spend at
    80 % has not (the money is not spent)."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    policy = f"""
budgets:
  - name: alpha-sprint
    scope: {{team: alpha}}
    amount_usd: "1.00"
    period: custom
    start: {(now - timedelta(days=5)).isoformat()}
    end: {(now + timedelta(days=5)).isoformat()}
    thresholds: [{{at: 0.8, action: alert}}, {{at: 0.9, action: alert, when: forecast}},
                 {{at: 1.0, action: downgrade, model: gpt-4o-mini, when: forecast}}]
"""
    s = Stack(tmp_path, policy)
    try:
        first = s.chat(usage={"input": 100_000, "output": 30_000})  # gpt-4o: $0.25 + $0.30
        assert first.headers["x-tokenops-cost-usd"] == "0.55"
        alert = s.receiver.wait_for(lambda a: a["kind"] == "threshold")[0]["alert"]
        assert alert["threshold"] == 0.9 and alert["details"]["when"] == "forecast"
        assert "forecast to pass 90%" in alert["message"]
        second = s.chat()  # projected 110 %: downgraded
        assert second.headers["x-tokenops-model"] == "gpt-4o-mini"
        assert second.headers["x-tokenops-downgraded-from"] == "gpt-4o"
        status = orjson.loads(s.cli("budgets", "status", "--format", "json").stdout)
        row = next(b for b in (status if isinstance(status, list) else status["budgets"]) if b["name"] == "alpha-sprint")
        reached = {(t["at"], t["action"]): t["reached"] for t in row["thresholds"]}
        assert reached == {(0.8, "alert"): False, (0.9, "alert"): True, (1.0, "downgrade"): True}
        assert [t.get("when") for t in row["thresholds"]] == ["spend", "forecast", "forecast"]
    finally:
        s.close()
