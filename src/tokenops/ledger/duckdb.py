"""The DuckDB ledger: the embedded default, one file, no server.

DuckDB lets one process write a file at a time. So that a report in a second terminal works while the
gateway runs (and several processes can share a file), no process keeps the file open: each unit of work
opens it, does its work in a transaction and closes it, retrying briefly while another process holds it.
Within a process a lock serialises access. The gateway's request path never opens the file: it writes to
the spool, and the writer thread drains the spool here in batches.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
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
    "cache", "upstream_request_id", "recorded_at",
)  # fmt: skip
_BATCH = 400  # rows per INSERT statement (DuckDB binds parameters per statement)


def _naive_utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).replace(tzinfo=None)


def _aware(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=UTC)


def event_row(e: SpendEvent, recorded_at: datetime) -> tuple[Any, ...]:
    u = e.usage
    return (
        e.request_id, _naive_utc(e.ts), e.source, e.provider, e.model_requested, e.model_used, e.route, e.stream,
        u.input_tokens, u.cache_read_tokens, u.cache_write_5m_tokens, u.cache_write_1h_tokens, u.output_tokens,
        u.reasoning_tokens, e.usage_estimated, e.cost_usd, e.price_row_id, e.key_id, e.end_user,
        *(e.tags.get(t) for t in STANDARD_TAGS), dict(e.tags), list(e.missing_tags), e.status, e.http_status,
        e.error_code, e.latency_ms, e.ttft_ms, e.cache, e.upstream_request_id, recorded_at,
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
        self.lock_timeout = lock_timeout
        self._lock = threading.RLock()
        self._migrated = False

    # --- connections ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, *, timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file (waiting up to ``timeout`` s for another process to let go), migrate, yield, close."""
        deadline = time.monotonic() + (self.lock_timeout if timeout is None else timeout)
        with self._lock:
            delay = 0.01
            while True:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    conn = duckdb.connect(str(self.path))
                    break
                except duckdb.IOException as exc:
                    if "lock" not in str(exc).lower():
                        raise LedgerError(f"cannot open ledger {self.path}: {exc}") from None
                    if time.monotonic() >= deadline:
                        raise LedgerBusy(
                            f"ledger {self.path} is held by another process (a running gateway holds it only "
                            "for moments; try again)"
                        ) from None
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
            finally:
                conn.close()

    def try_connect(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """Like connect() but gives up at once when another process holds the file."""
        return self.connect(timeout=0.0)

    # --- writing events -------------------------------------------------------------------------
    @staticmethod
    def _insert_events(conn: duckdb.DuckDBPyConnection, events: Sequence[SpendEvent]) -> int:
        if not events:
            return 0
        now = datetime.now(UTC).replace(tzinfo=None)
        # Belt and braces for "doubles none": skip request ids already in the ledger for this time window.
        lo = min(_naive_utc(e.ts) for e in events)
        hi = max(_naive_utc(e.ts) for e in events)
        ids = [e.request_id for e in events]
        existing = {
            r[0]
            for r in conn.execute(
                "SELECT request_id FROM events WHERE ts BETWEEN ? AND ? AND list_contains(?, request_id)",
                [lo, hi, ids],
            ).fetchall()
        }
        seen: set[str] = set()
        rows = []
        for e in events:
            if e.request_id in existing or e.request_id in seen:
                continue
            seen.add(e.request_id)
            rows.append(event_row(e, now))
        placeholders = "(" + ",".join("?" * len(EVENT_COLUMNS)) + ")"
        cols = ",".join(f'"{c}"' for c in EVENT_COLUMNS)
        for i in range(0, len(rows), _BATCH):
            chunk = rows[i : i + _BATCH]
            conn.execute(
                f"INSERT INTO events ({cols}) VALUES " + ",".join([placeholders] * len(chunk)),
                [v for r in chunk for v in r],
            )
        return len(rows)

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
                    events, bad = [], []
                    for line in seg.lines:
                        try:
                            events.append(SpendEvent.from_json(line))
                        except (ValueError, TypeError, KeyError) as exc:
                            bad.append((line, exc))
                    if bad and quarantine:
                        self._quarantine(spool_dir, seg.name, bad)
                    conn.execute("BEGIN TRANSACTION")
                    try:
                        if price_rows is not None:
                            used = {e.price_row_id for e in events if e.price_row_id}
                            self._record_price_rows(conn, filter(None, (price_rows(i) for i in used)))
                        inserted += self._insert_events(conn, events)
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
                 _naive_utc(rec.created_at)],
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
