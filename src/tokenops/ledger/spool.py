"""The spool: an append-only, fsync'd file of spend events between the request path and the ledger.

Why: a call answered to a client must be recorded even if the process dies a moment later, and the request
path must never wait on the database. So the meter appends the event's JSON line here and waits only for
``fdatasync`` (group-committed: concurrent calls share one sync), then the response completes. A writer
drains the spool into the ledger later, in batches, recording in the same database transaction how far it
read each segment: a crash at any moment loses nothing and doubles nothing.

Layout: ``<dir>/<start-ms>-<pid>-<rand>.jsonl`` segments, one live segment per process. The live segment
holds an exclusive ``flock``; a drainer that can take the lock knows the owner is gone (or rotated), so a
fully drained segment can be deleted. A torn last line (a crash mid-write) has no newline: its call was never
answered; the drainer keeps it in ``rejected.log`` and says so when it removes the dead segment.

What goes wrong on disk, and what the spool does (docs/concepts.md, "When the disk misbehaves"):

* **A failed write** (disk full, I/O error; also a failed ``fdatasync``, after which the data's state is
  unknown): the segment is truncated back to its last complete line before anything else is written, so the
  next event never lands on a torn line. If even that fails, the next write starts a new segment. The callers
  waiting on that write get :class:`SpoolUnavailable` (a 503 in the route's shape).
* **Unhealthy**: after a failed write, and while the spool's file system has less than ``reserve_bytes``
  free, :attr:`Spool.healthy` is False, so the gateway refuses new calls *before* calling a provider whose
  answer it could not record. Records that must not be lost although their write failed (a call the provider
  already answered) are deferred (:meth:`Spool.defer`): kept in memory and written, oldest first, as soon as a
  write succeeds (retried every second; with nothing owed, a blank line is written to test the disk); health returns
  with the first successful write.
* **The folder or the live segment deleted** while running: writes to an unlinked file would vanish at the
  next restart. Every write checks the segment's link count; when it is gone, the folder is made again and
  the whole old segment (still readable through the open descriptor) is copied into a new one. The ledger
  ignores request ids it already holds, so lines drained before the deletion are not counted twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tokenops.errors import GatewayError
from tokenops.ledger.events import SpendEvent

log = logging.getLogger("tokenops.spool")
SEGMENT_SUFFIX = ".jsonl"
REJECTED = "rejected.log"  # lines the ledger could not take, with the reason (one JSON object a line)
CUT = ".cut"  # <name>.cut<N>.jsonl: only the first N bytes of the segment are valid (a failed write was not cut)
MAX_SEGMENT_BYTES = 64 * 1024 * 1024
RESERVE_BYTES = 1024 * 1024  # below this much free space the spool calls itself unhealthy
MAX_DEFERRED = 100_000  # records held in memory while the disk refuses them (~80 MB of events)
RETRY_EVERY = 1.0
PROBE = b"\n"  # a blank line: written to test a disk that failed, skipped by every reader


class SpoolUnavailable(GatewayError):
    """The spool cannot durably record right now (disk full, I/O error): the call is answered 503."""

    def __init__(self, message: str):
        super().__init__(503, "spool_unavailable", message, kind="api_error", headers={"retry-after": "5"})


class FileOps:
    """The system calls the spool makes, as one object so that tests can inject faults (ENOSPC, torn writes)."""

    write = staticmethod(os.write)
    fdatasync = staticmethod(os.fdatasync)
    ftruncate = staticmethod(os.ftruncate)

    @staticmethod
    def free_bytes(path: Path) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize


class Spool:
    """Append side of the spool, one per process. ``await spool.append(event)`` returns once it is durable."""

    def __init__(self, directory: Path, *, max_segment_bytes: int = MAX_SEGMENT_BYTES, fsync: bool = True,
                 reserve_bytes: int = RESERVE_BYTES, ops: FileOps | None = None):  # fmt: skip
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._max = max_segment_bytes
        self._fsync = fsync
        self._reserve = reserve_bytes
        self._ops = ops or FileOps()
        self._io_lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._torn = False  # a failed write could not be repaired: start a new segment before the next one
        self._carry = b""  # a deleted segment's content, written again before the next line
        self.path = self._open_segment()
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._deferred: list[bytes] = []
        self._cond = threading.Condition()
        self._closing = False
        self._flusher: threading.Thread | None = None
        self.appended = 0
        self.failures = 0  # failed writes since start
        self.recovered = 0  # segments found deleted and rewritten
        self.dropped = 0  # deferred records dropped because the memory bound was reached
        self.last_error: str | None = None  # set by a failed write, cleared by the next successful one
        self._space_checked = 0.0
        self._space_problem: str | None = None

    # --- health ---------------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self.problem() is None

    def problem(self) -> str | None:
        """Why the spool cannot take a record now, or None. Checks free space at most once a second."""
        if self.last_error is not None:
            return f"spool write failed: {self.last_error}"
        now = time.monotonic()
        if now - self._space_checked >= 1.0:
            self._space_checked = now
            try:
                free = self._ops.free_bytes(self.directory)
            except OSError:
                free = None  # the folder is gone: the next write makes it again
            self._space_problem = (
                f"only {free} bytes free on the spool's file system (at least {self._reserve} needed)"
                if free is not None and free < self._reserve else None
            )  # fmt: skip
        return self._space_problem

    @property
    def deferred(self) -> int:
        with self._cond:
            return len(self._deferred)

    # --- segments -------------------------------------------------------------------------------
    def _open_segment(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{int(time.time() * 1000):013d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)  # readable: see _recover_deleted
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _sync_dir(self.directory)  # the new file's name must be durable too, or a crash could lose it
        except OSError:
            os.close(fd)
            raise
        old = self._fd
        self._fd, self._size, self._torn = fd, 0, False
        if old >= 0:
            os.close(old)  # releases the old segment's lock: drainers may now delete it once drained
        return path

    def _check_segment(self) -> None:
        """Before a write: a new segment after an unrepaired failure; the old one rewritten if it was deleted."""
        if self._fd < 0:
            raise RuntimeError("spool is closed")
        if self._torn:
            self.path = self._open_segment()
            return
        if os.fstat(self._fd).st_nlink == 0:
            self._recover_deleted()

    def _recover_deleted(self) -> None:
        """The live segment was unlinked: read it back through our descriptor and carry it into a new one (kept
        in memory, written before the next line, until a write succeeds)."""
        old_path, size = self.path, self._size
        content = bytearray()
        while len(content) < size:
            piece = os.pread(self._fd, size - len(content), len(content))
            if not piece:
                break
            content += piece
        self.path = self._open_segment()  # raises (the old descriptor kept) when the folder cannot be made
        self._carry = bytes(content) + self._carry
        self.recovered += 1
        log.error("spool segment %s was deleted while in use: its %d bytes go again into %s (the ledger skips "
                  "what it already holds)", old_path, len(content), self.path)  # fmt: skip

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._ops.write(self._fd, view)
            view = view[n:]

    def _write_sync(self, data: bytes) -> None:
        with self._io_lock:
            try:
                self._check_segment()
                payload = self._carry + data if self._carry else data
                if self._size + len(payload) > self._max and self._size > 0:
                    self.path = self._open_segment()
                try:
                    self._write_all(payload)
                    if self._fsync:
                        self._ops.fdatasync(self._fd)
                except OSError:
                    self._repair()
                    raise
            except OSError as exc:
                self.failures += 1
                self.last_error = f"{exc.strerror or exc} ({self.path.name})"
                with self._cond:
                    self._start_flusher()  # it probes the disk every second until a write succeeds
                raise
            self._size += len(payload)
            self._carry = b""
            if payload:  # an empty write proves nothing about the disk
                self.last_error = None
            # counted here, under the lock and before any waiter is told: a caller never sees its line missing
            if data != PROBE:
                self.appended += data.count(b"\n")

    def _repair(self) -> None:
        """Cut a failed write off, back to the last complete line, before anything else is written."""
        try:
            self._ops.ftruncate(self._fd, self._size)
            if self._fsync:
                self._ops.fdatasync(self._fd)
        except OSError as exc:
            # The tail may hold a partial line, and whole lines of calls that were answered 503: the segment is
            # renamed to say where its valid part ends (drainers read no further), and the next write starts a
            # new segment.
            self._torn = True
            cut = self.path.with_name(f"{self.path.name[: -len(SEGMENT_SUFFIX)]}{CUT}{self._size}{SEGMENT_SUFFIX}")
            try:
                os.rename(self.path, cut)
                _sync_dir(self.directory)
                self.path = cut
            except OSError as rename_failed:
                log.critical("spool segment %s could not be cut back after a failed write (%s, then %s): lines "
                             "past offset %d are of calls answered 503", self.path, exc, rename_failed, self._size)  # fmt: skip
                return
            log.error("spool segment %s could not be truncated after a failed write (%s); its valid part ends at "
                      "%d (%s); the next write starts a new segment", self.path, exc, self._size, cut.name)  # fmt: skip

    def heal(self) -> None:
        """Recover now from a deleted live segment or an unrepaired failure, rather than at the next call (the
        writer's periodic tick and /readyz call it); a failure is logged and left to the next try."""
        with self._io_lock:
            if self._fd < 0:
                return
            try:
                broken = self._torn or os.fstat(self._fd).st_nlink == 0 or bool(self._carry)
            except OSError:
                broken = True
        if broken:
            try:
                self._write_sync(b"")
            except OSError as exc:
                log.error("spool: could not recover yet: %s", exc)

    # --- appending ------------------------------------------------------------------------------
    def append_sync(self, events: Iterable[SpendEvent]) -> None:
        """Durably append events from synchronous code (imports, the demo's backfill, tests)."""
        data = b"".join(e.to_json() + b"\n" for e in events)
        if data:
            self._write_sync(data)

    async def append(self, event: SpendEvent) -> None:
        await self.append_line(event.to_json())

    async def append_record(self, record: dict[str, object]) -> None:
        """Durably append a non-event record (an alert fired, an approval requested): ``{"record": kind, …}``."""
        await self.append_line(orjson.dumps(record, default=str))

    async def append_line(self, line: bytes) -> None:
        """Durably append one line; raises :class:`SpoolUnavailable` when the write failed (nothing of it is
        left in the spool).

        With ``fsync`` the line goes to the flusher thread, which shares one ``fdatasync`` among the lines that
        queued meanwhile (group commit). Without it a ``write`` is all there is to wait for (microseconds): it
        is done right here, unless records owed to a failed disk must go first (then the flusher keeps order)."""
        if not self._fsync and not self._deferred:
            try:
                self._write_sync(line + b"\n")
            except OSError as exc:
                log.error("spool write failed: %s", exc)
                raise SpoolUnavailable(f"the call could not be recorded durably: {exc}") from None
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._cond:
            self._start_flusher()
            self._pending.append((line + b"\n", fut))
            self._cond.notify()
        await fut

    def defer(self, line: bytes) -> None:
        """Keep a line that must be recorded although its write failed; written as soon as the disk allows."""
        with self._cond:
            if len(self._deferred) >= MAX_DEFERRED:
                self.dropped += 1
                log.critical("spool: %d records wait for the disk; dropping one (request record lost)",
                             len(self._deferred))  # fmt: skip
                return
            self._deferred.append(line + b"\n")
            self._start_flusher()
            self._cond.notify()

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_forever, name="tokenops-spool", daemon=True)
            self._flusher.start()

    def _flush_forever(self) -> None:
        """Group commit on one long-lived thread: whatever queued while a write+sync ran goes in the next one.
        Deferred records go first, and are retried every second while the disk refuses them."""
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    if self._deferred or self.last_error is not None:
                        self._cond.wait(RETRY_EVERY)
                        break
                    self._cond.wait()
                if not self._pending and not self._deferred and self._closing:
                    return
                batch, self._pending = self._pending, []
                deferred = self._deferred
                self._deferred = []
            data = b"".join(deferred) + b"".join(line for line, _ in batch)
            error: OSError | None = None
            try:
                # nothing owed after a failure: a blank line (readers skip it) tells whether the disk is back
                self._write_sync(data or PROBE)
            except OSError as exc:
                log.error("spool write failed: %s", exc)
                error = exc
                with self._cond:
                    self._deferred[:0] = deferred  # still owed, still first
                if self._closing and not batch:
                    if deferred:
                        log.critical("spool closing with %d records the disk refused (lost)", len(deferred))
                    return
            _resolve_all(batch, error)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._flusher is not None:
            self._flusher.join()
        with self._io_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _sync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _resolve_all(batch: list[tuple[bytes, asyncio.Future[None]]], error: OSError | None) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, fut in batch:
        by_loop.setdefault(fut.get_loop(), []).append(fut)
    for loop, futs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futs, error)
        except RuntimeError:
            pass  # that loop is closed: nobody waits for these any more


