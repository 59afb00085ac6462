"""Deliver alerts in the background so that no channel can fail or slow a gateway call.

The policy engine calls :meth:`AlertDispatcher.submit`, which only puts the alert on a bounded queue and returns:
it never awaits, never blocks and never raises. Each channel has its own queue and its own worker task, so a
channel that is down (and retrying with backoff) holds up only its own deliveries, while the other channels get
every alert at once. When a channel's queue is full the alert is dropped for that channel, counted in
:attr:`AlertDispatcher.dropped` and logged: losing an alert is better than holding a gateway call.

Every delivery's outcome goes to ``recorder(alert, channel_name, error_or_None)``, the policy engine's hook for
writing it to the ledger; a recorder that raises is logged and otherwise ignored. ``close()`` stops intake,
flushes what it can within its timeout, and reports whatever it could not deliver to the recorder as such.

    dispatcher = AlertDispatcher(build_channels(config.alerts), recorder=ledger_hook)
    dispatcher.start()                # inside the running event loop
    dispatcher.submit(alert)          # from the policy engine, on the loop's thread
    await dispatcher.close()          # at shutdown
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from tokenops.alerts.model import Alert, AlertDeliveryError, Channel
from tokenops.errors import UsageError

log = logging.getLogger("tokenops.alerts")

Recorder = Callable[[Alert, str, str | None], None]

DROPPED_QUEUE_FULL = "dropped: the channel's alert queue is full"
DROPPED_CLOSED = "dropped: the alert dispatcher is closed"
NOT_DELIVERED_AT_CLOSE = "not delivered: the alert dispatcher closed first"


class _Lane:
    """One channel's queue, worker and the alert it is delivering now."""

    def __init__(self, channel: Channel, queue_size: int) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=queue_size)
        self.task: asyncio.Task[None] | None = None
        self.current: Alert | None = None


class AlertDispatcher:
    """Fan alerts out to channels in the background; see the module docstring for the guarantees."""

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        recorder: Recorder | None = None,
        queue_size: int = 1000,
        send_timeout: float | None = 300.0,
    ) -> None:
        names = [c.name for c in channels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"alert channel names must be unique; repeated: {', '.join(duplicates)}")
        if queue_size < 1:
            raise UsageError(f"queue_size must be at least 1, not {queue_size}")
        self.channels = tuple(channels)
        self.recorder = recorder
        self.send_timeout = send_timeout
        self._lanes = [_Lane(c, queue_size) for c in self.channels]
        self._started = False
        self._closed = False
        self.dropped = 0
        self.delivered = 0
        self.failed = 0

    # --- intake ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start one worker task per channel in the running event loop."""
        if self._started:
            raise UsageError("the alert dispatcher is already started")
        if self._closed:
            raise UsageError("the alert dispatcher is closed")
        asyncio.get_running_loop()  # fail here, not at the first alert, when called outside a loop
        self._spawn()

    def _spawn(self) -> None:
        self._started = True
        for lane in self._lanes:
            lane.task = asyncio.create_task(self._work(lane), name=f"tokenops-alerts:{lane.channel.name}")

    def submit(self, alert: Alert) -> None:
        """Queue ``alert`` for every channel and return at once. Never blocks, never raises.

        Call it from the event loop's thread (asyncio queues are not thread-safe). Before :meth:`start` alerts
        wait in the queues; after :meth:`close` they are dropped.
        """
        for lane in self._lanes:
            name = lane.channel.name
            if self._closed:
                self._drop(alert, name, DROPPED_CLOSED)
                continue
            try:
                lane.queue.put_nowait(alert)
            except asyncio.QueueFull:
                self._drop(alert, name, DROPPED_QUEUE_FULL)

    def _drop(self, alert: Alert, channel: str, reason: str) -> None:
        self.dropped += 1
        log.error("alert %s (budget %s) %s for channel %s", alert.id, alert.budget, reason, channel)
        self._record(alert, channel, reason)

    # --- delivery -------------------------------------------------------------------------------------------

    async def _work(self, lane: _Lane) -> None:
        while True:
            alert = await lane.queue.get()
            lane.current = alert
            # Only cancellation (close() past its deadline) escapes _deliver; ``current`` then stays set so that
            # close() can report the interrupted delivery.
            await self._deliver(lane.channel, alert)
            lane.current = None
            lane.queue.task_done()

    async def _deliver(self, channel: Channel, alert: Alert) -> str | None:
        """Send to one channel; returns the error text (None on success). Only cancellation escapes."""
        error: str | None = None
        try:
            async with asyncio.timeout(self.send_timeout):
                await channel.send(alert)
        except AlertDeliveryError as exc:
            error = str(exc)
        except TimeoutError:
            error = f"{channel.name}: no answer within {self.send_timeout:g} s"
        except Exception as exc:  # a channel's bug (third-party channels too) must not stop the worker
            error = f"{channel.name}: {type(exc).__name__}: {exc}"
            log.exception("alert channel %s raised %s instead of AlertDeliveryError", channel.name,
                          type(exc).__name__)  # fmt: skip
        if error is None:
            self.delivered += 1
            log.info("alert %s delivered to %s", alert.id, channel.name)
        else:
            self.failed += 1
            log.error("alert %s (budget %s) not delivered: %s", alert.id, alert.budget, error)
        self._record(alert, channel.name, error)
        return error

    def _record(self, alert: Alert, channel: str, error: str | None) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder(alert, channel, error)
        except Exception:  # the ledger hook failing must not stop deliveries; it is logged with its traceback
            log.exception("alert recorder failed for alert %s on channel %s", alert.id, channel)

    async def send_now(self, alert: Alert) -> dict[str, str | None]:
        """Deliver to every channel concurrently and wait: ``{channel name: error or None}``.

        For tests and ``a test send``; outcomes go to the recorder as for queued alerts.
        """
        results = await asyncio.gather(*(self._deliver(c, alert) for c in self.channels))
        return {c.name: r for c, r in zip(self.channels, results, strict=True)}

    # --- shutdown -------------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Deliveries queued or in progress, summed over the channels."""
        return sum(lane.queue.qsize() + (lane.current is not None) for lane in self._lanes)

    async def close(self, timeout: float = 5) -> None:
        """Stop intake, deliver what is queued within ``timeout`` seconds, then stop the workers.

        Alerts still queued or in flight at the deadline are reported to the recorder as not delivered.
        """
        if self._closed:
            return
        self._closed = True
        if not self._started and self.pending:
            self._spawn()  # alerts submitted before start() still deserve delivery
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(lane.queue.join() for lane in self._lanes))
        except TimeoutError:
            log.error("alert dispatcher closed with %d delivery(ies) unfinished after %g s", self.pending, timeout)
        for lane in self._lanes:
            if lane.task is not None:
                lane.task.cancel()
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes:
            unfinished = ([lane.current] if lane.current is not None else []) + _drain(lane.queue)
            lane.current = None
            for alert in unfinished:
                self._drop(alert, lane.channel.name, NOT_DELIVERED_AT_CLOSE)


def _drain(queue: asyncio.Queue[Alert]) -> list[Alert]:
    items = []
    while True:
        try:
            items.append(queue.get_nowait())
        except asyncio.QueueEmpty:
            return items
