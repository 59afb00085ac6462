"""The DuckDB ledger: the embedded default, one file, no server.

DuckDB lets one process write a file at a time. So that a report in a second terminal works while the
gateway runs (and several processes can share a file), no process keeps the file open: each unit of work
opens it, does its work in a transaction and closes it, retrying briefly while another process holds it.
Within a process a lock serialises access. The gateway's request path never opens the file: it writes to
the spool, and the writer drains the spool here in batches.

Everything DuckDB-specific is here: its SQL dialect (``GROUP BY ALL``, ``strftime('%G-W%V')``,
``tags['x']``, ``GLOB``), the bulk insert through ``read_json``, the lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson

from tokenops.errors import LedgerBusy, LedgerError
from tokenops.keys import KeyRecord
from tokenops.ledger import identity, migrations
from tokenops.ledger import spool as spoolmod
from tokenops.ledger.base import (
    ANOMALY_SELECT,
    CALLS_SELECT,
    DEFINITION_KINDS,
    EVENT_COLUMNS,
    TABLES,
    USAGE_COLUMNS,
    USAGE_ROW_COLUMNS,
    EventLine,
    FocusGroup,
    PriceRows,
    Totals,
    anomaly_rows,
    aware,
    drain_spool,
    focus_group,
    focus_sql,
    keyset,
    naive_utc,
    parse_ts,
    price_row_insert,
    price_row_record,
    price_row_values,
    report_where,
    row_event,
    window_filter,
)
from tokenops.ledger.business_metrics import MetricRow, MetricsWritten
from tokenops.ledger.events import SpendEvent
from tokenops.ledger.records import AlertKey, Approval, ApprovalStatus
from tokenops.ledger.reports import (
    ERROR_SQL,
    MAX_BUCKETS,
    RATE_LIMITED_SQL,
    UNPRICED_SQL,
    ActivityRow,
    Dimension,
    ReportQuery,
    SpendReport,
    UnpricedModel,
    activity_from_rows,
    check_bucket,
    report_from_rows,
)
from tokenops.pricing.model import PriceRow
from tokenops.scopes import Scope
from tokenops.tags import STANDARD_TAGS

# DuckDB types of the event columns, for reading a batch file with read_json (see _Session.insert_events)
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
    "input_audio_tokens": "BIGINT", "output_audio_tokens": "BIGINT", "web_searches": "BIGINT",
    "input_image_tokens": "BIGINT", "output_image_tokens": "BIGINT",
    "file_searches": "BIGINT", "code_containers": "BIGINT", "route_reason": "VARCHAR",
    "cost_avoided_usd": "DECIMAL(38,12)", "prefix_hash": "VARCHAR", "prefix_tokens": "BIGINT", "request_hash": "VARCHAR",
    "max_output": "BIGINT",
}  # fmt: skip
assert tuple(_TYPES) == EVENT_COLUMNS
_COLS = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
_ROW_TYPES = "{" + ", ".join(f"'{c}': '{t}'" for c, t in _TYPES.items()) + "}"
_ROW_SELECT = ", ".join(f'b."{c}"' for c in EVENT_COLUMNS)
# The same columns read from SpendEvent.to_json lines: usage nested, standard tags inside the tags map, an aware
# timestamp (stored as naive UTC), the time of the insert as recorded_at.
_EVENT_TYPES = "{" + ", ".join(
    [f"'{c}': '{t}'" for c, t in _TYPES.items() if c not in USAGE_COLUMNS and c not in STANDARD_TAGS
     and c not in ("ts", "recorded_at")]
    + ["'ts': 'TIMESTAMPTZ'", "'usage': 'STRUCT(" + ", ".join(f"{c} BIGINT" for c in USAGE_COLUMNS) + ")'"]
) + "}"  # fmt: skip
_EVENT_SELECT = ", ".join(
    "timezone('UTC', b.ts)" if c == "ts"
    else f"b.usage.{c}" if c in USAGE_COLUMNS
    else f"b.tags['{c}']" if c in STANDARD_TAGS
    else "timezone('UTC', now())" if c == "recorded_at"
    else f'b."{c}"'
    for c in EVENT_COLUMNS
)  # fmt: skip
_NESTED = {"tags", "missing_tags", "locked_tags"}  # MAP and LIST columns
# the database will not take this data (as opposed to: the database is not working)
REFUSED = (duckdb.DataError, duckdb.IntegrityError, duckdb.InvalidInputException)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    raise TypeError(f"cannot encode {type(value).__name__}")


def scope_where(scope: Scope) -> tuple[str, list[str]]:
    """A WHERE fragment over the events table for a scope, with its parameters."""
    parts, params = ["TRUE"], []
    for name, want in scope.conditions:
        if name == "key":
            parts.append("key_id = ?")
        elif name == "user":
            parts.append("end_user = ?")
        elif name == "model":
            parts.append("(model_requested GLOB ? OR model_used GLOB ?)")
            params.append(want)
        elif name in STANDARD_TAGS:
            parts.append(f"{name} = ?")
        else:
            parts.append(f"tags['{name}'] = ?")  # name passed check_name: safe to inline
        params.append(want)
    return " AND ".join(parts), params


def _dimension_sql(d: Dimension, tz: str) -> str:
    if d.kind == "fixed":
        return f"coalesce(nullif({d.column}, ''), '{d.missing}')"
    if d.kind == "standard_tag":
        return f"coalesce({d.column}, '{d.missing}')"
    if d.kind == "time":
        local = f"timezone('{tz}', ts::TIMESTAMPTZ)" if tz != "UTC" else "ts"
        fmt = {"day": "%Y-%m-%d", "week": "%G-W%V", "month": "%Y-%m"}[d.name]
        return f"strftime({local}, '{fmt}')"
    return f"coalesce(tags['{d.name}'], '{d.missing}')"  # a validated tag name: safe to inline


def _query_where(q: ReportQuery) -> tuple[str, list[Any]]:
    return report_where(q, "?", _dimension_sql)


class _Session:
    """The drain's primitives on one open connection (see :class:`tokenops.ledger.base.Session`)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, tmp_dir: Path):
        self.conn = conn
        self.tmp_dir = tmp_dir

    def progress(self) -> dict[str, int]:
        return dict(self.conn.execute('SELECT segment, "offset" FROM spool_progress').fetchall())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def probe(self) -> Iterator[None]:
        self.conn.execute("BEGIN TRANSACTION")
        try:
            yield
        finally:
            self.conn.execute("ROLLBACK")

    def known_price_rows(self, ids: list[str]) -> set[str]:
        found = self.conn.execute("SELECT id FROM price_rows WHERE list_contains(?, id)", [ids]).fetchall()
        return {r[0] for r in found}

    def record_price_rows(self, rows: Iterable[PriceRow]) -> None:
        by_id = {r.id: r for r in rows}
        if not by_id:
            return
        known = self.known_price_rows(list(by_id))
        now = datetime.now(UTC).replace(tzinfo=None)
        for row in by_id.values():
            if row.id not in known:
                self.conn.execute(price_row_insert("?"), price_row_values(price_row_record(row), now))

    def insert_events(self, events: Sequence[SpendEvent]) -> int:
        """Bulk-insert events, skipping request ids already in the ledger ("doubles none").

        Binding parameters row by row is slow in DuckDB (~1k rows/s). The batch is written as the events' own
        JSON lines (:meth:`SpendEvent.to_json`, the spool's encoding) and read back with ``read_json``, which
        parses them in C++ on every core: nested usage, tags as a map, decimal strings cast exactly.
        """
        return self.insert_lines([EventLine.of(e) for e in events])

    def insert_lines(self, lines: Sequence[EventLine]) -> int:
        """Bulk-insert spool lines as they are (see :meth:`insert_events`): no event is built or re-encoded."""
        if not lines:
            return 0
        lo = naive_utc(min(e.ts for e in lines))
        hi = naive_utc(max(e.ts for e in lines))
        return self._insert_json(b"\n".join(e.line for e in lines), _EVENT_SELECT, _EVENT_TYPES, lo, hi)

    def _insert_json(self, data: bytes, select: str, types: str, lo: Any, hi: Any) -> int:
        fd, name = tempfile.mkstemp(prefix=".tokenops-batch-", suffix=".jsonl", dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            row = self.conn.execute(
                f"""
                INSERT INTO events ({_COLS})
                SELECT {select} FROM read_json(?, format = 'newline_delimited', columns = {types}) b
                WHERE NOT EXISTS (
                    SELECT 1 FROM events e WHERE e.ts BETWEEN ? AND ? AND e.request_id = b.request_id)
                QUALIFY row_number() OVER (PARTITION BY b.request_id) = 1
                """,
                [name, lo, hi],
            ).fetchone()
        finally:
            os.unlink(name)
        return int(row[0]) if row else 0

    def insert_rows(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Bulk-insert events given as rows (column -> value, see :func:`tokenops.ledger.base.event_values`)."""
        if not rows:
            return 0
        data = b"\n".join(orjson.dumps(dict(r), default=_json_default) for r in rows)
        return self._insert_json(data, _ROW_SELECT, _ROW_TYPES, min(r["ts"] for r in rows), max(r["ts"] for r in rows))

    def apply_record(self, r: dict[str, Any]) -> None:
        kind = r.get("record")
        if kind == "alert":
            self.conn.execute(
                "INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [r["id"], r["kind"], r["budget"], parse_ts(r["period_start"]), r.get("threshold"), r["message"],
                 parse_ts(r["fired_at"]), orjson.dumps(r.get("details") or {}).decode()],
            )  # fmt: skip
        elif kind == "approval":
            self.conn.execute(
                "INSERT INTO approvals (id, status, key_id, reason, model, message, requested_at) "
                "VALUES (?, 'pending', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [r["id"], r.get("key_id"), r["reason"], r.get("model"), r.get("message"), parse_ts(r["requested_at"])],
            )
        elif kind == "price_row":
            self.conn.execute(price_row_insert("?"), price_row_values(r, datetime.now(UTC).replace(tzinfo=None)))
        else:
            raise ValueError(f"unknown spool record {kind!r}")

    def set_progress(self, segment: str, offset: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO spool_progress VALUES (?, ?, ?)",
                          [segment, offset, datetime.now(UTC).replace(tzinfo=None)])  # fmt: skip

    def forget_progress(self, segments: list[str]) -> None:
        self.conn.execute("DELETE FROM spool_progress WHERE list_contains(?, segment)", [segments])


class DuckDBLedger:
    """Ledger on a DuckDB file. Thread-safe; safe to share the file between processes (they take turns)."""

    def __init__(self, path: Path | str, *, lock_timeout: float = 15.0):
        self.path = Path(path)
        self.url = f"duckdb:///{self.path}"
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self._lock = threading.RLock()
        self._migrated = False
        self._applied: list[str] = []

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
                    held = conn.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
                                        ).fetchone()  # fmt: skip
                    if held is None or held[0] is None:  # DuckDB reads a CSV, JSON or Parquet file as a view
                        raise LedgerError(f"cannot open ledger {self.path}: the file is not a DuckDB database (DuckDB "
                                          "would read it as data and keep nothing written to it)")  # fmt: skip
                    self._applied = migrations.apply(conn, where=str(self.path))
                    self._migrated = True
                yield conn
            except duckdb.Error as exc:
                raise LedgerError(f"ledger {self.path}: {exc}") from exc
            finally:
                conn.close()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.connect() as conn:
            row = conn.execute(sql, list(params)).fetchone()
        return None if row is None else row[0]

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.connect() as conn:
            return conn.execute(sql, list(params)).fetchall()

    def ping(self, timeout: float = 0.5) -> None:
        with self.connect(timeout=timeout) as conn:
            conn.execute("SELECT 1").fetchone()

    def migrate(self) -> list[str]:
        """Apply pending schema migrations now; returns the names applied (by this object's first connection)."""
        with self.connect():
            pass
        applied, self._applied = self._applied, []
        return applied

    def close(self) -> None:
        """Nothing to let go of: no connection outlives its unit of work."""

    def identity_secret(self) -> str:
        """This ledger's random secret (made on first use; see :mod:`tokenops.ledger.identity`)."""
        with self.connect() as conn:
            conn.execute("INSERT INTO ledger_meta VALUES ('identity_secret', ?) ON CONFLICT DO NOTHING",
                         [identity.new_secret()])  # fmt: skip
            row = conn.execute("SELECT value FROM ledger_meta WHERE name = 'identity_secret'").fetchone()
        assert row is not None  # inserted just above if it was missing
        return str(row[0])

    # --- writing events -------------------------------------------------------------------------
    def append(self, events: Sequence[SpendEvent], price_rows: Iterable[PriceRow] = ()) -> int:
        """Insert events directly (imports, backfills); idempotent by request id."""
        with self.connect() as conn:
            session = _Session(conn, self.path.parent)
            with session.transaction():
                session.record_price_rows(price_rows)
                return session.insert_events(events)

    def drain(self, spool_dir: Path, price_rows: PriceRows | None = None, *, timeout: float | None = None,
              quarantine: bool = True) -> int:  # fmt: skip
        """Move everything in the spool into the ledger (see :func:`tokenops.ledger.base.drain_spool`)."""
        if not spoolmod.segments(spool_dir):
            return 0  # nothing to do: do not open the file
        with self.connect(timeout=timeout) as conn:
            return drain_spool(_Session(conn, self.path.parent), spool_dir, price_rows, REFUSED, quarantine)

    # --- reading events -------------------------------------------------------------------------
    def get_event(self, request_id: str) -> SpendEvent | None:
        with self.connect() as conn:
            row = conn.execute(f"SELECT {_COLS} FROM events WHERE request_id = ? LIMIT 1", [request_id]).fetchone()
        return None if row is None else row_event(row)

    def event_by_upstream_id(self, upstream_id: str, route: str) -> SpendEvent | None:
        with self.connect() as conn:
            row = conn.execute(f"SELECT {_COLS} FROM events WHERE upstream_request_id = ? AND route = ? "
                               "ORDER BY ts LIMIT 1", [upstream_id, route]).fetchone()  # fmt: skip
        return None if row is None else row_event(row)

    def usage_rows(self, since: datetime | None, until: datetime | None) -> list[tuple[Any, ...]]:
        where, params = window_filter("status = 'ok'", since, until, "?")
        cols = ", ".join(f'"{c}"' for c in USAGE_ROW_COLUMNS)
        with self.connect() as conn:
            return [tuple(r) for r in conn.execute(f"SELECT {cols} FROM events WHERE {where} ORDER BY ts",
                                                   params).fetchall()]  # fmt: skip

    def routed_events(self, since: datetime | None, until: datetime | None) -> list[SpendEvent]:
        where, params = window_filter("(route_reason IS NOT NULL OR cache = 'hit')", since, until, "?")
        with self.connect() as conn:
            rows = conn.execute(f"SELECT {_COLS} FROM events WHERE {where} ORDER BY ts", params).fetchall()
        return [row_event(r) for r in rows]

    def focus_groups(self, since: datetime | None, until: datetime | None, bucket_seconds: int,
                     thresholds: Sequence[int]) -> Iterator[FocusGroup]:  # fmt: skip
        where, params = window_filter("TRUE", since, until, "?")
        with self.connect() as conn:  # as Arrow columns (compact), so the file is let go before rows are made
            rel = conn.sql(focus_sql(where, "epoch(ts)", bucket_seconds, thresholds), params=params)
            table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()  # DuckDB 2, 1
        for batch in table.to_batches(max_chunksize=10_000):
            yield from (focus_group(r) for r in zip(*(c.to_pylist() for c in batch.columns), strict=True))

    def count_events(self) -> int:
        return int(self._one("SELECT count(*) FROM events"))

    def spend_report(self, q: ReportQuery) -> SpendReport:
        dims = [_dimension_sql(d, q.timezone) for d in q.by]
        where, params = _query_where(q)
        select_dims = "".join(f"{d} AS d{i}, " for i, d in enumerate(dims))
        group = f"GROUP BY {', '.join(f'd{i}' for i in range(len(dims)))}" if dims else ""
        sql = (
            f"SELECT {select_dims} count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            f"coalesce(sum(cost_usd), 0)::DECIMAL(38,12), count(*) FILTER (WHERE {UNPRICED_SQL}) "
            f"FROM events WHERE {where} {group} ORDER BY {len(dims) + 4} DESC, "
            + ", ".join([f"d{i}" for i in range(len(dims))] + ["1"])
        )
        return report_from_rows(q, self._all(sql, params))

    def activity(self, q: ReportQuery, bucket_seconds: int) -> list[ActivityRow]:
        n = check_bucket(bucket_seconds)
        dims = [_dimension_sql(d, q.timezone) for d in q.by]
        where, params = _query_where(q)
        select_dims = "".join(f"{d} AS d{i}, " for i, d in enumerate(dims))
        sql = (
            f"SELECT CAST(floor(epoch(ts) / {n}) AS BIGINT) * {n} AS b, {select_dims} count(*), "
            f"count(*) FILTER (WHERE {ERROR_SQL}), count(*) FILTER (WHERE {RATE_LIMITED_SQL}), "
            "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(cost_usd), 0)::DECIMAL(38,12), coalesce(sum(latency_ms) FILTER (WHERE status = 'ok'), 0), "
            f"count(latency_ms) FILTER (WHERE status = 'ok') FROM events WHERE {where} "
            f"GROUP BY ALL ORDER BY 1 LIMIT {MAX_BUCKETS}"
        )
        return activity_from_rows(q, self._all(sql, params))

    def unpriced_models(self) -> list[UnpricedModel]:
        rows = self._all(
            "SELECT provider, model_used, count(*), min(ts), max(ts), sum(input_tokens), sum(output_tokens) "
            f"FROM events WHERE {UNPRICED_SQL} GROUP BY ALL ORDER BY 3 DESC, 1, 2"
        )
        return [UnpricedModel(p, m, int(n), aware(a), aware(b), int(i), int(o))  # type: ignore[arg-type]
                for p, m, n, a, b, i, o in rows]  # fmt: skip

    def spent(self, scope: Scope, start: datetime, end: datetime, unit: str) -> Decimal:
        where, params = scope_where(scope)
        measure = "coalesce(sum(cost_usd), 0)" if unit == "usd" else "coalesce(sum(input_tokens + output_tokens), 0)"
        value = self._one(f"SELECT {measure} FROM events WHERE ts >= ? AND ts < ? AND {where}",
                          [naive_utc(start), naive_utc(end), *params])  # fmt: skip
        return Decimal(value or 0)

    def approval_spend(self) -> dict[str, Decimal]:
        rows = self._all("SELECT approval_id, coalesce(sum(cost_usd), 0) FROM events WHERE approval_id IS NOT NULL "
                         "GROUP BY 1")  # fmt: skip
        return {r[0]: Decimal(r[1]) for r in rows}

    # --- keys -----------------------------------------------------------------------------------
    def insert_key(self, rec: KeyRecord) -> None:
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO keys (id, name, key_hash, key_prefix, tags, locked_tags, created_at, end_user) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [rec.id, rec.name, rec.key_hash, rec.key_prefix, dict(rec.tags), list(rec.locked_tags),
                 naive_utc(rec.created_at or datetime.now(UTC)), rec.end_user],
            )  # fmt: skip

    def list_keys(self) -> list[KeyRecord]:
        rows = self._all("SELECT id, name, key_hash, key_prefix, tags, locked_tags, created_at, revoked_at, end_user "
                         "FROM keys ORDER BY created_at, id")  # fmt: skip
        return [
            KeyRecord(
                id=r[0], name=r[1], key_hash=r[2], key_prefix=r[3], tags=dict(r[4] or {}),
                locked_tags=tuple(r[5] or ()), created_at=aware(r[6]), revoked_at=aware(r[7]), end_user=r[8],
            )  # fmt: skip
            for r in rows
        ]

    def revoke_key(self, key_id: str) -> bool:
        with self.connect() as conn:
            found = conn.execute("SELECT revoked_at FROM keys WHERE id = ?", [key_id]).fetchone()
            if found is None:
                return False
            if found[0] is None:
                conn.execute("UPDATE keys SET revoked_at = ? WHERE id = ?", [naive_utc(datetime.now(UTC)), key_id])
            return True

    # --- definitions set at run time (budgets, limits, rules) ------------------------------------
    @staticmethod
    def _table(kind: str) -> tuple[str, str, list[str]]:
        if kind not in DEFINITION_KINDS:
            raise ValueError(f"unknown definition kind {kind!r}")
        return ("budgets", "name = ?", []) if kind == "budget" else ("policies", "kind = ? AND name = ?", [kind])

    def put_definition(self, kind: str, name: str, definition: Mapping[str, Any], by: str | None) -> None:
        table, _, key = self._table(kind)
        now = naive_utc(datetime.now(UTC))
        values = [*key, name, orjson.dumps(dict(definition)).decode(), now, by]
        marks = ", ".join("?" for _ in values)
        with self.connect() as conn:
            conn.execute(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", values)

    def delete_definition(self, kind: str, name: str) -> bool:
        table, where, key = self._table(kind)
        with self.connect() as conn:
            found = conn.execute(f"SELECT 1 FROM {table} WHERE {where}", [*key, name]).fetchone()
            conn.execute(f"DELETE FROM {table} WHERE {where}", [*key, name])
        return found is not None

    def definitions(self, kind: str) -> list[dict[str, Any]]:
        table, _, key = self._table(kind)
        where = "kind = ?" if key else "TRUE"
        rows = self._all(f"SELECT definition FROM {table} WHERE {where} ORDER BY name", key)
        return [orjson.loads(r[0]) for r in rows]

    # --- alerts and approvals --------------------------------------------------------------------
    def fired_alerts(self, since: datetime) -> set[AlertKey]:
        rows = self._all("SELECT kind, budget, period_start, threshold FROM alerts WHERE period_start >= ?",
                         [naive_utc(since)])  # fmt: skip
        return {(k, b, aware(p).isoformat(), t) for k, b, p, t in rows}  # type: ignore[union-attr]

    def alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._all("SELECT id, kind, budget, period_start, threshold, message, fired_at FROM alerts "
                         "ORDER BY fired_at DESC LIMIT ?", [limit])  # fmt: skip
        return [{"id": r[0], "kind": r[1], "budget": r[2], "period_start": aware(r[3]).isoformat(),  # type: ignore[union-attr]
                 "threshold": r[4], "message": r[5], "fired_at": aware(r[6]).isoformat()} for r in rows]  # type: ignore[union-attr]  # fmt: skip

    def anomalies(self, since: datetime | None, until: datetime | None = None) -> list[dict[str, Any]]:
        where, params = window_filter("kind = 'anomaly'", since, until, "?", column="period_start")
        return anomaly_rows(self._all(f"{ANOMALY_SELECT} WHERE {where} ORDER BY period_start, id", params))

    def large_calls(self, since: datetime, until: datetime, min_tokens: int,
                    scope: Mapping[str, str] | None = None) -> list[tuple[Any, ...]]:  # fmt: skip
        where, params = _query_where(ReportQuery.build(by=[], since=since, until=until, where=scope))
        sql = f"{CALLS_SELECT} WHERE {where} AND status = 'ok' AND input_tokens + output_tokens >= ?"
        return [tuple(r) for r in self._all(sql + " ORDER BY ts LIMIT 10000", [*params, min_tokens])]

    def approvals(self) -> list[Approval]:
        rows = self._all("SELECT id, status, key_id, reason, model, message, requested_at, decided_at, decided_by, "
                         "until, max_usd FROM approvals ORDER BY requested_at DESC")  # fmt: skip
        return [Approval(r[0], r[1], r[2], r[3], r[4], r[5], aware(r[6]), aware(r[7]), r[8], aware(r[9]),  # type: ignore[arg-type]
                         None if r[10] is None else Decimal(r[10])) for r in rows]  # fmt: skip

    def decide_approval(self, approval_id: str, status: ApprovalStatus, *, by: str, at: datetime,
                        until: datetime | None, max_usd: Decimal | None) -> None:  # fmt: skip
        with self.connect() as conn:
            conn.execute(
                "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, until = ?, max_usd = ? WHERE id = ?",
                [status, naive_utc(at), by, naive_utc(until), max_usd, approval_id],
            )

    # --- business metrics (tokenops import metrics) -----------------------------------------------
    def put_business_metrics(self, rows: Sequence[MetricRow], source: str | None = None) -> MetricsWritten:
        if not rows:
            return MetricsWritten(0, 0)
        ids = [r.id for r in rows]
        now = naive_utc(datetime.now(UTC))
        with self.connect() as conn:
            session = _Session(conn, self.path.parent)
            with session.transaction():
                held = conn.execute("SELECT count(*) FROM business_metrics WHERE list_contains(?, id)",
                                    [ids]).fetchone()  # fmt: skip
                last = list({r.id: r for r in rows}.values())  # a value given twice: the later one, as a re-import
                # one statement over column lists: executemany runs a statement per row (~500 rows/s)
                conn.execute(
                    "INSERT INTO business_metrics (id, day, metric, tags, value, source, imported_at) "
                    "SELECT id, day, metric, map(tk, tv), value::DECIMAL(38, 12), ?, ? FROM (SELECT "
                    "unnest(?::VARCHAR[]) AS id, unnest(?::DATE[]) AS day, unnest(?::VARCHAR[]) AS metric, "
                    "unnest(?::VARCHAR[][]) AS tk, unnest(?::VARCHAR[][]) AS tv, unnest(?::VARCHAR[]) AS value) "
                    "ON CONFLICT (id) DO UPDATE SET value = excluded.value, source = excluded.source, "
                    "imported_at = excluded.imported_at",
                    [source, now, [r.id for r in last], [r.day for r in last], [r.metric for r in last],
                     [list(r.tags) for r in last], [list(r.tags.values()) for r in last], [str(r.value) for r in last]],
                )
        replaced = int(held[0]) if held else 0
        return MetricsWritten(len(set(ids)) - replaced, replaced)

    def business_metrics(self, metric: str | None = None, since: date | None = None,
                         until: date | None = None) -> list[MetricRow]:  # fmt: skip
        conds: list[str] = ["TRUE"]
        params: list[Any] = []
        for cond, value in (("metric = ?", metric), ("day >= ?", since), ("day < ?", until)):
            if value is not None:
                conds.append(cond)
                params.append(value)
        rows = self._all(f"SELECT day, metric, value, tags FROM business_metrics WHERE {' AND '.join(conds)} "
                         "ORDER BY day, metric, id", params)  # fmt: skip
        return [MetricRow(d, m, Decimal(v), dict(t or {})) for d, m, v, t in rows]

    # --- transfer (tokenops ledger migrate) -------------------------------------------------------
    def export_rows(self, table: str, after: tuple[Any, ...] | None, limit: int) -> list[dict[str, Any]]:
        """A page of whole rows of ``table`` (see :data:`tokenops.ledger.base.TABLES`), in key order."""
        t = TABLES[table]
        where, params = keyset(t, after, "?")
        # maps and lists come out of DuckDB into Python several times slower than their JSON text
        cols = ", ".join(f'to_json("{c}")::VARCHAR' if c in _NESTED else f'"{c}"' for c in t.columns)
        first = t.key[0]
        beyond, past = ("TRUE", []) if after is None else (f"{first} > ?", [after[0]])
        with self.connect() as conn:
            # where the page ends, by the key's first column alone (sorting whole rows to keep a few, or testing
            # the whole key on each row, is several times slower): the page is the rest of the rows whose first
            # column is the one of ``after`` (ties), then ``limit`` more values of it and their ties
            last = conn.execute(f"SELECT {first} FROM {table} WHERE {beyond} ORDER BY {first} LIMIT 1 OFFSET ?",
                                [*past, limit - 1]).fetchone()  # fmt: skip
            upto, bound = ("TRUE", []) if last is None else (f"{first} <= ?", [last[0]])
            rows = conn.execute(f"SELECT {cols} FROM {table} WHERE {where} AND {upto} ORDER BY {', '.join(t.key)}",
                                [*params, *bound]).fetchall()  # fmt: skip
        nested = [i for i, c in enumerate(t.columns) if c in _NESTED]
        out = []
        for r in rows:
            row = dict(zip(t.columns, r, strict=True))
            for i in nested:
                if r[i] is not None:
                    row[t.columns[i]] = orjson.loads(r[i])
            out.append(row)
        return out

    def import_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write rows exported from another ledger; returns how many were new. Rows already here are skipped
        (immutable tables) or brought up to date (mutable ones)."""
        t = TABLES[table]
        if not rows:
            return 0
        with self.connect() as conn:
            session = _Session(conn, self.path.parent)
            with session.transaction():
                if table == "events":
                    return session.insert_rows(rows)
                before = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
                cols = ", ".join(f'"{c}"' for c in t.columns)
                update = ", ".join(f'"{c}" = excluded."{c}"' for c in t.columns if c not in t.key)
                conflict = f"({', '.join(t.key)}) DO UPDATE SET {update}" if t.mutable else "DO NOTHING"
                conn.executemany(
                    f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' for _ in t.columns)}) ON CONFLICT {conflict}",
                    [[r[c] for c in t.columns] for r in rows],
                )
                after = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        return int(after - before)

    def totals(self) -> Totals:
        """Rows per table and the events' cost and tokens (what ``tokenops ledger migrate`` verifies)."""
        with self.connect() as conn:
            rows = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # type: ignore[index]
            sums = conn.execute("SELECT coalesce(sum(cost_usd), 0)::DECIMAL(38,12), "
                                + ", ".join(f"coalesce(sum({c}), 0)" for c in USAGE_COLUMNS) + " FROM events").fetchone()  # fmt: skip
        assert sums is not None
        return Totals(rows, Decimal(sums[0]), {c: int(v) for c, v in zip(USAGE_COLUMNS, sums[1:], strict=True)})
