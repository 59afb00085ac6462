"""The ledger writer: drains the spool into the ledger in the background.

It only opens the ledger when there is something to do, gives up at once when another process holds the file
(it tries again next round: the spool keeps everything meanwhile) and closes it after each round, so that a
``tokenops report`` in another terminal gets its turn.

By default (``gateway.writer: process``) the drains run in a child process: turning a batch of spool lines
into ledger rows is Python work that would otherwise hold the gateway's GIL for tens of milliseconds every
round and show in its tail latency (measured in bench/gateway.py). Tests use ``thread``. Either way the final
drain at shutdown runs in the gateway process, after the spool is closed.

**Supervision.** The gateway's writer thread watches the child: a child that dies (killed, crashed) is logged
and started again, with a growing pause if it keeps dying. The writer's health (:meth:`LedgerWriter.problems`)
is what ``/readyz`` reports: a dead child, a drain that failed and has not succeeded since, or no successful
round for :data:`STALL_AFTER` seconds. Each round that completes (something drained, nothing to drain, or the
ledger busy with another process) is a heartbeat, shared with the parent through shared memory.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

from tokenops.errors import LedgerBusy, LedgerError
from tokenops.ledger import open_ledger
from tokenops.ledger import spool as spoolmod
from tokenops.ledger.base import Ledger, PriceRows

log = logging.getLogger("tokenops.writer")
STALL_AFTER = 30.0  # seconds without a completed round before the writer counts as stalled
_ERROR_BYTES = 400


class _Health:
    """Heartbeat and last error of the drains, in shared memory when the drains run in a child process."""

    def __init__(self, ctx: Any = None):
        if ctx is None:
            self._ok: Any = _Cell(time.time())
            self._err_at: Any = _Cell(0.0)
            self._err: Any = _Cell(b"")
        else:
            self._ok = ctx.Value("d", time.time(), lock=False)
            self._err_at = ctx.Value("d", 0.0, lock=False)
            self._err = ctx.Array("c", _ERROR_BYTES, lock=False)

    def beat(self) -> None:
        self._ok.value = time.time()

    def fail(self, message: str) -> None:
        self._err.value = message.encode("utf-8", "replace")[: _ERROR_BYTES - 1]
        self._err_at.value = time.time()

    @property
    def last_ok(self) -> float:
        return float(self._ok.value)

    @property
    def error(self) -> str | None:
        """The last drain error, if no round has succeeded since."""
        if self._err_at.value and self._err_at.value >= self._ok.value:
            return bytes(self._err.value).decode("utf-8", "replace")
        return None


class _Cell:
    def __init__(self, value: Any):
        self.value = value


class LedgerWriter:
    def __init__(
        self,
        ledger: Ledger,
        spool_dir: Path,
        *,
        price_rows: PriceRows | None = None,
        interval: float = 1.0,
        mode: str = "thread",
        price_rows_list: tuple[Any, ...] = (),
    ):
        self.ledger = ledger
        self.spool_dir = spool_dir
        self.price_rows = price_rows
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._sizes: dict[str, int] = {}
        self.drained = 0
        self.last_drain = 0.0
        self.mode = mode
        self._extra_rows = price_rows_list
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        self.health = _Health(self._ctx if mode == "process" else None)
        self._child: Any = None
        self.restarts = 0
        self._next_start = 0.0
        self.child_exit: int | None = None  # exit code of the last child that died

    @property
    def last_error(self) -> str | None:
        return self.health.error

    def start(self) -> None:
        if self.mode == "process":
            self._start_child()
        self._thread = threading.Thread(target=self._run, name="tokenops-ledger-writer", daemon=True)
        self._thread.start()

    def _start_child(self) -> None:
        self._child = self._ctx.Process(
            target=_drain_forever, name="tokenops-ledger-writer", daemon=True,
            args=(self.ledger.url, str(self.spool_dir), self.interval, self._extra_rows, os.getpid(), self.health),
        )  # fmt: skip
        self._child.start()

    def _supervise(self) -> None:
        """Start the child again if it died (a pause that doubles, up to a minute, if it keeps dying)."""
        child = self._child
        if child is None or child.is_alive() or self._stop.is_set():
            return
        if self.child_exit is None:
            self.child_exit = child.exitcode
            self.restarts += 1
            pause = min(60.0, 0.5 * 2 ** min(self.restarts - 1, 7))
            self._next_start = time.monotonic() + pause
            log.error("ledger writer process %s died (exit code %s); starting it again in %.1fs (restart %d)",
                      child.pid, child.exitcode, pause, self.restarts)  # fmt: skip
        if time.monotonic() >= self._next_start:
            self._start_child()
            self.child_exit = None

    def problems(self) -> list[str]:
        """What keeps the writer from draining now (empty when it is healthy)."""
        out = []
        if self.child_exit is not None:
            out.append(f"ledger writer process died (exit code {self.child_exit}); restarting it "
                       f"(restart {self.restarts})")  # fmt: skip
        error = self.health.error
        if error:
            out.append(f"ledger writer: the last drain failed: {error}")
        idle = time.time() - self.health.last_ok
        if idle > max(STALL_AFTER, 10 * self.interval) and self._thread is not None:
            out.append(f"ledger writer has not completed a round for {idle:.0f}s")
        return out

    def wake(self) -> None:
        self._wake.set()

    def _segment_sizes(self) -> dict[str, int]:
        sizes = {}
        for p in spoolmod.segments(self.spool_dir):
            try:
                sizes[p.name] = p.stat().st_size
            except FileNotFoundError:
                continue
        return sizes

    def drain_once(self, timeout: float | None = 0.0, *, force: bool = False) -> int:
        sizes = self._segment_sizes()
        if not force and sizes == self._sizes:
            return 0  # nothing appended since the last round: do not open the ledger
        n = self.ledger.drain(self.spool_dir, self.price_rows, timeout=timeout)
        # the sizes seen before the drain: what was appended while it ran (a drain can wait long on a busy
        # ledger) is new to the next round
        self._sizes = sizes
        self.drained += n
        return n

    def round(self) -> None:
        """One drain round with its heartbeat: a busy ledger is a completed round (the spool keeps the events)."""
        try:
            self.drain_once()
        except LedgerBusy:
            pass
        except (LedgerError, OSError) as exc:  # the writer must outlive any one bad round
            self.health.fail(str(exc))
            log.error("ledger writer: %s", exc)
            return
        self.health.beat()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval if self.mode == "thread" else min(self.interval, 1.0))
            self._wake.clear()
            if self.mode == "thread":
                self.round()
            else:
                self._supervise()

    def stop(self, *, final_timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._child is not None:
            # SIGTERM, not a shared Event: a child already killed with its process group would never acknowledge
            # an Event's condition, and stopping would hang. A drain is one transaction: stopping mid-way is safe.
            self._child.terminate()
            self._child.join(final_timeout)
            if self._child.is_alive():
                self._child.kill()
                self._child.join()
            self._child = None
        try:
            self.drain_once(timeout=final_timeout, force=True)  # also removes this process's finished segment
        except LedgerError as exc:
            log.error("final drain failed (events stay in the spool for next start): %s", exc)


def _drain_forever(ledger_url: str, spool_dir: str, interval: float, extra_rows: tuple[Any, ...], parent: int,
                   health: _Health) -> None:  # fmt: skip
    """The child process: drain every ``interval`` s until SIGTERM or orphaned."""
    import signal

    from tokenops.pricing.catalog import load_catalog

    stopping = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the gateway, which then stops us in order
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    catalog = load_catalog(extra_rows)
    writer = LedgerWriter(open_ledger(ledger_url), Path(spool_dir), price_rows=catalog.get)
    writer.health = health
    while not stopping.is_set():
        stopping.wait(min(interval, 0.5))
        if stopping.is_set() or os.getppid() != parent:
            return  # stopped, or the gateway died (a restarted one will drain)
        if time.monotonic() - writer.last_drain < interval:
            continue
        writer.round()
        writer.last_drain = time.monotonic()
