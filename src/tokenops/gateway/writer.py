"""The ledger writer: drains the spool into the ledger in the background.

It only opens the ledger when there is something to do, gives up at once when another process holds the file
(it tries again next round: the spool keeps everything meanwhile) and closes it after each round, so that a
``tokenops report`` in another terminal gets its turn.

By default (``gateway.writer: process``) the drains run in a child process: turning a batch of spool lines
into ledger rows is Python work that would otherwise hold the gateway's GIL for tens of milliseconds every
round and show in its tail latency (measured in bench/gateway.py). Tests use ``thread``. Either way the final
drain at shutdown runs in the gateway process, after the spool is closed.

The child is a plain ``python -m tokenops.gateway.writer`` (not a multiprocessing spawn, which would import the
gateway's whole command line again and start a resource-tracker process): it imports the ledger and nothing
of the gateway. It needs no price catalog either: the gateway writes each price row into its spool before the
first event priced with it; only a spool written by an older version makes the child load the catalog.

**Supervision.** The gateway's writer thread watches the child: a child that dies (killed, crashed) is logged
and started again, with a growing pause if it keeps dying. The writer's health (:meth:`LedgerWriter.problems`)
is what ``/readyz`` reports: a dead child, a drain that failed and has not succeeded since, or no successful
round for :data:`STALL_AFTER` seconds. Each round that completes (something drained, nothing to drain, or the
ledger busy with another process) is a heartbeat, which the child shares with the gateway through a small file
next to the spool (``.writer-<gateway pid>.health``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from tokenops.errors import LedgerBusy, LedgerError
from tokenops.ledger import open_ledger
from tokenops.ledger import spool as spoolmod
from tokenops.ledger.base import Ledger, PriceRows
from tokenops.pricing.model import PriceRow

log = logging.getLogger("tokenops.writer")
CLEAN_EXIT_GRACE = 3.0  # seconds a child that exited cleanly (SIGTERM) waits for the gateway's own stop
STALL_AFTER = 30.0  # seconds without a completed round before the writer counts as stalled
_ERROR_CHARS = 400


class _Health:
    """Heartbeat and last error of the drains (in this process, for ``writer: thread``)."""

    def __init__(self) -> None:
        self._ok = time.time()
        self._err_at = 0.0
        self._err = ""

    def beat(self) -> None:
        self._ok = time.time()

    def fail(self, message: str) -> None:
        self._err = message[:_ERROR_CHARS]
        self._err_at = time.time()

    @property
    def last_ok(self) -> float:
        return self._ok

    @property
    def error(self) -> str | None:
        """The last drain error, if no round has succeeded since."""
        return self._err if self._err_at and self._err_at >= self._ok else None


class _FileHealth(_Health):
    """The same, shared between the child that drains (writes the file) and the gateway (reads it)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def beat(self) -> None:
        super().beat()
        self._save()

    def fail(self, message: str) -> None:
        super().fail(message)
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_bytes(orjson.dumps({"ok": self._ok, "err_at": self._err_at, "err": self._err}))
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk shows in the spool's own health; the next round tries again
            log.warning("ledger writer: cannot write %s: %s", self.path, exc)

    def load(self) -> None:
        try:
            d = orjson.loads(self.path.read_bytes())
            self._ok, self._err_at, self._err = float(d["ok"]), float(d["err_at"]), str(d["err"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not written yet (a child starting), or being replaced: keep what was read last

    @property
    def last_ok(self) -> float:
        self.load()
        return self._ok

    @property
    def error(self) -> str | None:
        self.load()
        return super().error


class LedgerWriter:
    def __init__(
        self,
        ledger: Ledger,
        spool_dir: Path,
        *,
        price_rows: PriceRows | None = None,
        interval: float = 1.0,
        mode: str = "thread",
    ):
        self.ledger = ledger
        self.spool_dir = spool_dir
        self.price_rows = price_rows
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._sizes: dict[str, int] = {}
        self._last_bug: str | None = None  # the unexpected error of the last round, if it failed with one
        self.drained = 0
        self.last_drain = 0.0
        self.mode = mode
        self.health: _Health = (_FileHealth(spool_dir / f".writer-{os.getpid()}.health") if mode == "process"
                                else _Health())  # fmt: skip
        self._child: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._next_start = 0.0
        self._clean_exit_at = 0.0  # when a child that exited cleanly was first seen gone (CLEAN_EXIT_GRACE)
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
        assert isinstance(self.health, _FileHealth)
        self.health.beat()  # a fresh child has until STALL_AFTER to complete its first round
        self._child = subprocess.Popen(
            [sys.executable, "-m", "tokenops.gateway.writer", self.ledger.url, str(self.spool_dir),
             str(self.interval), str(os.getpid()), str(self.health.path)],
            stdin=subprocess.DEVNULL, close_fds=True,
        )  # fmt: skip

    def _supervise(self) -> None:
        """Start the child again if it died (a pause that doubles, up to a minute, if it keeps dying)."""
        child = self._child
        if child is None or child.poll() is None or self._stop.is_set():
            return
        if child.returncode == 0 and self.child_exit is None:
            # a clean exit is a SIGTERM: to the whole process group (systemd, a timeout) the gateway stops too, a
            # moment later; only if it does not is the child restarted (no "died" and a new child at each stop)
            now = time.monotonic()
            self._clean_exit_at = self._clean_exit_at or now
            if now - self._clean_exit_at < CLEAN_EXIT_GRACE:
                return
        if self.child_exit is None:
            self.child_exit = child.returncode
            self.restarts += 1
            pause = min(60.0, 0.5 * 2 ** min(self.restarts - 1, 7))
            self._next_start = time.monotonic() + pause
            log.error("ledger writer process %s died (exit code %s); starting it again in %.1fs (restart %d)",
                      child.pid, child.returncode, pause, self.restarts)  # fmt: skip
        if time.monotonic() >= self._next_start:
            self._start_child()
            self.child_exit = None
            self._clean_exit_at = 0.0

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
        except Exception as exc:  # a bug too: the events stay in the spool, the next round tries again
            said = f"{type(exc).__name__}: {exc}"
            self.health.fail(said)
            if said != self._last_bug:  # its traceback once, not every round while it repeats
                log.exception("ledger writer: drain failed")
            self._last_bug = said
            return
        self._last_bug = None
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
            try:
                self._child.wait(final_timeout)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            self._child = None
            if isinstance(self.health, _FileHealth):
                self.health.path.unlink(missing_ok=True)
        try:
            self.drain_once(timeout=final_timeout, force=True)  # also removes this process's finished segment
        except LedgerError as exc:
            log.error("final drain failed (events stay in the spool for next start): %s", exc)


def _drain_forever(ledger_url: str, spool_dir: Path, interval: float, parent: int, health: _Health) -> None:
    """The child process: drain every ``interval`` s until SIGTERM or orphaned."""
    import signal

    stopping = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the gateway, which then stops us in order
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    writer = LedgerWriter(open_ledger(ledger_url), spool_dir, price_rows=_LazyCatalog())
    writer.health = health
    while not stopping.is_set():
        stopping.wait(min(interval, 0.5))
        if stopping.is_set() or os.getppid() != parent:
            return  # stopped, or the gateway died (a restarted one will drain)
        if time.monotonic() - writer.last_drain < interval:
            continue
        writer.round()
        writer.last_drain = time.monotonic()


class _LazyCatalog:
    """Price rows by id from the public catalog, loaded on first need (24 MB): only a spool written before the
    gateway carried its price rows needs it."""

    def __init__(self) -> None:
        self._catalog: Any = None

    def __call__(self, row_id: str) -> PriceRow | None:
        if self._catalog is None:
            from tokenops.pricing.catalog import load_catalog

            self._catalog = load_catalog(())
        row: PriceRow | None = self._catalog.get(row_id)
        return row


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url, spool_dir, interval, parent, health = argv
    _drain_forever(url, Path(spool_dir), float(interval), int(parent), _FileHealth(Path(health)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
