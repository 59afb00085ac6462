"""The anomaly watch's rounds inside the gateway: once per finished time bucket, across all replicas.

Every few seconds each gateway asks whether a new bucket has settled; the one that claims the round in the shared
state (``anomaly-round:<bucket end>``) runs it, and at the end claims the next round for itself, so the same
replica keeps the watch (its detectors stay warm) until it stops; then the next gateway to ask takes over within a
round and learns the history from the ledger. Each anomaly is recorded in the ledger (an alert of kind
``anomaly``, idempotent by its id) and sent to the alert channels once per incident: a scope and signal already
alerted within ``anomalies.quiet`` seconds is recorded but not sent again (claimed in the shared state, so two
gateways never both send it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tokenops.alerts.model import Alert
from tokenops.analytics.watch import Anomaly, AnomalyWatch
from tokenops.config import AnomaliesConfig
from tokenops.errors import LedgerBusy, LedgerError
from tokenops.gateway.periodic import Periodic
from tokenops.ledger.base import Ledger
from tokenops.ledger.spool import SpoolUnavailable
from tokenops.policy.state import PolicyState, StateUnavailable

log = logging.getLogger("tokenops.anomalies")
ANOMALY_STATE = "anomaly-watch.pickle"  # in the spool folder: the watch's learnt state between two runs
SAVE_EVERY = timedelta(hours=1)  # and saved this often while it runs, so a crash relearns an hour, not 8 days


class AnomalyRounds(Periodic):
    def __init__(self, ledger: Ledger, settings: AnomaliesConfig, state: PolicyState,
                 submit: Callable[[Alert], None], record: Callable[[dict[str, Any]], Awaitable[None]],
                 clock: Callable[[], datetime], watch: AnomalyWatch | None = None,
                 count: Callable[[Anomaly], None] | None = None, state_file: Path | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.state = state
        self.submit = submit
        self.record = record
        self.clock = clock
        self.watch = watch or AnomalyWatch(ledger, settings)
        self.stopping = threading.Event()  # set at close: a round learning history in its thread stops there
        self.watch.pace = Throttle(self.stopping)
        self.interval = min(30.0, settings.bucket / 4)
        self.first_delay = 1.0  # the first round (learning or resuming) a second after start, not a bucket later
        self.me = f"gw_{uuid.uuid4().hex[:12]}"
        self.found = 0  # anomalies recorded by this gateway (metrics, tests)
        self.count = count  # the Prometheus counter's hook
        self.state_file = state_file  # the learnt detectors, saved at close and resumed at start
        self._busy = False
        self._resumed = False
        self._saved_at: datetime | None = None

    async def close(self) -> None:
        self.stopping.set()
        await super().close()
        if not self._busy and self.watch.fed_until is not None:
            await self._save()

    async def _save(self) -> None:
        if self.state_file is None:
            return
        try:
            await asyncio.to_thread(self.save)
        except OSError as exc:
            log.warning("anomaly watch: cannot save %s (%s); the next start learns the history again",
                        self.state_file, exc)  # fmt: skip

    def save(self) -> None:
        assert self.state_file is not None
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_bytes(self.watch.snapshot())
        os.replace(tmp, self.state_file)

    def resume(self) -> bool:
        assert self.state_file is not None
        try:
            data = self.state_file.read_bytes()
        except OSError:
            return False
        return self.watch.restore(data)

    def _round(self, end: datetime) -> str:
        return f"anomaly-round:{int(end.timestamp())}"

    async def check_all(self) -> None:
        if self._busy:
            return
        if not self._resumed:
            self._resumed = True
            if self.state_file is not None and await asyncio.to_thread(self.resume):
                log.info("anomaly watch resumed from %s", self.state_file)
        now = self.clock()
        end = self.watch.ready_until(now)
        if self.watch.fed_until is not None and self.watch.fed_until >= end:
            return
        ttl = 4.0 * self.settings.bucket
        try:
            if await self.state.claim(self._round(end), self.me, ttl) != self.me:
                self.watch.fed_until = None  # someone else watches: learn afresh if this gateway takes over
                return
        except StateUnavailable as exc:
            log.warning("anomaly round skipped: the shared state is unavailable (%s)", exc)
            return
        self._busy = True
        try:
            anomalies = await asyncio.to_thread(self.watch.advance, now)
            if self._saved_at is None or now - self._saved_at >= SAVE_EVERY:
                self._saved_at = now
                await self._save()  # still busy: no round advances the watch while it is pickled
        except Stopped:
            self.watch.fed_until = None
            return
        except LedgerBusy:
            return  # another process has the ledger: the next round reads both buckets
        except LedgerError as exc:
            log.warning("anomaly round: %s", exc)
            return
        finally:
            self._busy = False
        try:  # keep the watch here: the next round is this gateway's while it lives
            await self.state.claim(self._round(end + timedelta(seconds=self.settings.bucket)), self.me, ttl)
        except StateUnavailable:
            pass
        for a in anomalies:
            await self.report(a)

    async def report(self, a: Anomaly) -> None:
        now = self.clock()
        alert = to_alert(a, now)
        self.found += 1
        if self.count is not None:
            self.count(a)
        try:
            await self.record({"record": "alert", **alert.to_json()})
        except SpoolUnavailable as exc:  # the spool is down: the alert still goes out
            log.warning("anomaly %s could not be recorded: %s", a.id, exc)
        try:
            first = await self.state.claim(f"anomaly:{a.name}", a.id, float(self.settings.quiet) or 1.0) == a.id
        except StateUnavailable:
            first = True
        if first or self.settings.quiet == 0:
            self.submit(alert)


class Stopped(Exception):
    """The gateway is closing: the round in the watch's thread gives up (it is learnt again on the next start)."""


class Throttle:
    """Runs between series in the watch's thread: after ``work`` seconds of detector time it sleeps ``rest``
    seconds, so that learning days of history on start (tens of seconds of CPU for many scopes) takes at most
    about half a core from the gateway's calls. A round in steady state (one bucket) never sleeps."""

    def __init__(self, stop: threading.Event, work: float = 0.05, rest: float = 0.05) -> None:
        self.stop = stop
        self.work = work
        self.rest = rest
        self._since = time.monotonic()

    def __call__(self) -> None:
        if self.stop.is_set():
            raise Stopped
        now = time.monotonic()
        if now - self._since >= self.work:
            time.sleep(self.rest)
            self._since = time.monotonic()


def to_alert(a: Anomaly, now: datetime) -> Alert:
    end = a.bucket_start + timedelta(seconds=a.bucket_seconds)
    return Alert(id=a.id, kind="anomaly", budget=a.name, scope=dict(a.scope), period_start=a.bucket_start,
                 period_end=end, threshold=round(a.score, 6), spent_usd=a.actual_usd, amount_usd=None, message=a.message,
                 fired_at=now, details=a.to_json())  # fmt: skip