def _resolve(futs: list[asyncio.Future[None]], error: OSError | None) -> None:
    for fut in futs:
        if not fut.done():
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(SpoolUnavailable(f"the call could not be recorded durably: {error}"))


# --- the read side (the drainer) --------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentRead:
    name: str
    start: int
    end: int  # offset just past the last complete line read
    lines: list[bytes]
    live: bool
    size: int = 0  # the segment's size when read
    valid: int | None = None  # where the segment's valid part ends, for a segment cut after a failed write


def valid_length(name: str) -> int | None:
    """``<name>.cut<N>.jsonl`` → N: the bytes past N were written by a write that failed."""
    stem = name[: -len(SEGMENT_SUFFIX)]
    head, sep, number = stem.rpartition(CUT)
    return int(number) if sep and number.isdigit() else None


def segments(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SEGMENT_SUFFIX))


def is_live(path: Path) -> bool:
    """True while some process (this one included) still appends to the segment."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def read_from(path: Path, offset: int, max_bytes: int = 32 * 1024 * 1024) -> tuple[int, list[bytes]]:
    """Complete lines from ``offset``; returns the offset after the last complete line and the lines."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(max_bytes)
    cut = data.rfind(b"\n")
    if cut < 0:
        return offset, []
    body = data[: cut + 1]
    return offset + len(body), [line for line in body.split(b"\n") if line]


