"""Named, ordered schema migrations, recorded in ``schema_migrations``.

A migration is applied once, in order, inside a transaction with its record, so one interrupted half-way is
rolled back and applied whole on the next start. Names never change once released; a new schema change is a
new entry at the end of every dialect's list: each backend has the same names (a test checks it), written in
its own SQL. :data:`DUCKDB` is the embedded ledger's; the PostgreSQL ledger's list lives with its backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DUCKDB: list[tuple[str, str]] = [
    (
        "0001_events",
        """
        CREATE TABLE events (
            request_id VARCHAR NOT NULL,
            ts TIMESTAMP NOT NULL,              -- call start, UTC
            source VARCHAR NOT NULL,
            provider VARCHAR,
            model_requested VARCHAR,
            model_used VARCHAR,
            route VARCHAR,
            stream BOOLEAN,
            input_tokens BIGINT NOT NULL DEFAULT 0,
            cache_read_tokens BIGINT NOT NULL DEFAULT 0,
            cache_write_5m_tokens BIGINT NOT NULL DEFAULT 0,
            cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            reasoning_tokens BIGINT NOT NULL DEFAULT 0,
            usage_estimated BOOLEAN NOT NULL DEFAULT FALSE,
            cost_usd DECIMAL(38, 12),           -- NULL: unpriced (no price known), never a silent 0
            price_row_id VARCHAR,
            key_id VARCHAR,
            end_user VARCHAR,
            team VARCHAR, project VARCHAR, feature VARCHAR, env VARCHAR,
            owner VARCHAR, workload VARCHAR, customer VARCHAR,
            tags MAP(VARCHAR, VARCHAR),
            missing_tags VARCHAR[],
            status VARCHAR NOT NULL,
            http_status INTEGER,
            error_code VARCHAR,
            latency_ms DOUBLE,
            ttft_ms DOUBLE,
            cache VARCHAR,
            upstream_request_id VARCHAR,
            recorded_at TIMESTAMP NOT NULL
        )
        """,
    ),
    (
        "0002_price_rows",
        """
        CREATE TABLE price_rows (
            id VARCHAR PRIMARY KEY,
            provider VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            effective_from TIMESTAMP NOT NULL,
            effective_to TIMESTAMP,
            source VARCHAR NOT NULL,
            prices VARCHAR NOT NULL,           -- the row's prices as JSON (exact decimal strings)
            first_used_at TIMESTAMP NOT NULL
        )
        """,
    ),
    (
        "0003_keys",
        """
        CREATE TABLE keys (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            key_hash VARCHAR NOT NULL UNIQUE,   -- sha256 of the key; the key itself is never stored
            key_prefix VARCHAR NOT NULL,        -- first characters, to recognise a key in listings
            tags MAP(VARCHAR, VARCHAR),
            locked_tags VARCHAR[],
            created_at TIMESTAMP NOT NULL,
            revoked_at TIMESTAMP
        )
        """,
    ),
    (
        "0004_spool_progress",
        """
        CREATE TABLE spool_progress (
            segment VARCHAR PRIMARY KEY,
            "offset" BIGINT NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )
        """,
    ),
    (
        "0005_governance",
        """
        ALTER TABLE events ADD COLUMN approval_id VARCHAR;
        CREATE TABLE budgets (
            name VARCHAR PRIMARY KEY,
            definition VARCHAR NOT NULL,       -- the budget as JSON, as given to the CLI or API
            updated_at TIMESTAMP NOT NULL,
            updated_by VARCHAR
        );
        CREATE TABLE alerts (
            id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,             -- threshold | forecast | blocked
            budget VARCHAR NOT NULL,
            period_start TIMESTAMP NOT NULL,
            threshold DOUBLE,
            message VARCHAR NOT NULL,
            fired_at TIMESTAMP NOT NULL,
            details VARCHAR
        );
        CREATE TABLE approvals (
            id VARCHAR PRIMARY KEY,
            status VARCHAR NOT NULL,           -- pending | approved | denied
            key_id VARCHAR,
            reason VARCHAR NOT NULL,           -- budget:<name> or rule:<name>
            model VARCHAR,
            message VARCHAR,
            requested_at TIMESTAMP NOT NULL,
            decided_at TIMESTAMP,
            decided_by VARCHAR,
            until TIMESTAMP,
            max_usd DECIMAL(38, 12)
        );
        """,
    ),
    (
        "0006_policies",
        """
        CREATE TABLE policies (
            kind VARCHAR NOT NULL,             -- limit | rule
            name VARCHAR NOT NULL,
            definition VARCHAR NOT NULL,       -- as given to the API, JSON
            updated_at TIMESTAMP NOT NULL,
            updated_by VARCHAR,
            PRIMARY KEY (kind, name)
        )
        """,
    ),
    (
        "0007_ledger_meta",
        """
        CREATE TABLE ledger_meta (
            name VARCHAR PRIMARY KEY,          -- identity_secret: proves a gateway serves this ledger
            value VARCHAR NOT NULL
        )
        """,
    ),
]


NAMES = tuple(name for name, _ in DUCKDB)


def apply(conn: Any, migrations: Sequence[tuple[str, str]] = DUCKDB, *, param: str = "?") -> list[str]:
    """Apply pending migrations on a DB-API-like connection (``execute`` returning a cursor, transactions by
    statement); returns the names applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations").fetchall()}
    applied = []
    for name, sql in migrations:
        if name in done:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(sql)
            conn.execute(f"INSERT INTO schema_migrations VALUES ({param}, now())", [name])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
