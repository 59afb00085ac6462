"""The alert dispatcher: submit() never waits on a channel, failures reach the recorder, drops are counted.

Timing is asserted through ordering and flags (what had happened when submit() returned), with wall-clock
bounds only where they are generous.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tokenops.alerts import Alert, AlertDeliveryError, AlertDispatcher, SlackChannel, WebhookChannel
from tokenops.alerts.dispatcher import DROPPED_CLOSED, DROPPED_QUEUE_FULL, NOT_DELIVERED_AT_CLOSE
from tokenops.errors import UsageError


def make_alert(n: int = 1) -> Alert:
    return Alert(
        id=f"alert_{n:04d}", kind="threshold", budget="search-monthly", scope={"team": "search"},
        period_start=datetime(2026, 11, 1, tzinfo=UTC), period_end=datetime(2026, 12, 1, tzinfo=UTC),
        threshold=0.8, spent_usd=Decimal("80"), amount_usd=Decimal("100"), message="team search passed 80%",
        fired_at=datetime(2026, 11, 17, tzinfo=UTC), details={},
    )  # fmt: skip


class Recording:
    """A fast channel that remembers what it got."""

    def __init__(self, name: str = "fast") -> None:
        self.name = name
        self.got: list[str] = []

    async def send(self, alert: Alert) -> None:
        self.got.append(alert.id)


class Gated:
    """A slow channel: each send waits until the test opens the gate."""

    def __init__(self, name: str = "slow") -> None:
        self.name = name
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.finished: list[str] = []

    async def send(self, alert: Alert) -> None:
        self.started.append(alert.id)
        await self.gate.wait()
        self.finished.append(alert.id)


class Failing:
    def __init__(self, name: str = "broken", exc: Exception | None = None) -> None:
        self.name = name
        self.exc = exc or AlertDeliveryError(f"{name}: receiver said no", channel=name)
        self.calls = 0

    async def send(self, alert: Alert) -> None:
        self.calls += 1
        raise self.exc


class Outcomes:
    """The recorder: (alert id, channel, error) in the order reported."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str | None]] = []

    def __call__(self, alert: Alert, channel: str, error: str | None) -> None:
        self.rows.append((alert.id, channel, error))

    def of(self, channel: str) -> list[tuple[str, str | None]]:
        return [(a, e) for a, c, e in self.rows if c == channel]


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_submit_returns_before_any_channel_runs_and_close_flushes() -> None:
    fast, slow, broken, out = Recording(), Gated(), Failing(), Outcomes()
    dispatcher = AlertDispatcher([fast, slow, broken], recorder=out)
    dispatcher.start()

    began = time.monotonic()
    for n in range(3):
        dispatcher.submit(make_alert(n))
    elapsed = time.monotonic() - began
    # submit() is synchronous: no channel can have run yet, however slow or broken.
    assert fast.got == [] and slow.started == [] and broken.calls == 0 and out.rows == []
    assert elapsed < 0.5
    assert dispatcher.pending == 9

    # The fast channel gets everything while the slow one is still stuck on its first alert.
    await wait_until(lambda: len(fast.got) == 3 and broken.calls == 3)
    assert fast.got == ["alert_0000", "alert_0001", "alert_0002"]
    assert slow.started == ["alert_0000"] and slow.finished == []

    slow.gate.set()
    await dispatcher.close(timeout=5)
    assert slow.finished == ["alert_0000", "alert_0001", "alert_0002"]
    assert out.of("fast") == out.of("slow") == [(f"alert_000{n}", None) for n in range(3)]
    assert out.of("broken") == [(f"alert_000{n}", "broken: receiver said no") for n in range(3)]
    assert (dispatcher.delivered, dispatcher.failed, dispatcher.dropped, dispatcher.pending) == (6, 3, 0, 0)


async def test_a_full_queue_drops_with_a_log_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    fast, out = Recording(), Outcomes()
    dispatcher = AlertDispatcher([fast], recorder=out, queue_size=2)
    with caplog.at_level(logging.ERROR, logger="tokenops.alerts"):
        for n in range(5):  # not started yet: nothing drains the queue
            dispatcher.submit(make_alert(n))
    assert dispatcher.dropped == 3
    assert out.rows == [(f"alert_000{n}", "fast", DROPPED_QUEUE_FULL) for n in (2, 3, 4)]
    assert sum("queue is full" in r.getMessage() for r in caplog.records) == 3

    dispatcher.start()
    await dispatcher.close()
    assert fast.got == ["alert_0000", "alert_0001"]


