"""The PostgreSQL ledger: one server for several gateways and long retention (psycopg 3, a small pool).

The same :class:`~tokenops.ledger.base.Ledger` as the DuckDB file, with the same answers; what differs is how
the data is kept:

* **Connections.** A :class:`psycopg_pool.ConnectionPool` (1 to 4 connections, autocommit, explicit
  transactions), opened on first use after one direct connection has checked the URL and applied pending
  migrations. A URL that points at nothing is a :class:`~tokenops.errors.LedgerError` within a few seconds.
  The password of the URL never appears in a message (:func:`safe_url`).
* **Migrations** (:data:`tokenops.ledger.migrations.POSTGRESQL`) run under an advisory lock, each in its own
  transaction with its record, so processes starting together take turns and one killed half-way leaves
  nothing half-done.
* **Events** are partitioned by month: the partition of a month is made when a batch first holds one (the
  DEFAULT partition takes what no partition covers: a month whose partition a user without the rights could
  not make, or a timestamp outside 2000-2199). A batch is COPYed into a temporary table and inserted with
  ``ON CONFLICT DO NOTHING`` on (request_id, ts): a re-drained event is skipped.
* **The hourly rollup** (``events_hourly``) is updated in the same statement from the rows the insert
  returned, so only new events count; spend reports read it where it answers exactly (see
  :mod:`tokenops.ledger.postgres_sql`, which holds the SQL of the reads).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from tokenops.errors import LedgerBusy, LedgerError
from tokenops.keys import KeyRecord
from tokenops.ledger import identity, migrations
from tokenops.ledger import postgres_sql as dialect
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
    event_values,
    focus_group,
    focus_sql,
    keyset,
    naive_utc,
    parse_ts,
    price_row_insert,
    price_row_record,
    price_row_values,
    row_event,
    window_filter,
)
from tokenops.ledger.business_metrics import MetricRow, MetricsWritten
from tokenops.ledger.events import SpendEvent
from tokenops.ledger.postgres_sql import HOURLY_SUMS, ROLLUP_DIMS, C
from tokenops.ledger.records import AlertKey, Approval, ApprovalStatus
from tokenops.ledger.reports import (
    ERROR_SQL,
    MAX_BUCKETS,
    RATE_LIMITED_SQL,
    UNPRICED_SQL,
    ActivityRow,
    ReportQuery,
    SpendReport,
    UnpricedModel,
    activity_from_rows,
    check_bucket,
    report_from_rows,
)
from tokenops.pricing.model import PriceRow
from tokenops.scopes import Scope

log = logging.getLogger("tokenops.ledger")

# the database will not take this data (as opposed to: the database is not working). DataError is SQLSTATE
# class 22 (a value out of range, text that is not valid, a NUL character...), IntegrityError class 23.
REFUSED: tuple[type[BaseException], ...] = (psycopg.DataError, psycopg.IntegrityError)
MIGRATION_LOCK = 0x746F6B656E6F7073  # "tokenops": the advisory lock held while migrations run
PARTITION_LOCK = MIGRATION_LOCK + 1  # held while a month's partition is made
PARTITION_YEARS = (2000, 2200)  # months outside get no partition of their own: the DEFAULT one keeps them
PARTITION_LOCK_TIMEOUT = "5s"  # how long making a partition may wait for the events table
REPORT_WORK_MEM = "32MB"  # per grouping of a spend report's query (PostgreSQL's default is 4MB)
MAX_KEY_BYTES = 1000  # a request id longer than this cannot be an index key: refused like bad data
_COLS = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
_STAGING_TYPES = {
    "ts": "TIMESTAMP", "stream": "BOOLEAN", **{c: "BIGINT" for c in USAGE_COLUMNS}, "usage_estimated": "BOOLEAN",
    "cost_usd": "NUMERIC(38,12)", "cost_avoided_usd": "NUMERIC(38,12)", "prefix_tokens": "BIGINT",
    "max_output": "BIGINT", "tags": "TEXT", "missing_tags": "TEXT[]", "http_status": "INTEGER",
    "latency_ms": "DOUBLE PRECISION", "ttft_ms": "DOUBLE PRECISION", "recorded_at": "TIMESTAMP",
}  # fmt: skip; every other column is TEXT
_STAGING = "tokenops_staging"
_COPY_TYPES = [{"TIMESTAMP": "timestamp", "BOOLEAN": "bool", "BIGINT": "int8", "NUMERIC(38,12)": "numeric",
                "TEXT[]": "text[]", "INTEGER": "int4", "DOUBLE PRECISION": "float8"}.get(_STAGING_TYPES.get(c, ""), "text")
               for c in EVENT_COLUMNS]  # fmt: skip


def safe_url(url: str) -> str:
    """The URL without its password (``postgresql://user:***@host/db``), for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = re.sub(r"^([^@/]*?):[^@/]*@", r"\1:***@", parts.netloc)
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


class _Session:
    """The drain's primitives on one pooled connection (see :class:`tokenops.ledger.base.Session`)."""

    def __init__(self, ledger: PostgresLedger, conn: psycopg.Connection[Any]):
        self.ledger = ledger
        self.conn = conn

    def progress(self) -> dict[str, int]:
        return dict(self.conn.execute('SELECT segment, "offset" FROM spool_progress').fetchall())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    @contextlib.contextmanager
    def probe(self) -> Iterator[None]:
        with self.conn.transaction(force_rollback=True):
            yield

    def known_price_rows(self, ids: list[str]) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT id FROM price_rows WHERE id = ANY(%s)", [ids]).fetchall()}

    def record_price_rows(self, rows: Iterable[PriceRow]) -> None:
        by_id = {r.id: r for r in rows}
        now = datetime.now(UTC).replace(tzinfo=None)
        for row in sorted(by_id.values(), key=lambda r: r.id):  # one order for every process: no deadlock
            self.conn.execute(price_row_insert("%s"), price_row_values(price_row_record(row), now))

    def insert_events(self, events: Sequence[SpendEvent]) -> int:
        if not events:
            return 0
        now = datetime.now(UTC).replace(tzinfo=None)
        return self.insert_rows([event_values(e, now) for e in events])

    def insert_lines(self, lines: Sequence[EventLine]) -> int:
        return self.insert_events([e.event() for e in lines])

    def insert_rows(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """COPY event rows into a temporary table, insert those the ledger lacks and add them to the rollup, in
        one statement: the rollup counts exactly the rows this insert wrote."""
        if not rows:
            return 0
        for r in rows:
            _check_key("request_id", r["request_id"])
            _check_key("approval_id", r["approval_id"])
        self.conn.execute(f"DELETE FROM {_STAGING}")  # emptied at each commit; this is for a second batch
        self.ledger._ensure_partitions(self.conn, {(r["ts"].year, r["ts"].month) for r in rows})
        with self.conn.cursor() as cur:
            with cur.copy(f"COPY {_STAGING} ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_COPY_TYPES)  # binary: a third faster than text to encode
                for r in rows:
                    tags = r["tags"]
                    copy.write_row([orjson.dumps(tags).decode() if c == "tags" and tags is not None else r[c]
                                    for c in EVENT_COLUMNS])  # fmt: skip
            select = ", ".join("tags::jsonb" if c == "tags" else f'"{c}"' for c in EVENT_COLUMNS)
            dims = ", ".join(ROLLUP_DIMS)
            sums = ("count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
                    "coalesce(sum(cost_usd), 0), count(*) FILTER (WHERE cost_usd IS NULL)")  # fmt: skip
            cur.execute(f"""
                WITH ins AS (
                    INSERT INTO events ({_COLS})
                    SELECT DISTINCT ON (request_id) {select} FROM {_STAGING} ORDER BY request_id, ts
                    ON CONFLICT DO NOTHING
                    RETURNING ts, {dims}, input_tokens, output_tokens, cost_usd
                ), hourly AS (
                    INSERT INTO events_hourly AS h (hour, dims, {dims}, {", ".join(HOURLY_SUMS)})
                    SELECT date_trunc('hour', ts), sha256(convert_to(row({dims})::text, 'UTF8')), {dims}, {sums}
                    FROM ins GROUP BY date_trunc('hour', ts), {dims} ORDER BY 1, 2
                    ON CONFLICT (hour, dims) DO UPDATE SET
                    {", ".join(f"{s} = h.{s} + excluded.{s}" for s in HOURLY_SUMS)}
                )
                SELECT count(*) FROM ins
                """)  # fmt: skip
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def apply_record(self, r: dict[str, Any]) -> None:
        kind = r.get("record")
        _check_key("id", r.get("id"))
        if kind == "alert":
            self.conn.execute(
                "INSERT INTO alerts VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [r["id"], r["kind"], r["budget"], parse_ts(r["period_start"]), r.get("threshold"), r["message"],
                 parse_ts(r["fired_at"]), orjson.dumps(r.get("details") or {}).decode()],
            )  # fmt: skip
        elif kind == "approval":
            self.conn.execute(
                "INSERT INTO approvals (id, status, key_id, reason, model, message, requested_at) "
                "VALUES (%s, 'pending', %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [r["id"], r.get("key_id"), r["reason"], r.get("model"), r.get("message"), parse_ts(r["requested_at"])],
            )
        elif kind == "price_row":
            self.conn.execute(price_row_insert("%s"), price_row_values(r, datetime.now(UTC).replace(tzinfo=None)))
        else:
            raise ValueError(f"unknown spool record {kind!r}")

    def set_progress(self, segment: str, offset: int) -> None:
        self.conn.execute(
            'INSERT INTO spool_progress VALUES (%s, %s, %s) ON CONFLICT (segment) DO UPDATE SET "offset" = '
            "excluded.\"offset\", updated_at = excluded.updated_at", [segment, offset, naive_utc(datetime.now(UTC))])  # fmt: skip

    def forget_progress(self, segments: list[str]) -> None:
        self.conn.execute("DELETE FROM spool_progress WHERE segment = ANY(%s)", [segments])


class PostgresLedger:
    """Ledger on a PostgreSQL database. Thread-safe; any number of processes may share the database.

    >>> ledger = PostgresLedger("postgresql://tokenops@db.internal:5432/tokenops")  # nothing is opened yet
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0, pool_timeout: float = 15.0, max_size: int = 4):
        if not url.startswith(("postgresql://", "postgres://")):
            raise LedgerError(f"not a PostgreSQL URL: {safe_url(url)}")
        self.url = url  # as configured (a writer process opens the ledger again from it)
        self.safe_url = safe_url(url)
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout
        self.max_size = max_size
        self._pool: ConnectionPool[Any] | None = None
        self._lock = threading.Lock()
        self._partitions: set[str] = set()  # monthly partitions known to exist
        self._partitioning = True  # False once the database said we may not make partitions
        self._kept_default: set[str] = set()  # months already in the default partition: they stay there

    def __repr__(self) -> str:
        return f"PostgresLedger({self.safe_url!r})"

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connections ----------------------------------------------------------------------------
    def _connect_args(self, timeout: float) -> dict[str, Any]:
        return {"autocommit": True, "connect_timeout": max(2, round(timeout)), "application_name": "tokenops"}

    def _open(self, timeout: float) -> ConnectionPool[Any]:
        """The pool, made on first use after one direct connection has checked the URL and migrated."""
        with self._lock:
            if self._pool is not None:
                return self._pool
            self._direct(self._migrate, min(timeout, self.connect_timeout))
            pool: ConnectionPool[Any] = ConnectionPool(
                self.url, kwargs=self._connect_args(self.connect_timeout), min_size=1, max_size=self.max_size,
                open=False, timeout=self.pool_timeout, name="tokenops-ledger", configure=_configure,
                check=ConnectionPool.check_connection,
            )  # fmt: skip
            pool.open(wait=False)
            self._pool = pool
            return pool

    def _direct(self, work: Any, timeout: float) -> Any:
        try:
            with psycopg.connect(self.url, **self._connect_args(timeout)) as conn:
                _configure(conn)
                return work(conn)
        except psycopg.OperationalError as exc:
            raise LedgerError(f"cannot connect to ledger {self.safe_url}: {self._message(exc)}") from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise self._no_rights(exc) from None
        except psycopg.Error as exc:
            raise LedgerError(f"ledger {self.safe_url}: {self._message(exc)}") from None

    def _message(self, exc: BaseException) -> str:
        text = _one_line(exc)
        password = urlsplit(self.url).password
        return text.replace(password, "***") if password else text

    def _no_rights(self, exc: BaseException) -> LedgerError:
        return LedgerError(
            f"ledger {self.safe_url}: this user may not create the ledger's tables ({self._message(exc)}); have a "
            f"user who may run: tokenops ledger migrate --to {self.safe_url}"
        )

    @contextlib.contextmanager
    def connect(self, *, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit: use ``conn.transaction()``), migrated; database errors become
        :class:`~tokenops.errors.LedgerError`."""
        wait = max(0.5, self.pool_timeout if timeout is None else timeout)
        pool = self._open(wait)
        try:
            with pool.connection(timeout=wait) as conn:
                yield conn
        except PoolTimeout:
            stats = pool.get_stats()
            if stats.get("pool_size", 0) >= self.max_size:
                raise LedgerBusy(f"ledger {self.safe_url} is busy: all {self.max_size} connections in use for "
                                 f"{wait:g}s") from None  # fmt: skip
            raise LedgerError(f"cannot connect to ledger {self.safe_url} within {wait:g}s") from None
        except psycopg.Error as exc:
            raise LedgerError(f"ledger {self.safe_url}: {self._message(exc)}") from exc

    def close(self) -> None:
        """Close the pool's connections (a later call opens them again)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.connect() as conn:
            row = conn.execute(sql, list(params) or None).fetchone()
        return None if row is None else row[0]

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.connect() as conn:
            return conn.execute(sql, list(params) or None).fetchall()

    # --- schema ---------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply pending schema migrations now (as a user who may create tables); returns the names applied."""
        return list(self._direct(self._migrate, self.connect_timeout))

    def _migrate(self, conn: psycopg.Connection[Any]) -> list[str]:
        steps = migrations.POSTGRESQL
        done = _applied(conn)
        if done is not None:
            migrations.check_known(done, steps, self.safe_url)
            if all(name in done for name, _ in steps):
                return []  # the usual case: no lock, no DDL (a user without CREATE rights gets this far)
        conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")  # fmt: skip
            done = _applied(conn) or set()
            migrations.check_known(done, steps, self.safe_url)
            applied = []
            for name, sql in steps:
                if name in done:
                    continue
                with conn.transaction():  # a migration killed half-way is rolled back whole
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", [name])
                applied.append(name)
                log.info("ledger %s: applied migration %s", self.safe_url, name)
            return applied
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])

    def _ensure_partitions(self, conn: psycopg.Connection[Any], months: set[tuple[int, int]]) -> None:
        """Make the monthly partitions a batch needs (and the month after its last, so that the turn of a month
        does not wait for DDL). Within the caller's transaction, under an advisory lock."""
        if not self._partitioning:
            return
        wanted = {m for m in months if PARTITION_YEARS[0] <= m[0] < PARTITION_YEARS[1]}
        if wanted:
            y, m = max(wanted)
            wanted.add((y + m // 12, m % 12 + 1))
            wanted = {m for m in wanted if m[0] < PARTITION_YEARS[1]}
        if not wanted or all(_partition_name(m) in self._partitions for m in wanted):
            return
        self._partitions |= _partitions(conn)
        missing = sorted(m for m in wanted if _partition_name(m) not in self._partitions | self._kept_default)
        if not missing:
            return
        try:
            with conn.transaction():  # a savepoint: a refusal leaves the caller's transaction usable
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [PARTITION_LOCK])
                have = _partitions(conn)  # again, now that no one else is making one
                # making a partition locks the events table: waiting behind a long report would stop every
                # reader and writer queued behind us, so give up after a while (the next round tries again)
                previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
                conn.execute("SELECT set_config('lock_timeout', %s, true)", [PARTITION_LOCK_TIMEOUT])
                for y, m in missing:
                    name = _partition_name((y, m))
                    lo, hi = f"{y:04d}-{m:02d}-01", f"{y + m // 12:04d}-{m % 12 + 1:02d}-01"
                    if name in have:
                        continue
                    if conn.execute("SELECT 1 FROM events_default WHERE ts >= %s AND ts < %s LIMIT 1",
                                    [lo, hi]).fetchone():  # fmt: skip
                        self._kept_default.add(name)  # that month already lives in the default partition
                        continue
                    conn.execute(f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ('{lo}') TO ('{hi}')")
                conn.execute("SELECT set_config('lock_timeout', %s, true)", [previous[0] if previous else "0"])
        except psycopg.errors.LockNotAvailable:
            raise LedgerBusy(f"ledger {self.safe_url}: making the events partition of a new month waits for a "
                             "long query; the next drain tries again") from None  # fmt: skip
        except psycopg.errors.InsufficientPrivilege as exc:
            self._partitioning = False
            log.warning("ledger %s: cannot make monthly partitions (%s); events go to the default partition "
                        "until the tables' owner runs tokenops ledger migrate --to URL", self.safe_url,
                        self._message(exc))  # fmt: skip

    # --- meta -----------------------------------------------------------------------------------
    def ping(self, timeout: float = 0.5) -> None:
        with self.connect(timeout=timeout) as conn:
            conn.execute("SELECT 1").fetchone()

    def identity_secret(self) -> str:
        """This ledger's random secret (made on first use; see :mod:`tokenops.ledger.identity`)."""
        with self.connect() as conn:
            conn.execute("INSERT INTO ledger_meta VALUES ('identity_secret', %s) ON CONFLICT DO NOTHING",
                         [identity.new_secret()])  # fmt: skip
            row = conn.execute("SELECT value FROM ledger_meta WHERE name = 'identity_secret'").fetchone()
        assert row is not None
        return str(row[0])

    # --- writing events -------------------------------------------------------------------------
    def append(self, events: Sequence[SpendEvent], price_rows: Iterable[PriceRow] = ()) -> int:
        """Insert events directly (imports, backfills); idempotent by request id."""
        with self.connect() as conn:
            session = _Session(self, conn)
            with session.transaction():
                session.record_price_rows(price_rows)
                return session.insert_events(events)

    def drain(self, spool_dir: Path, price_rows: PriceRows | None = None, *, timeout: float | None = None,
              quarantine: bool = True) -> int:  # fmt: skip
        """Move everything in the spool into the ledger (see :func:`tokenops.ledger.base.drain_spool`)."""
        if not spoolmod.segments(spool_dir):
            return 0
        with self.connect(timeout=timeout) as conn:
            return drain_spool(_Session(self, conn), spool_dir, price_rows, REFUSED, quarantine)

    # --- reading events -------------------------------------------------------------------------
    def get_event(self, request_id: str) -> SpendEvent | None:
        with self.connect() as conn:
            row = conn.execute(f"SELECT {_COLS} FROM events WHERE request_id = %s LIMIT 1", [request_id]).fetchone()
        return None if row is None else row_event(row)

    def event_by_upstream_id(self, upstream_id: str, route: str) -> SpendEvent | None:
        with self.connect() as conn:
            row = conn.execute(f"SELECT {_COLS} FROM events WHERE upstream_request_id = %s AND route = %s "
                               "ORDER BY ts LIMIT 1", [upstream_id, route]).fetchone()  # fmt: skip
        return None if row is None else row_event(row)

    def usage_rows(self, since: datetime | None, until: datetime | None) -> list[tuple[Any, ...]]:
        where, params = window_filter("status = 'ok'", since, until, "%s")
        cols = ", ".join(f'"{c}"' for c in USAGE_ROW_COLUMNS)
        with self.connect() as conn:
            return [tuple(r) for r in conn.execute(f"SELECT {cols} FROM events WHERE {where} ORDER BY ts",
                                                   params).fetchall()]  # fmt: skip

    def routed_events(self, since: datetime | None, until: datetime | None) -> list[SpendEvent]:
        where, params = window_filter("(route_reason IS NOT NULL OR cache = 'hit')", since, until, "%s")
        with self.connect() as conn:
            rows = conn.execute(f"SELECT {_COLS} FROM events WHERE {where} ORDER BY ts", params).fetchall()
        return [row_event(r) for r in rows]

    def focus_groups(self, since: datetime | None, until: datetime | None, bucket_seconds: int,
                     thresholds: Sequence[int]) -> Iterator[FocusGroup]:  # fmt: skip
        where, params = window_filter("TRUE", since, until, "%s")
        sql = focus_sql(where, "extract(epoch FROM ts)", bucket_seconds, thresholds)
        with self.connect() as conn, conn.transaction(), conn.cursor(name="tokenops_focus") as cur:
            cur.itersize = 10_000  # a server-side cursor: a month of charges is never held in memory at once
            cur.execute(sql, params)
            yield from (focus_group(r) for r in cur)

    def count_events(self) -> int:
        return int(self._one("SELECT count(*) FROM events"))

    def spend_report(self, q: ReportQuery) -> SpendReport:
        """Spend grouped and filtered as asked: from the hourly rollup where it can answer exactly, else from
        the events (the same rows either way)."""
        rows = self._report_from_rollup(q) if dialect.rollup_can_answer(q) else None
        return report_from_rows(q, rows if rows is not None else self._report_from_events(q))

    def _report_from_events(self, q: ReportQuery) -> list[Any]:
        return self._report_rows(*dialect.events_report(q))

    def _report_rows(self, sql: str, params: list[Any]) -> list[Any]:
        with self.connect() as conn, conn.transaction():
            # grouping in memory: with the default 4 MB a year's report sorts on disk, twice as slow
            conn.execute(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'")
            return conn.execute(sql, params).fetchall()

    def _report_from_rollup(self, q: ReportQuery) -> list[Any] | None:
        """The rollup's answer; None when an hour of it would straddle two time buckets of the report's zone (or
        the window is shorter than an hour)."""
        query = dialect.rollup_report(q)
        if query is None:
            return None
        rows = self._report_rows(*query)
        if any(r[-1] is False for r in rows):
            return None
        return [r[:-1] for r in rows]


    def activity(self, q: ReportQuery, bucket_seconds: int) -> list[ActivityRow]:
        n = check_bucket(bucket_seconds)
        dims = [dialect.dimension_sql(d, q.timezone) for d in q.by]
        where, params = dialect.query_where(q)
        select_dims = "".join(f"{d}, " for d in dims)
        group = ", ".join(str(i + 1) for i in range(len(dims) + 1))
        sql = (
            f"SELECT (floor(extract(epoch FROM ts) / {n}))::bigint * {n}, {select_dims} count(*), "
            f"count(*) FILTER (WHERE {ERROR_SQL}), count(*) FILTER (WHERE {RATE_LIMITED_SQL}), "
            "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(cost_usd), 0)::NUMERIC(38,12), "
            "coalesce(sum(latency_ms) FILTER (WHERE status = 'ok'), 0), "
            f"count(latency_ms) FILTER (WHERE status = 'ok') FROM events WHERE {where} "
            f"GROUP BY {group} ORDER BY 1 LIMIT {MAX_BUCKETS}"
        )
        return activity_from_rows(q, self._report_rows(sql, params))

    def unpriced_models(self) -> list[UnpricedModel]:
        rows = self._all(
            "SELECT provider, model_used, count(*), min(ts), max(ts), sum(input_tokens), sum(output_tokens) "
            f"FROM events WHERE {UNPRICED_SQL} GROUP BY 1, 2 ORDER BY 3 DESC, provider{C}, model_used{C}"
        )
        return [UnpricedModel(p, m, int(n), aware(a), aware(b), int(i), int(o))  # type: ignore[arg-type]
                for p, m, n, a, b, i, o in rows]  # fmt: skip

    def spent(self, scope: Scope, start: datetime, end: datetime, unit: str) -> Decimal:
        where, params = dialect.scope_where(scope)
        measure = "coalesce(sum(cost_usd), 0)" if unit == "usd" else "coalesce(sum(input_tokens + output_tokens), 0)"
        value = self._one(f"SELECT {measure} FROM events WHERE ts >= %s AND ts < %s AND {where}",
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
                "VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s)",
                [rec.id, rec.name, rec.key_hash, rec.key_prefix, orjson.dumps(dict(rec.tags)).decode(),
                 list(rec.locked_tags), naive_utc(rec.created_at or datetime.now(UTC)), rec.end_user],
            )  # fmt: skip

    def list_keys(self) -> list[KeyRecord]:
        rows = self._all("SELECT id, name, key_hash, key_prefix, tags, locked_tags, created_at, revoked_at, end_user "
                         f"FROM keys ORDER BY created_at, id{C}")  # fmt: skip
        return [
            KeyRecord(
                id=r[0], name=r[1], key_hash=r[2], key_prefix=r[3], tags=dict(r[4] or {}),
                locked_tags=tuple(r[5] or ()), created_at=aware(r[6]), revoked_at=aware(r[7]), end_user=r[8],
            )  # fmt: skip
            for r in rows
        ]

    def revoke_key(self, key_id: str) -> bool:
        with self.connect() as conn:
            conn.execute("UPDATE keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                         [naive_utc(datetime.now(UTC)), key_id])  # fmt: skip
            return conn.execute("SELECT 1 FROM keys WHERE id = %s", [key_id]).fetchone() is not None

    # --- definitions set at run time (budgets, limits, rules) ------------------------------------
    @staticmethod
    def _table(kind: str) -> tuple[str, list[str], list[str]]:
        if kind not in DEFINITION_KINDS:
            raise ValueError(f"unknown definition kind {kind!r}")
        return ("budgets", ["name"], []) if kind == "budget" else ("policies", ["kind", "name"], [kind])

    def put_definition(self, kind: str, name: str, definition: Mapping[str, Any], by: str | None) -> None:
        table, key, values = self._table(kind)
        row = [*values, name, orjson.dumps(dict(definition)).decode(), naive_utc(datetime.now(UTC)), by]
        with self.connect() as conn:
            conn.execute(
                f"INSERT INTO {table} VALUES ({', '.join('%s' for _ in row)}) ON CONFLICT ({', '.join(key)}) DO UPDATE "
                "SET definition = excluded.definition, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                row,
            )  # fmt: skip

    def delete_definition(self, kind: str, name: str) -> bool:
        table, key, values = self._table(kind)
        where = " AND ".join(f"{k} = %s" for k in key)
        with self.connect() as conn:
            return conn.execute(f"DELETE FROM {table} WHERE {where} RETURNING 1", [*values, name]).fetchone() is not None

    def definitions(self, kind: str) -> list[dict[str, Any]]:
        table, _, values = self._table(kind)
        where = "kind = %s" if values else "TRUE"
        rows = self._all(f"SELECT definition FROM {table} WHERE {where} ORDER BY name{C}", values)
        return [orjson.loads(r[0]) for r in rows]

    # --- alerts and approvals --------------------------------------------------------------------
    def fired_alerts(self, since: datetime) -> set[AlertKey]:
        rows = self._all("SELECT kind, budget, period_start, threshold FROM alerts WHERE period_start >= %s",
                         [naive_utc(since)])  # fmt: skip
        return {(k, b, aware(p).isoformat(), t) for k, b, p, t in rows}  # type: ignore[union-attr]

    def alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._all("SELECT id, kind, budget, period_start, threshold, message, fired_at FROM alerts "
                         "ORDER BY fired_at DESC LIMIT %s", [limit])  # fmt: skip
        return [{"id": r[0], "kind": r[1], "budget": r[2], "period_start": aware(r[3]).isoformat(),  # type: ignore[union-attr]
                 "threshold": r[4], "message": r[5], "fired_at": aware(r[6]).isoformat()} for r in rows]  # type: ignore[union-attr]  # fmt: skip

    def anomalies(self, since: datetime | None, until: datetime | None = None) -> list[dict[str, Any]]:
        where, params = window_filter("kind = 'anomaly'", since, until, "%s", column="period_start")
        return anomaly_rows(self._all(f"{ANOMALY_SELECT} WHERE {where} ORDER BY period_start, id", params))

    def large_calls(self, since: datetime, until: datetime, min_tokens: int,
                    scope: Mapping[str, str] | None = None) -> list[tuple[Any, ...]]:  # fmt: skip
        where, params = dialect.query_where(ReportQuery.build(by=[], since=since, until=until, where=scope))
        sql = f"{CALLS_SELECT} WHERE {where} AND status = 'ok' AND input_tokens + output_tokens >= %s"
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
                "UPDATE approvals SET status = %s, decided_at = %s, decided_by = %s, until = %s, max_usd = %s "
                "WHERE id = %s",
                [status, naive_utc(at), by, naive_utc(until), max_usd, approval_id],
            )

    # --- business metrics (tokenops import metrics) -----------------------------------------------
    def put_business_metrics(self, rows: Sequence[MetricRow], source: str | None = None) -> MetricsWritten:
        if not rows:
            return MetricsWritten(0, 0)
        ids = sorted({r.id for r in rows})
        now = naive_utc(datetime.now(UTC))
        with self.connect() as conn, conn.transaction():
            held = conn.execute("SELECT count(*) FROM business_metrics WHERE id = ANY(%s)", [ids]).fetchone()
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO business_metrics (id, day, metric, tags, value, source, imported_at) "
                    "VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET value = excluded.value, "
                    "source = excluded.source, imported_at = excluded.imported_at",
                    # in key order: two imports at once lock their rows in one order (no deadlock)
                    [[r.id, r.day, r.metric, orjson.dumps(dict(r.tags)).decode(), r.value, source, now]
                     for r in sorted(rows, key=lambda r: r.id)],
                )  # fmt: skip
        replaced = int(held[0]) if held else 0
        return MetricsWritten(len(ids) - replaced, replaced)

    def business_metrics(self, metric: str | None = None, since: date | None = None,
                         until: date | None = None) -> list[MetricRow]:  # fmt: skip
        conds: list[str] = ["TRUE"]
        params: list[Any] = []
        for cond, value in (("metric = %s", metric), ("day >= %s", since), ("day < %s", until)):
            if value is not None:
                conds.append(cond)
                params.append(value)
        rows = self._all(f"SELECT day, metric, value, tags FROM business_metrics WHERE {' AND '.join(conds)} "
                         f"ORDER BY day, metric{C}, id{C}", params)  # fmt: skip
        return [MetricRow(d, m, Decimal(v), dict(t or {})) for d, m, v, t in rows]

    # --- transfer (tokenops ledger migrate) -------------------------------------------------------
    def export_rows(self, table: str, after: tuple[Any, ...] | None, limit: int) -> list[dict[str, Any]]:
        """A page of whole rows of ``table`` (see :data:`tokenops.ledger.base.TABLES`), in key order."""
        t = TABLES[table]
        where, params = keyset(t, after, "%s", C)
        order = ", ".join(k if k == "ts" else k + C for k in t.key)
        cols = ", ".join(f'"{c}"' for c in t.columns)
        rows = self._all(f"SELECT {cols} FROM {table} WHERE {where} ORDER BY {order} LIMIT %s", [*params, limit])
        return [dict(zip(t.columns, r, strict=True)) for r in rows]

    def import_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write rows exported from another ledger; returns how many were new. Rows already here are skipped
        (immutable tables) or brought up to date (mutable ones)."""
        t = TABLES[table]
        if not rows:
            return 0
        with self.connect() as conn:
            session = _Session(self, conn)
            with session.transaction():
                if table == "events":
                    return session.insert_rows(rows)
                before = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
                cols = ", ".join(f'"{c}"' for c in t.columns)
                update = ", ".join(f'"{c}" = excluded."{c}"' for c in t.columns if c not in t.key)
                conflict = f"({', '.join(t.key)}) DO UPDATE SET {update}" if t.mutable else "DO NOTHING"
                marks = ", ".join("%s::jsonb" if c == "tags" else "%s" for c in t.columns)
                with conn.cursor() as cur:
                    cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT {conflict}",
                                    [[_param(c, r[c]) for c in t.columns] for r in rows])  # fmt: skip
                after = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        return int(after - before)

    def totals(self) -> Totals:
        """Rows per table and the events' cost and tokens (what ``tokenops ledger migrate`` verifies)."""
        with self.connect() as conn:
            rows = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # type: ignore[index]
            sums = conn.execute("SELECT coalesce(sum(cost_usd), 0)::NUMERIC(38,12), "
                                + ", ".join(f"coalesce(sum({c}), 0)" for c in USAGE_COLUMNS) + " FROM events").fetchone()  # fmt: skip
        assert sums is not None
        return Totals(rows, Decimal(sums[0]), {c: int(v) for c, v in zip(USAGE_COLUMNS, sums[1:], strict=True)})


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Each new connection: UTC (timestamps are naive UTC: nothing may depend on the server's zone) and the
    temporary table batches are COPYed into (emptied at each commit)."""
    conn.execute("SET TIME ZONE 'UTC'")
    cols = ", ".join(f'"{c}" {_STAGING_TYPES.get(c, "TEXT")}' for c in EVENT_COLUMNS)
    conn.execute(f"CREATE TEMPORARY TABLE {_STAGING} ({cols}) ON COMMIT DELETE ROWS")


def _applied(conn: psycopg.Connection[Any]) -> set[str] | None:
    """The migrations the database records, or None before the first."""
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
        return None
    return {r[0] for r in conn.execute("SELECT name FROM schema_migrations").fetchall()}


def _partitions(conn: psycopg.Connection[Any]) -> set[str]:
    return {r[0] for r in conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                       "WHERE i.inhparent = 'events'::regclass").fetchall()}  # fmt: skip


def _check_key(name: str, value: str | None) -> None:
    """An index key longer than PostgreSQL can index is refused like bad data (DuckDB has no such limit)."""
    if value is not None and len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise psycopg.DataError(f"{name} of {len(value)} characters is longer than the ledger keeps "
                                f"({MAX_KEY_BYTES} bytes)")  # fmt: skip


def _partition_name(month: tuple[int, int]) -> str:
    return f"events_{month[0]:04d}_{month[1]:02d}"


def _param(column: str, value: Any) -> Any:
    return orjson.dumps(value).decode() if column == "tags" and value is not None else value
