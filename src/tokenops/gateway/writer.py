"""The ledger writer: drains the spool into the ledger in the background.

It only opens the ledger when there is something to do, gives up at once when another process holds the file
(it tries again next round: the spool keeps everything meanwhile) and closes it after each round, so that a
``tokenops report`` in another terminal gets its turn. A thread also reloads keys and policy now and then, so
changes made by another process take effect.

By default (``gateway.writer: process``) the drains run in a child process: turning a batch of spool lines
into ledger rows is Python work that would otherwise hold the gateway's GIL for tens of milliseconds every
round and show in its tail latency (measured in bench/gateway.py). Tests use ``thread``. Either way the final
drain at shutdown runs in the gateway process, after the spool is closed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenops.errors import LedgerBusy, LedgerError
from tokenops.ledger import spool as spoolmod
from tokenops.ledger.duckdb import DuckDBLedger

log = logging.getLogger("tokenops.writer")


class LedgerWriter:
    def __init__(
        self,
        ledger: DuckDBLedger,
        spool_dir: Path,
        *,
        price_rows: Callable[[str], object] | None = None,
        interval: float = 1.0,
        on_tick: Callable[[], None] | None = None,
        tick_every: float = 2.0,
        mode: str = "thread",
        price_rows_list: tuple[Any, ...] = (),
    ):
        self.ledger = ledger
        self.spool_dir = spool_dir
        self.price_rows = price_rows
        self.interval = interval
        self.on_tick = on_tick
        self.tick_every = tick_every
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._sizes: dict[str, int] = {}
        self.drained = 0
        self.last_drain = 0.0
        self.last_error: str | None = None
        self.mode = mode
        self._extra_rows = price_rows_list
        self._child: Any = None

    def start(self) -> None:
        if self.mode == "process":
            ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads
            self._child = ctx.Process(
                target=_drain_forever, name="tokenops-ledger-writer", daemon=True,
                args=(str(self.ledger.path), str(self.spool_dir), self.interval, self._extra_rows, os.getpid()),
            )  # fmt: skip
            self._child.start()
        self._thread = threading.Thread(target=self._run, name="tokenops-ledger-writer", daemon=True)
        self._thread.start()

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
        if not force and self._segment_sizes() == self._sizes:
            return 0  # nothing appended since the last round: do not open the ledger
        n = self.ledger.drain(self.spool_dir, self.price_rows, timeout=timeout)
        self._sizes = self._segment_sizes()
        self.drained += n
        self.last_error = None
        return n

    def _run(self) -> None:
        last_tick = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self.interval if self.mode == "thread" else min(self.interval, self.tick_every))
            self._wake.clear()
            try:
                if self.mode == "thread":
                    self.drain_once()
            except LedgerBusy:
                pass  # another process has the file; the spool holds everything until next round
            except (LedgerError, OSError) as exc:  # the writer must outlive any one bad round
                self.last_error = str(exc)
                log.error("ledger writer: %s", exc)
            if self.on_tick and time.monotonic() - last_tick >= self.tick_every:
                last_tick = time.monotonic()
                try:
                    self.on_tick()
                except LedgerBusy:
                    pass
                except LedgerError as exc:
                    log.warning("ledger writer tick: %s", exc)

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


def _drain_forever(ledger_path: str, spool_dir: str, interval: float, extra_rows: tuple[Any, ...],
                   parent: int) -> None:  # fmt: skip
    """The child process: drain every ``interval`` s until SIGTERM or orphaned."""
    import signal

    from tokenops.pricing.catalog import load_catalog

    stopping = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the gateway, which then stops us in order
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    catalog = load_catalog(extra_rows)
    writer = LedgerWriter(DuckDBLedger(Path(ledger_path)), Path(spool_dir), price_rows=catalog.get)
    while not stopping.is_set():
        stopping.wait(min(interval, 0.5))
        if stopping.is_set() or os.getppid() != parent:
            return  # stopped, or the gateway died (a restarted one will drain)
        if time.monotonic() - writer.last_drain < interval:
            continue
        try:
            writer.drain_once()
        except LedgerBusy:
            pass
        except (LedgerError, OSError) as exc:
            log.error("ledger writer: %s", exc)
        writer.last_drain = time.monotonic()