def read_tail(path: Path, offset: int) -> bytes:
    """The bytes of a segment from ``offset`` on (a dead segment's torn last line)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read()


def pending(directory: Path, progress: dict[str, int]) -> Iterator[SegmentRead]:
    """What each segment holds past its committed offset (up to its valid length, for a cut segment)."""
    for path in segments(directory):
        start = progress.get(path.name, 0)
        live = is_live(path)
        valid = valid_length(path.name)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        readable = size if valid is None else min(size, valid)
        if readable <= start:
            yield SegmentRead(path.name, start, start, [], live, size, valid)
            continue
        end, lines = read_from(path, start, min(32 * 1024 * 1024, readable - start))
        yield SegmentRead(path.name, start, end, lines, live, size, valid)


def describe(spool: Spool | None, directory: Path) -> dict[str, Any]:
    """The spool's state for /readyz and metrics. ``files`` and ``bytes`` are what its folder holds: they grow
    while the ledger cannot take events (segments are removed once drained)."""
    out: dict[str, Any] = {"directory": str(directory)}
    sizes = []
    for seg in segments(directory):
        try:
            sizes.append(seg.stat().st_size)
        except OSError:
            continue
    out.update(files=len(sizes), bytes=sum(sizes))
    if spool is not None:
        out.update(segment=spool.path.name, appended=spool.appended, failures=spool.failures,
                   deferred=spool.deferred, recovered=spool.recovered, dropped=spool.dropped,
                   problem=spool.problem())  # fmt: skip
    return out


__all__ = ["FileOps", "Spool", "SpoolUnavailable", "pending", "segments"]
