"""The spool: an append-only, fsync'd file of spend events between the request path and the ledger.

Why: a call answered to a client must be recorded even if the process dies a moment later, and the request
path must never wait on the database. So the meter appends the event's JSON line here and waits only for
``fdatasync`` (group-committed: concurrent calls share one sync), then the response completes. A writer
drains the spool into the ledger later, in batches, recording in the same database transaction how far it
read each segment: a crash at any moment loses nothing and doubles nothing.

Layout: ``<dir>/<start-ms>-<pid>-<rand>.jsonl`` segments, one live segment per process. The live segment
holds an exclusive ``flock``; a drainer that can take the lock knows the owner is gone (or rotated), so a
fully drained segment can be deleted. A torn last line (a crash mid-write) has no newline and is never read;
its call was never answered.
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

import orjson

from tokenops.ledger.events import SpendEvent

log = logging.getLogger("tokenops.spool")
SEGMENT_SUFFIX = ".jsonl"
MAX_SEGMENT_BYTES = 64 * 1024 * 1024


class Spool:
    """Append side of the spool, one per process. ``await spool.append(event)`` returns once it is durable."""

    def __init__(self, directory: Path, *, max_segment_bytes: int = MAX_SEGMENT_BYTES, fsync: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._max = max_segment_bytes
        self._fsync = fsync
        self._io_lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self.path = self._open_segment()
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._flusher: threading.Thread | None = None
        self.appended = 0

    def _open_segment(self) -> Path:
        name = f"{int(time.time() * 1000):013d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # the new file's name must be durable too, or a crash could lose the whole segment
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        old = self._fd
        self._fd, self._size = fd, 0
        if old >= 0:
            os.close(old)  # releases the old segment's lock: drainers may now delete it once drained
        return path

    def _write_sync(self, data: bytes) -> None:
        with self._io_lock:
            if self._fd < 0:
                raise RuntimeError("spool is closed")
            if self._size + len(data) > self._max and self._size > 0:
                self.path = self._open_segment()
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            if self._fsync:
                os.fdatasync(self._fd)
            self._size += len(data)
            # counted here, under the lock and before any waiter is told: a caller never sees its line missing
            self.appended += data.count(b"\n")

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
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._cond:
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, name="tokenops-spool", daemon=True)
                self._flusher.start()
            self._pending.append((line + b"\n", fut))
            self._cond.notify()
        await fut

    def _flush_forever(self) -> None:
        """Group commit on one long-lived thread: whatever queued while a write+sync ran goes in the next one."""
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending and self._closing:
                    return
                batch, self._pending = self._pending, []
            error: OSError | None = None
            try:
                self._write_sync(b"".join(line for line, _ in batch))
            except OSError as exc:
                log.error("spool write failed: %s", exc)
                error = exc
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for _, fut in batch:
                by_loop.setdefault(fut.get_loop(), []).append(fut)
            for loop, futs in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, futs, error)
                except RuntimeError:
                    pass  # that loop is closed: nobody waits for these any more

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


def _resolve(futs: list[asyncio.Future[None]], error: OSError | None) -> None:
    for fut in futs:
        if not fut.done():
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)


@dataclass(frozen=True)
class SegmentRead:
    name: str
    start: int
    end: int  # offset just past the last complete line read
    lines: list[bytes]
    live: bool


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


def pending(directory: Path, progress: dict[str, int]) -> Iterator[SegmentRead]:
    """What each segment holds past its committed offset."""
    for path in segments(directory):
        start = progress.get(path.name, 0)
        live = is_live(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        if size <= start:
            yield SegmentRead(path.name, start, start, [], live)
            continue
        end, lines = read_from(path, start)
        yield SegmentRead(path.name, start, end, lines, live)
