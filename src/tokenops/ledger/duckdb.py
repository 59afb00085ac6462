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
from tokenops.ledger import migrations
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
        """
        if not spoolmod.segments(spool_dir):
            return 0
        inserted = 0
        with self.connect(timeout=timeout) as conn:
            progress = dict(conn.execute('SELECT segment, "offset" FROM spool_progress').fetchall())
            for seg in spoolmod.pending(spool_dir, progress):
                if seg.lines:
                    events, records, bad = [], [], []
                    for line in seg.lines:
                        try:
                            obj = orjson.loads(line)
                            if isinstance(obj, dict) and "record" in obj:
                                records.append(obj)
                            else:
                                events.append(SpendEvent.from_dict(obj))
                        except (ValueError, TypeError, KeyError) as exc:
                            bad.append((line, exc))
                    if bad and quarantine:
                        self._quarantine(spool_dir, seg.name, bad)
                    conn.execute("BEGIN TRANSACTION")
                    try:
                        used = {e.price_row_id for e in events if e.price_row_id}
                        if price_rows is not None and used:
                            known = {r[0] for r in conn.execute(
                                "SELECT id FROM price_rows WHERE list_contains(?, id)", [list(used)]).fetchall()}
                            self._record_price_rows(conn, filter(None, (price_rows(i) for i in used - known)))
                        inserted += self._insert_events(conn, events)
                        for record in records:
                            try:
                                self._apply_record(conn, record)
                            except (KeyError, ValueError, TypeError) as exc:
                                self._quarantine(spool_dir, seg.name, [(orjson.dumps(record), exc)])
                        conn.execute(
                            'INSERT OR REPLACE INTO spool_progress VALUES (?, ?, ?)',
                            [seg.name, seg.end, datetime.now(UTC).replace(tzinfo=None)],
                        )
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                if not seg.live and seg.end >= (spool_dir / seg.name).stat().st_size:
                    # drained and no longer appended to: the ledger holds it all now
                    (spool_dir / seg.name).unlink(missing_ok=True)
                    conn.execute("DELETE FROM spool_progress WHERE segment = ?", [seg.name])
        return inserted

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

    @staticmethod
    def _quarantine(spool_dir: Path, segment: str, bad: list[tuple[bytes, Exception]]) -> None:
        path = spool_dir / "rejected.log"
        with open(path, "ab") as fh:
            for line, exc in bad:
                log.error("spool %s: unreadable event kept in %s: %s", segment, path, exc)
                fh.write(segment.encode() + b"\t" + line + b"\n")

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
