"""The DuckDB ledger: the embedded default, one file, no server.

DuckDB lets one process write a file at a time. So that a report in a second terminal works while the
gateway runs (and several processes can share a file), no process keeps the file open: each unit of work
opens it, does its work in a transaction and closes it, retrying briefly while another process holds it.
Within a process a lock serialises access. The gateway's request path never opens the file: it writes to
the spool, and the writer thread drains the spool here in batches.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson

from tokenops.errors import LedgerBusy, LedgerError
from tokenops.keys import KeyRecord
from tokenops.ledger import identity, migrations
from tokenops.ledger import spool as spoolmod
from tokenops.ledger.events import SpendEvent
from tokenops.pricing.model import PRICE_FIELDS, PriceRow
from tokenops.tags import STANDARD_TAGS

log = logging.getLogger("tokenops.ledger")

EVENT_COLUMNS = (
    "request_id", "ts", "source", "provider", "model_requested", "model_used", "route", "stream",
    "input_tokens", "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "output_tokens",
    "reasoning_tokens", "usage_estimated", "cost_usd", "price_row_id", "key_id", "end_user",
    *STANDARD_TAGS, "tags", "missing_tags", "status", "http_status", "error_code", "latency_ms", "ttft_ms",
    "cache", "upstream_request_id", "approval_id", "recorded_at",
)  # fmt: skip
# DuckDB types of the event columns, for reading a batch file with read_json (see _insert_events)
_TYPES = {
    "request_id": "VARCHAR", "ts": "TIMESTAMP", "source": "VARCHAR", "provider": "VARCHAR",
    "model_requested": "VARCHAR", "model_used": "VARCHAR", "route": "VARCHAR", "stream": "BOOLEAN",
    "input_tokens": "BIGINT", "cache_read_tokens": "BIGINT", "cache_write_5m_tokens": "BIGINT",
    "cache_write_1h_tokens": "BIGINT", "output_tokens": "BIGINT", "reasoning_tokens": "BIGINT",
    "usage_estimated": "BOOLEAN", "cost_usd": "DECIMAL(38,12)", "price_row_id": "VARCHAR", "key_id": "VARCHAR",
    "end_user": "VARCHAR", **{t: "VARCHAR" for t in STANDARD_TAGS}, "tags": "MAP(VARCHAR, VARCHAR)",
    "missing_tags": "VARCHAR[]", "status": "VARCHAR", "http_status": "INTEGER", "error_code": "VARCHAR",
    "latency_ms": "DOUBLE", "ttft_ms": "DOUBLE", "cache": "VARCHAR", "upstream_request_id": "VARCHAR",
    "approval_id": "VARCHAR", "recorded_at": "TIMESTAMP",
}  # fmt: skip
assert tuple(_TYPES) == EVENT_COLUMNS


def _naive_utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).replace(tzinfo=None)


def _ts(value: Any) -> datetime | None:
    """An ISO string or datetime from a spool record, as naive UTC for a TIMESTAMP column."""
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return _naive_utc(dt if dt.tzinfo else dt.replace(tzinfo=UTC))


def _aware(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=UTC)


def event_row(e: SpendEvent, recorded_at: datetime) -> tuple[Any, ...]:
    u = e.usage
    return (
        e.request_id, _naive_utc(e.ts), e.source, e.provider, e.model_requested, e.model_used, e.route, e.stream,
        u.input_tokens, u.cache_read_tokens, u.cache_write_5m_tokens, u.cache_write_1h_tokens, u.output_tokens,
        u.reasoning_tokens, e.usage_estimated, e.cost_usd, e.price_row_id, e.key_id, e.end_user,
        *(e.tags.get(t) for t in STANDARD_TAGS), dict(e.tags), list(e.missing_tags), e.status, e.http_status,
        e.error_code, e.latency_ms, e.ttft_ms, e.cache, e.upstream_request_id, e.approval_id, recorded_at,
    )  # fmt: skip


def row_event(row: Sequence[Any]) -> SpendEvent:
    d = dict(zip(EVENT_COLUMNS, row, strict=True))
    usage = {k: d.pop(k) for k in (
        "input_tokens", "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "output_tokens",
        "reasoning_tokens")}  # fmt: skip
    for t in STANDARD_TAGS:
        d.pop(t)
    d.pop("recorded_at")
    d["usage"] = usage
    d["ts"] = _aware(d["ts"])
    d["tags"] = dict(d["tags"] or {})
    d["cost_usd"] = None if d["cost_usd"] is None else format(d["cost_usd"], "f")
    return SpendEvent.from_dict(d)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    raise TypeError(f"cannot encode {type(value).__name__}")


_REFUSED = (duckdb.DataError, duckdb.IntegrityError, duckdb.InvalidInputException)  # the data, not the ledger
_RECORD_FIELDS = {
    "alert": ("id", "kind", "budget", "period_start", "message", "fired_at"),
    "approval": ("id", "reason", "requested_at"),
}


def _record_problem(r: dict[str, Any]) -> str | None:
    """Why a spool record (alert fired, approval requested) cannot be applied, or None."""
    kind = r.get("record")
    required = _RECORD_FIELDS.get(kind) if isinstance(kind, str) else None
    if required is None:
        return f"unknown spool record {kind!r}"
    for name in required:
        if not isinstance(r.get(name), str):
            return f"{kind} record without a text {name!r}"
    for name in ("key_id", "model"):
        if r.get(name) is not None and not isinstance(r[name], str):
            return f"{kind} record with a {name!r} that is not text"
    threshold = r.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        return f"{kind} record with a threshold that is not a number"
    for name in ("period_start", "fired_at", "requested_at"):
        if name in r:
            try:
                _ts(r[name])
            except (ValueError, TypeError):
                return f"{kind} record with an invalid {name!r}"
    return None


def _quarantine(spool_dir: Path, segment: str, bad: list[tuple[bytes, str]]) -> None:
    """Keep lines the ledger cannot take in ``rejected.log`` (one JSON object a line), and say so in the log."""
    path = spool_dir / spoolmod.REJECTED
    now = datetime.now(UTC).isoformat()
    with open(path, "ab") as fh:
        for line, reason in bad:
            log.error("spool %s: a line the ledger cannot take is kept in %s: %s", segment, path, reason)
            fh.write(orjson.dumps({"at": now, "segment": segment, "reason": reason,
                                   "line": line.decode("utf-8", "backslashreplace")}) + b"\n")  # fmt: skip
        fh.flush()
        os.fsync(fh.fileno())


def price_row_json(row: PriceRow) -> str:
    prices: dict[str, Any] = {n: (None if getattr(row, n) is None else str(getattr(row, n))) for n in PRICE_FIELDS}
    prices["per_request"] = None if row.per_request is None else str(row.per_request)
    prices["tiers"] = [
        {"above_input_tokens": t.above_input_tokens, **{n: (None if getattr(t, n) is None else str(getattr(t, n)))
                                                         for n in PRICE_FIELDS}}
        for t in row.tiers
    ]
    return orjson.dumps(prices).decode()


class DuckDBLedger:
    """Ledger on a DuckDB file. Thread-safe; safe to share the file between processes (they take turns)."""

    def __init__(self, path: Path | str, *, lock_timeout: float = 15.0):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self._lock = threading.RLock()
        self._migrated = False

    # --- connections ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _turn(self, deadline: float) -> Iterator[None]:
        """Take the ledger's lock file: one unit of work at a time across threads, instances and processes.

        DuckDB's own file lock only separates processes; two connections of one process (two gateways in a
        test, the demo's report beside its gateway) would otherwise race their transactions.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LedgerBusy(
                            f"ledger {self.path} is busy (another process is using it; a running gateway "
                            "holds it only for moments; try again)"
                        ) from None
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.1)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def connect(self, *, timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file (waiting up to ``timeout`` s for others to let go), migrate, yield, close."""
        deadline = time.monotonic() + (self.lock_timeout if timeout is None else timeout)
        with self._lock, self._turn(deadline):
            delay = 0.01
            while True:
                try:
                    conn = duckdb.connect(str(self.path))
                    break
                except duckdb.IOException as exc:
                    # a process that does not use our lock file (e.g. the duckdb CLI) holds the database
                    if "lock" not in str(exc).lower():
                        raise LedgerError(f"cannot open ledger {self.path}: {exc}") from None
                    if time.monotonic() >= deadline:
                        raise LedgerBusy(f"ledger {self.path} is held by another program") from None
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.2)
                except duckdb.Error as exc:
                    raise LedgerError(f"cannot open ledger {self.path}: {exc}") from None
            try:
                conn.execute("SET TimeZone = 'UTC'")
                if not self._migrated:
                    migrations.apply(conn)
                    self._migrated = True
                yield conn
            except duckdb.Error as exc:
                raise LedgerError(f"ledger {self.path}: {exc}") from exc
            finally:
                conn.close()

    def ping(self, timeout: float = 0.5) -> None:
        """Open the ledger and run a trivial query (raises LedgerError / LedgerBusy)."""
        with self.connect(timeout=timeout) as conn:
            conn.execute("SELECT 1").fetchone()

    def identity_secret(self) -> str:
        """This ledger's random secret (made on first use; see :mod:`tokenops.ledger.identity`)."""
        with self.connect() as conn:
            conn.execute("INSERT INTO ledger_meta VALUES ('identity_secret', ?) ON CONFLICT DO NOTHING",
                         [identity.new_secret()])  # fmt: skip
            row = conn.execute("SELECT value FROM ledger_meta WHERE name = 'identity_secret'").fetchone()
        return str(row[0])

    def try_connect(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """Like connect() but gives up at once when another process holds the file."""
        return self.connect(timeout=0.0)

    # --- writing events -------------------------------------------------------------------------
    def _insert_events(self, conn: duckdb.DuckDBPyConnection, events: Sequence[SpendEvent]) -> int:
        """Bulk-insert events, skipping request ids already in the ledger ("doubles none").

        Binding parameters row by row is slow in DuckDB (~1k rows/s); writing the batch as JSON lines and
        reading it with ``read_json`` is ~100x faster, and the decimal strings stay exact.
        """
        if not events:
            return 0
        now = datetime.now(UTC).replace(tzinfo=None)
        tmp_dir = self.path.parent
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.batch-", suffix=".jsonl", dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"\n".join(orjson.dumps(dict(zip(EVENT_COLUMNS, event_row(e, now), strict=True)),
                                                  default=_json_default) for e in events))  # fmt: skip
            lo = min(_naive_utc(e.ts) for e in events)
            hi = max(_naive_utc(e.ts) for e in events)
            cols = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
            types = "{" + ", ".join(f"'{c}': '{t}'" for c, t in _TYPES.items()) + "}"
            row = conn.execute(
                f"""
                INSERT INTO events ({cols})
                SELECT {cols} FROM read_json(?, format = 'newline_delimited', columns = {types}) b
                WHERE NOT EXISTS (
                    SELECT 1 FROM events e WHERE e.ts BETWEEN ? AND ? AND e.request_id = b.request_id)
                QUALIFY row_number() OVER (PARTITION BY b.request_id) = 1
                """,
                [name, lo, hi],
            ).fetchone()
        finally:
            os.unlink(name)
        return int(row[0]) if row else 0

    @staticmethod
    def _record_price_rows(conn: duckdb.DuckDBPyConnection, rows: Iterable[PriceRow]) -> None:
        rows = {r.id: r for r in rows}
        if not rows:
            return
        known = {
            r[0] for r in conn.execute("SELECT id FROM price_rows WHERE list_contains(?, id)", [list(rows)]).fetchall()
        }
        now = datetime.now(UTC).replace(tzinfo=None)
        for row in rows.values():
            if row.id in known:
                continue
            conn.execute(
                "INSERT INTO price_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [row.id, row.provider, row.model, _naive_utc(row.effective_from), _naive_utc(row.effective_to),
                 row.source, price_row_json(row), now],
            )  # fmt: skip

    def append(self, events: Sequence[SpendEvent], price_rows: Iterable[PriceRow] = ()) -> int:
        """Insert events directly (imports, backfills); idempotent by request id."""
        with self.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                self._record_price_rows(conn, price_rows)
                n = self._insert_events(conn, events)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return n

    def drain(
        self, spool_dir: Path, price_rows: Any = None, *, timeout: float | None = None, quarantine: bool = True
    ) -> int:
        """Move everything in the spool into the ledger; returns the number of events inserted.

        ``price_rows`` is a callable id -> PriceRow | None (the catalog) so the rows used get recorded.
        One bad line never stops the ledger: a line that is not an event, an event the ledger's columns cannot
        hold, or one the database refuses is kept in ``<spool>/rejected.log`` with the reason (and logged), and
        the rest is drained. A dead segment's torn last line (a call that was never answered) is kept there too
        before the segment is removed.
        """
        found = spoolmod.segments(spool_dir)
        if not found:
            return 0
        inserted = 0
        with self.connect(timeout=timeout) as conn:
            progress = dict(conn.execute('SELECT segment, "offset" FROM spool_progress').fetchall())
            for seg in spoolmod.pending(spool_dir, progress):
                if seg.lines:
                    inserted += self._drain_segment(conn, spool_dir, seg, price_rows, quarantine)
                if not seg.live:
                    self._retire(conn, spool_dir, seg, quarantine)
            names = {p.name for p in found}
            gone = [name for name in progress if name not in names]
            if gone:  # segments deleted by hand, or rewritten by a spool that found its segment deleted
                conn.execute("DELETE FROM spool_progress WHERE list_contains(?, segment)", [gone])
        return inserted

    def _drain_segment(self, conn: duckdb.DuckDBPyConnection, spool_dir: Path, seg: spoolmod.SegmentRead,
                       price_rows: Any, quarantine: bool) -> int:  # fmt: skip
        events: list[SpendEvent] = []
        lines: dict[str, bytes] = {}  # request id -> its line, to quarantine an event the database refuses
        records: list[dict[str, Any]] = []
        bad: list[tuple[bytes, str]] = []
        for line in seg.lines:
            try:
                obj = orjson.loads(line)
                if isinstance(obj, dict) and "record" in obj:
                    problem = _record_problem(obj)
                    if problem:
                        raise ValueError(problem)
                    records.append(obj)
                    continue
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                event = SpendEvent.from_dict(obj)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                bad.append((line, f"unreadable: {exc}"))
                continue
            problems = event.problems()
            if problems:
                bad.append((line, "; ".join(problems)))
                continue
            events.append(event)
            lines[event.request_id] = line
        try:
            return self._commit_segment(conn, seg, events, records, price_rows, bad, spool_dir, quarantine)
        except _REFUSED as exc:
            # Which events does the database refuse? Try each alone (rolled back), then commit the rest.
            log.error("spool %s: the ledger refused a batch (%s); looking for the events it refuses", seg.name, exc)
        good, good_records = [], []
        for event in events:
            if self._refuses(conn, lambda e=event: self._insert_events(conn, [e]), lines[event.request_id], bad):
                continue
            good.append(event)
        for record in records:
            if not self._refuses(conn, lambda r=record: self._apply_record(conn, r), orjson.dumps(record), bad):
                good_records.append(record)
        return self._commit_segment(conn, seg, good, good_records, price_rows, bad, spool_dir, quarantine)

    @staticmethod
    def _refuses(conn: duckdb.DuckDBPyConnection, write: Any, line: bytes, bad: list[tuple[bytes, str]]) -> bool:
        """Try one write in a transaction that is rolled back; a refusal is noted in ``bad``."""
        conn.execute("BEGIN TRANSACTION")
        try:
            write()
        except _REFUSED as refused:
            bad.append((line, f"refused by the ledger: {refused}"))
            return True
        finally:
            conn.execute("ROLLBACK")
        return False

    def _commit_segment(self, conn: duckdb.DuckDBPyConnection, seg: spoolmod.SegmentRead, events: list[SpendEvent],
                        records: list[dict[str, Any]], price_rows: Any, bad: list[tuple[bytes, str]],
                        spool_dir: Path, quarantine: bool) -> int:  # fmt: skip
        conn.execute("BEGIN TRANSACTION")
        try:
            used = {e.price_row_id for e in events if e.price_row_id}
            if price_rows is not None and used:
                known = {r[0] for r in conn.execute(
                    "SELECT id FROM price_rows WHERE list_contains(?, id)", [list(used)]).fetchall()}  # fmt: skip
                self._record_price_rows(conn, filter(None, (price_rows(i) for i in used - known)))
            n = self._insert_events(conn, events)
            for record in records:
                self._apply_record(conn, record)
            conn.execute(
                "INSERT OR REPLACE INTO spool_progress VALUES (?, ?, ?)",
                [seg.name, seg.end, datetime.now(UTC).replace(tzinfo=None)],
            )
            if bad and quarantine:
                # before the commit that moves past them: a crash in between keeps them twice, never zero times
                _quarantine(spool_dir, seg.name, bad)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return n

    @staticmethod
    def _retire(conn: duckdb.DuckDBPyConnection, spool_dir: Path, seg: spoolmod.SegmentRead, quarantine: bool) -> None:
        """Remove a segment no process appends to any more, once the ledger holds all of it."""
        path = spool_dir / seg.name
        try:
            tail = spoolmod.read_tail(path, seg.end)
        except FileNotFoundError:
            return
        valid_rest = tail if seg.valid is None else tail[: max(0, seg.valid - seg.end)]
        if b"\n" in valid_rest:
            return  # more complete lines than one pass reads: the next drain takes them
        if seg.valid is not None and len(tail) > len(valid_rest):
            void = tail[len(valid_rest):]
            log.warning("spool %s: %d bytes past its valid part were written by a write that failed (their calls "
                        "were answered 503); kept in %s", seg.name, len(void), spool_dir / spoolmod.REJECTED)  # fmt: skip
            if quarantine:
                _quarantine(spool_dir, seg.name, [(void, "written by a write that failed: its calls were answered "
                                                         "503 and are recorded from the spool's retry")])  # fmt: skip
            tail = valid_rest
        if tail:
            log.warning("spool %s: its writer died mid-line; the %d-byte torn line (a call never answered) is kept "
                        "in %s", seg.name, len(tail), spool_dir / spoolmod.REJECTED)  # fmt: skip
            if quarantine:
                _quarantine(spool_dir, seg.name, [(tail, "torn last line of a dead segment: its call was never answered")])
        path.unlink(missing_ok=True)
        conn.execute("DELETE FROM spool_progress WHERE segment = ?", [seg.name])

    @staticmethod
    def _apply_record(conn: duckdb.DuckDBPyConnection, r: dict[str, Any]) -> None:
        kind = r.get("record")
        if kind == "alert":
            conn.execute(
                "INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [r["id"], r["kind"], r["budget"], _ts(r["period_start"]), r.get("threshold"), r["message"],
                 _ts(r["fired_at"]), orjson.dumps(r.get("details") or {}).decode()],
            )  # fmt: skip
        elif kind == "approval":
            conn.execute(
                "INSERT INTO approvals (id, status, key_id, reason, model, message, requested_at) "
                "VALUES (?, 'pending', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [r["id"], r.get("key_id"), r["reason"], r.get("model"), r.get("message"), _ts(r["requested_at"])],
            )
        else:
            raise ValueError(f"unknown spool record {kind!r}")

    # --- reading events -------------------------------------------------------------------------
    def get_event(self, request_id: str) -> SpendEvent | None:
        cols = ",".join(f'"{c}"' for c in EVENT_COLUMNS)
        with self.connect() as conn:
            row = conn.execute(f"SELECT {cols} FROM events WHERE request_id = ? LIMIT 1", [request_id]).fetchone()
        return None if row is None else row_event(row)

    def count_events(self) -> int:
        with self.connect() as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])

    # --- keys -----------------------------------------------------------------------------------
    def insert_key(self, rec: KeyRecord) -> None:
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                [rec.id, rec.name, rec.key_hash, rec.key_prefix, dict(rec.tags), list(rec.locked_tags),
                 _naive_utc(rec.created_at or datetime.now(UTC))],
            )  # fmt: skip

    def list_keys(self) -> list[KeyRecord]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT id, name, key_hash, key_prefix, tags, locked_tags, created_at, revoked_at "
                "FROM keys ORDER BY created_at, id"
            ).fetchall()
        return [
            KeyRecord(
                id=r[0], name=r[1], key_hash=r[2], key_prefix=r[3], tags=dict(r[4] or {}),
                locked_tags=tuple(r[5] or ()), created_at=_aware(r[6]), revoked_at=_aware(r[7]),
            )  # fmt: skip
            for r in rows
        ]

    def revoke_key(self, key_id: str) -> bool:
        with self.connect() as conn:
            found = conn.execute("SELECT revoked_at FROM keys WHERE id = ?", [key_id]).fetchone()
            if found is None:
                return False
            if found[0] is None:
                conn.execute(
                    "UPDATE keys SET revoked_at = ? WHERE id = ?", [datetime.now(UTC).replace(tzinfo=None), key_id]
                )
            return True
