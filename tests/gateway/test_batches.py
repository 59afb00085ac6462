"""Batches through real sockets with the official SDKs: OpenAI ``files`` + ``batches`` and Anthropic
``messages.batches``. Each result is one spend event priced at the batch price, to the digit; a batch over a hard
budget is refused before the provider sees it; a batch left running by a gateway that stopped is metered once
by the next.

Prices (batch = 50% of the standard price):
* https://platform.openai.com/docs/pricing (read 2026-12-02): gpt-4o-mini $0.15 input, $0.60 output per 1M tokens;
  the Batch API bills 50% of that: $0.075 and $0.30 (https://platform.openai.com/docs/guides/batch, "50% lower
  costs").
* https://docs.anthropic.com/en/docs/about-claude/pricing (read 2026-12-02): Claude Haiku 4.5 $1 input, $5 output
  per 1M tokens; Message Batches $0.50 and $2.50 ("Batch processing": 50% discount).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest

from harness import PROVIDER_KEY, create_key, write_config
from tokenops.gateway.batches import line_request_id
from tokenops.ledger.events import SpendEvent

M = Decimal(1_000_000)


def mini_batch_cost(inp: int, out: int) -> Decimal:
    return (Decimal(inp) * Decimal("0.075") + Decimal(out) * Decimal("0.30")) / M


def haiku_batch_cost(inp: int, out: int) -> Decimal:
    return (Decimal(inp) * Decimal("0.50") + Decimal(out) * Decimal("2.50")) / M


class Stack:
    """The fake provider and a gateway on loopback; the gateway can be stopped and started again on the same
    spool and ledger (a restart)."""

    def __init__(self, tmp: Path, *, extra: str = "", poll: float = 0.2, tags: dict[str, str] | None = None):
        from tokenops.fakeprovider import create_fake_provider
        from tokenops.servers import BackgroundServer

        self.clients: list[Any] = []
        self.fake_app = create_fake_provider(api_key=PROVIDER_KEY)
        self.fake = BackgroundServer(self.fake_app).start()
        self.config = write_config(tmp, extra, upstream=self.fake.url, gateway=f"background_poll: {poll}")
        self._start()
        self.record, self.key = create_key(self.gateway.ledger, tags=tags or {"team": "agents"})
        self.other_record, self.other_key = create_key(self.gateway.ledger, name="other", tags={"team": "other"})

    def _start(self) -> None:
        from tokenops.app import create_app
        from tokenops.servers import BackgroundServer

        self.gateway = create_app(self.config)
        self.server = BackgroundServer(self.gateway).start()
        self.url = self.server.url

    def restart(self) -> None:
        self.server.stop()
        self._start()

    def oai(self, key: str | None = None) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key=key or self.key, max_retries=0)
        self.clients.append(client)  # closed with the stack: an unclosed client's socket warns in a later test
        return client

    def claude(self, key: str | None = None) -> anthropic.Anthropic:
        client = anthropic.Anthropic(base_url=self.url, api_key=key or self.key, max_retries=0)
        self.clients.append(client)
        return client

    def drain(self) -> None:
        self.gateway.ledger.drain(self.gateway.spool_dir, timeout=10)

    def event(self, request_id: str) -> SpendEvent:
        self.drain()
        ev = self.gateway.ledger.get_event(request_id)
        assert ev is not None, request_id
        return ev

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.server.stop()
        self.fake.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("batches"))
    yield s
    s.close()


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def chat_line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": 64, **body},
    }


def output_lines(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.files.content(file_id).content.splitlines() if line.strip()]


def test_openai_batch_each_result_metered_at_the_batch_price(stack: Stack) -> None:
    oai = stack.oai()
    lines = [chat_line(f"row-{i}", f"Summarise ticket {i} in one line.") for i in range(3)]
    uploaded = oai.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    assert uploaded.purpose == "batch"
    raw = oai.batches.with_raw_response.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                               completion_window="24h", metadata={"feature": "nightly"},
                                               extra_body={"fake": {"pending": 5}})  # fmt: skip
    batch = raw.parse()
    assert batch.status == "validating"
    assert raw.headers["x-tokenops-cost-usd"] == "pending"
    request_id = raw.headers["x-tokenops-request-id"]
    assert (stack.gateway.spool_dir / "batches" / f"{request_id}.json").is_file()  # durable before the answer
    assert oai.batches.retrieve(batch.id).status == "in_progress"  # five retrievals see it running (see below)
    deadline = time.monotonic() + 10
    while (done := oai.batches.retrieve(batch.id)).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)  # the client's retrievals or the gateway's poll (every 0.2 s): whichever sees it finished
    assert done.status == "completed" and done.output_file_id
    out = output_lines(oai, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == ["row-0", "row-1", "row-2"]
    for o in out:
        usage = o["response"]["body"]["usage"]
        ev = stack.event(line_request_id(batch.id, o["custom_id"]))
        assert ev.route == "batches" and ev.status == "ok" and not ev.usage_estimated
        assert ev.upstream_request_id == batch.id and ev.key_id == stack.record.id
        assert ev.tags == {"team": "agents", "feature": "nightly", "custom_id": o["custom_id"]}
        assert (ev.usage.input_tokens, ev.usage.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
        assert ev.cost_usd == mini_batch_cost(usage["prompt_tokens"], usage["completion_tokens"])
    before = stack.gateway.ledger.count_events()
    oai.batches.retrieve(batch.id)  # fetched again, and polled: never metered twice
    time.sleep(0.5)
    stack.drain()
    assert stack.gateway.ledger.count_events() == before
    assert batch.id in [b.id for b in oai.batches.list()]


def test_batch_resources_only_for_the_key_that_made_them(stack: Stack) -> None:
    oai, other = stack.oai(), stack.oai(stack.other_key)
    uploaded = oai.files.create(file=("in.jsonl", jsonl([chat_line("a", "Hello")])), purpose="batch")
    batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):  # another key cannot make a batch of this key's file
        other.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.id not in [b.id for b in other.batches.list()]
    assert oai.files.retrieve(uploaded.id).id == uploaded.id
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id
    with pytest.raises(openai.NotFoundError):
        other.files.content(done.output_file_id)
    admin = stack.oai(stack.config.admin_key.get_secret_value()) if stack.config.admin_key else None
    if admin is not None:
        assert admin.batches.retrieve(batch.id).id == batch.id


def test_bad_input_named(stack: Stack) -> None:
    oai = stack.oai()
    body = jsonl([chat_line("ok", "Hi")]) + b"{not json\n"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.files.create(file=("bad.jsonl", body), purpose="batch")
    assert "line 2" in str(bad.value) and "not valid JSON" in str(bad.value)
    with pytest.raises(openai.BadRequestError) as dup:
        oai.files.create(file=("dup.jsonl", jsonl([chat_line("x", "a"), chat_line("x", "b")])), purpose="batch")
    assert "repeats custom_id" in str(dup.value)
    with pytest.raises(openai.BadRequestError) as no_messages:
        oai.files.create(file=("m.jsonl", jsonl([{**chat_line("x", "a"), "body": {"model": "gpt-4o-mini"}}])),
                         purpose="batch")  # fmt: skip
    assert "line 1" in str(no_messages.value)
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve("batch_doesnotexist")
    with pytest.raises(openai.NotFoundError):
        oai.batches.create(input_file_id="file-unknown", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(anthropic.NotFoundError):
        stack.claude().messages.batches.retrieve("msgbatch_doesnotexist")


def test_missing_and_unknown_results_recorded_and_flagged(stack: Stack) -> None:
    oai = stack.oai()
    lines = [chat_line(f"r{i}", f"Question {i}?") for i in range(3)]
    uploaded = oai.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                               extra_body={"fake": {"drop_lines": 1, "extra_lines": 1}})  # fmt: skip
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id
    out = {o["custom_id"]: o for o in output_lines(oai, done.output_file_id)}
    assert set(out) == {"r0", "r1", "extra-0"}
    missing = stack.event(line_request_id(batch.id, "r2"))
    assert missing.status == "error" and missing.error_code == "batch_result_missing" and missing.usage_estimated
    assert missing.usage.input_tokens > 0 and missing.usage.output_tokens == 0
    assert missing.cost_usd == mini_batch_cost(missing.usage.input_tokens, 0)
    extra = stack.event(line_request_id(batch.id, "extra-0"))
    assert extra.error_code == "batch_result_unknown" and extra.tags["custom_id"] == "extra-0"
    u = out["extra-0"]["response"]["body"]["usage"]
    assert extra.cost_usd == mini_batch_cost(u["prompt_tokens"], u["completion_tokens"])


def test_errored_and_cancelled_requests_cost_nothing(stack: Stack) -> None:
    oai = stack.oai()
    lines = [chat_line("good", "Fine?"), chat_line("bad", "Fail", fake={"status": 400})]
    uploaded = oai.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = oai.batches.retrieve(batch.id)
    assert done.error_file_id and done.request_counts is not None and done.request_counts.failed == 1
    bad = stack.event(line_request_id(batch.id, "bad"))
    assert bad.status == "error" and bad.cost_usd == 0
    assert stack.event(line_request_id(batch.id, "good")).cost_usd > 0
    second = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                                extra_body={"fake": {"pending": 5}})  # fmt: skip
    assert oai.batches.cancel(second.id).status == "cancelled"
    for custom_id in ("good", "bad"):
        ev = stack.event(line_request_id(second.id, custom_id))
        assert ev.status == "cancelled" and ev.error_code == "batch_request_not_run" and ev.cost_usd == 0


def test_anthropic_message_batch_metered_at_the_batch_price(stack: Stack) -> None:
    claude = stack.claude()
    requests: Any = [{"custom_id": f"q{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 100,
                                                       "messages": [{"role": "user", "content": f"Ticket {i}?"}]}}
                     for i in range(2)]  # fmt: skip
    # five retrievals (the client's or the gateway's poller's, every 0.2 s) see it running: enough margin for the
    # client's first one on a loaded machine
    raw = claude.messages.batches.with_raw_response.create(requests=requests, extra_body={"fake": {"pending": 5}})
    batch = raw.parse()
    assert batch.processing_status == "in_progress" and raw.headers["x-tokenops-cost-usd"] == "pending"
    assert claude.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    deadline = time.monotonic() + 10
    while claude.messages.batches.retrieve(batch.id).processing_status != "ended" and time.monotonic() < deadline:
        time.sleep(0.05)
    results = list(claude.messages.batches.results(batch.id))  # retrieves it (ended), then fetches the results
    assert sorted(r.custom_id for r in results) == ["q0", "q1"]
    for r in results:
        assert r.result.type == "succeeded"
        u = r.result.message.usage
        ev = stack.event(line_request_id(batch.id, r.custom_id))
        assert ev.route == "messages.batches" and ev.upstream_request_id == batch.id
        assert ev.tags["custom_id"] == r.custom_id and ev.tags["team"] == "agents"
        assert ev.cost_usd == haiku_batch_cost(u.input_tokens, u.output_tokens)
    assert batch.id in [b.id for b in claude.messages.batches.list()]
    assert batch.id not in [b.id for b in stack.claude(stack.other_key).messages.batches.list()]
    with pytest.raises(anthropic.NotFoundError):
        stack.claude(stack.other_key).messages.batches.retrieve(batch.id)
    later = claude.messages.batches.create(requests=requests, extra_body={"fake": {"pending": 5}})
    cancelled = claude.messages.batches.cancel(later.id)
    assert cancelled.processing_status == "ended" and cancelled.request_counts.canceled == 2
    ev = stack.event(line_request_id(later.id, "q0"))
    assert ev.status == "cancelled" and ev.cost_usd == 0


def test_anthropic_bad_request_names_it(stack: Stack) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        stack.claude().messages.batches.create(requests=[  # type: ignore[list-item]
            {"custom_id": "a", "params": {"model": "claude-haiku-4-5", "max_tokens": 10,
                                          "messages": [{"role": "user", "content": "x"}]}},
            {"custom_id": "b", "params": {"model": "claude-haiku-4-5", "messages": []}},
        ])  # fmt: skip
    assert "requests.1" in str(bad.value)


def test_batch_over_a_hard_budget_is_refused_before_the_provider(tmp_path: Path) -> None:
    budget = 'budgets:\n  - {name: tight, scope: {team: agents}, amount_usd: "0.01", period: month, hard: true}\n'
    s = Stack(tmp_path, extra=budget)
    try:
        oai = s.oai()
        # 3 requests, no output limit: each reserved at the 16,384-token ceiling at $0.30/M = ~$0.0049 each
        lines = [{**chat_line(f"r{i}", "Write an essay."), "body": {"model": "gpt-4o-mini",
                  "messages": [{"role": "user", "content": "Write an essay."}]}} for i in range(3)]  # fmt: skip
        uploaded = oai.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        with pytest.raises(openai.RateLimitError) as refused:
            oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert refused.value.status_code == 429 and refused.value.code == "budget_exceeded"
        assert not any(r["path"] == "/v1/batches" for r in s.fake_app.state.received)
        one = oai.files.create(file=("one.jsonl", jsonl(lines[:1])), purpose="batch")
        ok = oai.batches.create(input_file_id=one.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert oai.batches.retrieve(ok.id).status == "completed"
        assert s.event(line_request_id(ok.id, "r0")).cost_usd > 0
        with pytest.raises(anthropic.RateLimitError):
            s.claude().messages.batches.create(requests=[  # type: ignore[list-item]
                {"custom_id": "big", "params": {"model": "claude-haiku-4-5", "max_tokens": 100_000,
                                                "messages": [{"role": "user", "content": "x"}]}}])  # fmt: skip
        assert not any(r["path"] == "/v1/messages/batches" for r in s.fake_app.state.received)
    finally:
        s.close()


def pending_batch(s: Stack) -> Any:
    """A two-line chat batch the fake provider keeps in progress for one retrieval (a client closed after it)."""
    oai = s.oai()
    uploaded = oai.files.create(file=("in.jsonl", jsonl([chat_line("a", "One"), chat_line("b", "Two")])),
                                purpose="batch")  # fmt: skip
    batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                               extra_body={"fake": {"pending": 1}})  # fmt: skip
    oai.close()
    return batch


def test_pending_batch_survives_a_restart_and_is_metered_once(tmp_path: Path) -> None:
    s = Stack(tmp_path, poll=3600)  # no poll: only the restarted gateway's own checks meter it
    try:
        batch = pending_batch(s)
        s.restart()  # the batch file is all the new gateway knows of it
        assert s.gateway.batches is not None and not s.gateway.batches.batches[batch.id].metered
        oai = s.oai()
        assert oai.batches.retrieve(batch.id).status == "in_progress"  # the file stays the key's after a restart
        done = oai.batches.retrieve(batch.id)
        assert done.status == "completed"
        ids = [line_request_id(batch.id, c) for c in ("a", "b")]
        events = [s.event(i) for i in ids]
        assert all(e.key_id == s.record.id and e.cost_usd for e in events)
        count = s.gateway.ledger.count_events()
        # a crash after the events reached the spool but before the batch was marked metered: metered again on
        # restart, with the same request ids, and the ledger keeps one event each
        path = next(p for p in (s.gateway.spool_dir / "batches").glob("*.json"))
        data = orjson.loads(path.read_bytes())
        assert data["metered"] is True
        path.write_bytes(orjson.dumps({**data, "metered": False}))
        oai.close()
        s.restart()
        oai = s.oai()
        oai.batches.retrieve(batch.id)
        assert s.gateway.batches is not None and s.gateway.batches.batches[batch.id].metered
        s.drain()
        assert s.gateway.ledger.count_events() == count
        assert [s.event(i).cost_usd for i in ids] == [e.cost_usd for e in events]
    finally:
        s.close()


def test_every_request_of_a_batch_meets_the_rules(tmp_path: Path) -> None:
    """Model rules, approvals and caps apply to each batched request, not only the first; a request that breaks one
    refuses the batch before the provider sees it, the error naming the request."""
    rules = ('rules:\n  - {name: no-4o, scope: {team: agents}, deny_models: ["gpt-4o"]}\n'
             '  - {name: caps, max_output_tokens: 50, on_exceed: reject}\n')  # fmt: skip
    s = Stack(tmp_path, extra=rules)
    try:
        oai = s.oai()

        def line(custom_id: str, model: str, max_tokens: int | None) -> dict[str, Any]:
            body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}

        for lines, status, says in (
            ([line("a", "gpt-4o-mini", 20), line("b", "gpt-4o", 20)], 403, "line 2 of the batch file (b)"),
            ([line("a", "gpt-4o-mini", 20), line("b", "gpt-4o-mini", 500)], 400, "line 2 of the batch file (b)"),
            ([line("a", "gpt-4o-mini", None)], 400, "line 1 of the batch file (a)"),
        ):
            uploaded = oai.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
            with pytest.raises(openai.APIStatusError) as refused:
                oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
            assert refused.value.status_code == status and says in str(refused.value), str(refused.value)
        assert not any(r["path"] == "/v1/batches" for r in s.fake_app.state.received)
        with pytest.raises(anthropic.BadRequestError) as bad:
            s.claude().messages.batches.create(requests=[  # type: ignore[list-item]
                {"custom_id": "a", "params": {"model": "claude-haiku-4-5", "max_tokens": 10,
                                              "messages": [{"role": "user", "content": "x"}]}},
                {"custom_id": "b", "params": {"model": "claude-haiku-4-5", "max_tokens": 900,
                                              "messages": [{"role": "user", "content": "x"}]}}])  # fmt: skip
        assert "requests.1" in str(bad.value) and "caps" in str(bad.value)
        ok = oai.files.create(file=("ok.jsonl", jsonl([line("a", "gpt-4o-mini", 20)])), purpose="batch")
        assert oai.batches.create(input_file_id=ok.id, endpoint="/v1/chat/completions", completion_window="24h").id
    finally:
        s.close()


def test_batches_are_not_paced_by_rate_limits(tmp_path: Path) -> None:
    """A batch runs from the provider's queue over hours: it takes nothing from a rate limit's buckets, so two
    batches in one minute pass a one-request-per-minute limit and leave the key's interactive call its request."""
    s = Stack(tmp_path, extra='limits:\n  - {name: slow, per: key, requests_per_minute: 1, usd_per_hour: "0.01"}\n')
    try:
        oai = s.oai()
        ids = []
        for n in range(2):
            uploaded = oai.files.create(file=("in.jsonl", jsonl([chat_line(f"r{n}{i}", "hi") for i in range(3)])),
                                        purpose="batch")  # fmt: skip
            ids.append(oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                          completion_window="24h").id)  # fmt: skip
        assert [oai.batches.retrieve(i).status for i in ids] == ["completed", "completed"]
        assert s.event(line_request_id(ids[1], "r12")).cost_usd > 0
        chat = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=5)  # fmt: skip
        assert chat.choices
        with pytest.raises(openai.RateLimitError) as limited:  # the limit holds for calls
            oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        assert limited.value.code == "rate_limited"
    finally:
        s.close()