async def test_close_reports_what_it_could_not_deliver() -> None:
    slow, out = Gated(), Outcomes()
    dispatcher = AlertDispatcher([slow], recorder=out)
    dispatcher.start()
    for n in range(3):
        dispatcher.submit(make_alert(n))
    await wait_until(lambda: slow.started)

    began = time.monotonic()
    await dispatcher.close(timeout=0.1)
    assert time.monotonic() - began < 5
    assert out.rows == [(f"alert_000{n}", "slow", NOT_DELIVERED_AT_CLOSE) for n in range(3)]
    assert dispatcher.dropped == 3

    dispatcher.submit(make_alert(9))  # after close: dropped, not raised
    assert out.rows[-1] == ("alert_0009", "slow", DROPPED_CLOSED) and dispatcher.dropped == 4


async def test_close_delivers_alerts_submitted_before_start() -> None:
    fast = Recording()
    dispatcher = AlertDispatcher([fast])
    dispatcher.submit(make_alert())
    await dispatcher.close()
    assert fast.got == ["alert_0001"]


async def test_a_buggy_channel_or_recorder_does_not_stop_deliveries(caplog: pytest.LogCaptureFixture) -> None:
    buggy, fast = Failing("buggy", RuntimeError("oops")), Recording()
    seen: list[tuple[str, str | None]] = []

    def recorder(alert: Alert, channel: str, error: str | None) -> None:
        seen.append((channel, error))
        raise OSError("ledger is down")

    dispatcher = AlertDispatcher([buggy, fast], recorder=recorder)
    dispatcher.start()
    with caplog.at_level(logging.ERROR, logger="tokenops.alerts"):
        dispatcher.submit(make_alert(1))
        dispatcher.submit(make_alert(2))
        await dispatcher.close()
    assert buggy.calls == 2 and fast.got == ["alert_0001", "alert_0002"]
    assert sorted(seen) == [("buggy", "buggy: RuntimeError: oops")] * 2 + [("fast", None)] * 2
    assert any("alert recorder failed" in r.getMessage() for r in caplog.records)


async def test_a_hung_channel_times_out() -> None:
    hung, out = Gated("hung"), Outcomes()
    dispatcher = AlertDispatcher([hung], recorder=out, send_timeout=0.05)
    assert await dispatcher.send_now(make_alert()) == {"hung": "hung: no answer within 0.05 s"}
    assert out.rows == [("alert_0001", "hung", "hung: no answer within 0.05 s")]


async def test_send_now_reports_each_channel() -> None:
    fast, broken, out = Recording(), Failing(), Outcomes()
    results = await AlertDispatcher([fast, broken], recorder=out).send_now(make_alert())
    assert results == {"fast": None, "broken": "broken: receiver said no"}
    assert sorted(out.rows) == [("alert_0001", "broken", "broken: receiver said no"), ("alert_0001", "fast", None)]


async def test_real_failing_channels_are_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook = WebhookChannel(f"http://127.0.0.1:{port}/in?token=tok-SECRET", "whsec-SECRET", retries=1, backoff=0.01,
                          name="ops")  # fmt: skip
    slack = SlackChannel(f"http://127.0.0.1:{port}/services/T0/B0/slack-SECRET", retries=0, name="finance-slack")
    fast, out = Recording(), Outcomes()
    dispatcher = AlertDispatcher([hook, slack, fast], recorder=out)
    dispatcher.start()
    with caplog.at_level(logging.DEBUG, logger="tokenops.alerts"):
        dispatcher.submit(make_alert())
        assert out.rows == []  # submit() did not try to connect
        await dispatcher.close(timeout=10)
    assert fast.got == ["alert_0001"]
    [(_, ops_error)] = out.of("ops")
    [(_, slack_error)] = out.of("finance-slack")
    assert ops_error is not None and "failed after 2 attempt(s): ConnectError" in ops_error
    assert slack_error is not None and "failed after 1 attempt(s)" in slack_error
    assert "SECRET" not in caplog.text + ops_error + slack_error
    assert "not delivered" in caplog.text


async def test_channel_names_must_be_unique_and_start_needs_a_loop() -> None:
    with pytest.raises(UsageError, match="unique; repeated: fast"):
        AlertDispatcher([Recording(), Recording()])
    dispatcher = AlertDispatcher([Recording()])
    dispatcher.start()
    with pytest.raises(UsageError, match="already started"):
        dispatcher.start()
    await dispatcher.close()


def test_start_outside_a_loop_fails_at_once() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        AlertDispatcher([Recording()]).start()