def test_a_batch_finished_after_a_restart_is_counted_in_its_budget(tmp_path: Path) -> None:
    """Its reservation died with the process that admitted it, and the new process seeded its counters from a
    ledger that did not hold it yet: the batch's cost is charged to the budget when it is metered."""
    s = Stack(tmp_path, poll=3600, extra="budgets:\n  - {name: agents, scope: {team: agents}, amount_usd: \"10\", "
                                         "period: month, hard: true}\n")  # fmt: skip
    try:
        batch = pending_batch(s)
        s.restart()
        oai = s.oai()
        oai.batches.retrieve(batch.id)
        assert oai.batches.retrieve(batch.id).status == "completed"
        cost = sum(s.event(line_request_id(batch.id, c)).cost_usd or Decimal(0) for c in ("a", "b"))
        assert cost > 0
        assert s.gateway._ticker is not None  # the gateway's own event loop (a Redis client is bound to it)
        loop = s.gateway._ticker.get_loop()
        status = asyncio.run_coroutine_threadsafe(s.gateway.engine.status(), loop).result(10)
        assert Decimal(status[0]["spent"]) == cost
        if s.gateway.config.state == "memory":  # (in Redis the dead process's reservation holds until its ttl)
            assert Decimal(status[0]["reserved"]) == 0
    finally:
        s.close()
