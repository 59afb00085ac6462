"""Named, ordered schema migrations, recorded in ``schema_migrations``.

A migration is applied once, in order, inside a transaction with its record, so one interrupted half-way is
rolled back and applied whole on the next start. Names never change once released; a new schema change is a
new entry at the end of every dialect's list: each backend has the same names (a test checks it), written in
its own SQL. :data:`DUCKDB` is the embedded ledger's, :data:`POSTGRESQL` the server's (applied by
:mod:`tokenops.ledger.postgres` under an advisory lock, so that processes starting together do not race).

A database whose ``schema_migrations`` names a migration this code does not know was written by a newer
TokenOps: it is refused (:class:`~tokenops.errors.LedgerError`) rather than written with an older schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenops.errors import LedgerError

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
    (
        "0008_events_upstream_id",  # PostgreSQL indexes it; DuckDB scans the column (no partial indexes there)
        "SELECT 1",
    ),
    (
        "0009_keys_end_user",  # a key handed to one person: its calls are theirs, whatever the request says
        "ALTER TABLE keys ADD COLUMN end_user VARCHAR",
    ),
    (
        "0010_price_rows_variant",  # service-tier rows (flex, priority, batch) and daily hours (DeepSeek off-peak)
        """
        ALTER TABLE price_rows ADD COLUMN variant VARCHAR DEFAULT '';   -- '' is the standard price
        ALTER TABLE price_rows ADD COLUMN hours VARCHAR;                -- '16:30-00:30' (UTC), NULL: all day
        """,
    ),
    (
        "0011_events_tools_audio",  # audio tokens (parts of input/output) and server-side web searches; their rates
        """
        ALTER TABLE events ADD COLUMN input_audio_tokens BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE events ADD COLUMN output_audio_tokens BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE events ADD COLUMN web_searches BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE price_rows ADD COLUMN web_search_per_k DECIMAL(38, 12);       -- USD per 1,000; NULL: none
        ALTER TABLE price_rows ADD COLUMN input_audio_per_mtok DECIMAL(38, 12);   -- NULL: the text rate
        ALTER TABLE price_rows ADD COLUMN output_audio_per_mtok DECIMAL(38, 12);  -- NULL: the text rate
        """,
    ),
    (
        "0012_events_image_tokens",  # image tokens (parts of input/output) and their rates
        """
        ALTER TABLE events ADD COLUMN input_image_tokens BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE events ADD COLUMN output_image_tokens BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE price_rows ADD COLUMN input_image_per_mtok DECIMAL(38, 12);   -- NULL: the text rate
        ALTER TABLE price_rows ADD COLUMN output_image_per_mtok DECIMAL(38, 12);  -- NULL: the text rate
        """,
    ),
    (
        "0013_events_file_search_code",  # Responses file-search calls and code-interpreter containers; the search rate
        """
        ALTER TABLE events ADD COLUMN file_searches BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE events ADD COLUMN code_containers BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE price_rows ADD COLUMN file_search_per_k DECIMAL(38, 12);      -- USD per 1,000; NULL: none
        """,
    ),    (
        "0014_events_routing",  # why another model served the call; what a cached answer saved
        """
        ALTER TABLE events ADD COLUMN route_reason VARCHAR;
        ALTER TABLE events ADD COLUMN cost_avoided_usd DECIMAL(38, 12);
        ALTER TABLE events ADD COLUMN prefix_hash VARCHAR;       -- tokenops recommend: prompt caching, duplicates
        ALTER TABLE events ADD COLUMN prefix_tokens BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE events ADD COLUMN request_hash VARCHAR;
        ALTER TABLE events ADD COLUMN max_output BIGINT;
        """,
    ),
    (
        "0015_business_metrics",  # outside counts (tickets resolved…) for unit costs: tokenops import metrics
        """
        CREATE TABLE business_metrics (
            id VARCHAR PRIMARY KEY,            -- day|metric|k=v,… (tags sorted): one value per day, metric and tags
            day DATE NOT NULL,
            metric VARCHAR NOT NULL,
            tags MAP(VARCHAR, VARCHAR) NOT NULL,
            value DECIMAL(38, 12) NOT NULL,    -- never negative
            source VARCHAR,                    -- the file it was imported from
            imported_at TIMESTAMP NOT NULL
        )
        """,
    ),
]


# PostgreSQL: the same names, in the server's dialect. Events are partitioned by month (a partition is made by
# the ledger when a batch holds a month that has none; see tokenops.ledger.postgres) with a DEFAULT partition as
# the safety net; events_hourly is the rollup that spend reports over long windows read instead of the events.
POSTGRESQL: list[tuple[str, str]] = [
    (
        "0001_events",
        """
        CREATE TABLE events (
            request_id TEXT NOT NULL,
            ts TIMESTAMP NOT NULL,              -- call start, UTC (naive, as in DuckDB)
            source TEXT NOT NULL,
            provider TEXT,
            model_requested TEXT,
            model_used TEXT,
            route TEXT,
            stream BOOLEAN,
            input_tokens BIGINT NOT NULL DEFAULT 0,
            cache_read_tokens BIGINT NOT NULL DEFAULT 0,
            cache_write_5m_tokens BIGINT NOT NULL DEFAULT 0,
            cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            reasoning_tokens BIGINT NOT NULL DEFAULT 0,
            usage_estimated BOOLEAN NOT NULL DEFAULT FALSE,
            cost_usd NUMERIC(38, 12),           -- NULL: unpriced (no price known), never a silent 0
            price_row_id TEXT,
            key_id TEXT,
            end_user TEXT,
            team TEXT, project TEXT, feature TEXT, env TEXT,
            owner TEXT, workload TEXT, customer TEXT,
            tags JSONB,
            missing_tags TEXT[],
            status TEXT NOT NULL,
            http_status INTEGER,
            error_code TEXT,
            latency_ms DOUBLE PRECISION,
            ttft_ms DOUBLE PRECISION,
            cache TEXT,
            upstream_request_id TEXT,
            recorded_at TIMESTAMP NOT NULL,
            PRIMARY KEY (request_id, ts)        -- a partitioned table's keys include its partition key
        ) PARTITION BY RANGE (ts);
        CREATE TABLE events_default PARTITION OF events DEFAULT;
        CREATE INDEX events_ts ON events (ts);
        CREATE INDEX events_unpriced ON events (ts) WHERE cost_usd IS NULL;  -- no text: no key too long
        CREATE TABLE events_hourly (
            hour TIMESTAMP NOT NULL,            -- date_trunc('hour', ts)
            dims BYTEA NOT NULL,                -- sha256 of the dimension values below: the key of the row
            provider TEXT, model_used TEXT, key_id TEXT, status TEXT NOT NULL, route TEXT, source TEXT NOT NULL,
            team TEXT, project TEXT, feature TEXT, env TEXT, owner TEXT, workload TEXT, customer TEXT,
            requests BIGINT NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cost_usd NUMERIC(38, 12) NOT NULL,  -- the sum of the priced events' costs
            unpriced BIGINT NOT NULL,           -- events without a price
            PRIMARY KEY (hour, dims)
        );
        """,
    ),
    (
        "0002_price_rows",
        """
        CREATE TABLE price_rows (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            effective_from TIMESTAMP NOT NULL,
            effective_to TIMESTAMP,
            source TEXT NOT NULL,
            prices TEXT NOT NULL,              -- the row's prices as JSON (exact decimal strings)
            first_used_at TIMESTAMP NOT NULL
        )
        """,
    ),
    (
        "0003_keys",
        """
        CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,     -- sha256 of the key; the key itself is never stored
            key_prefix TEXT NOT NULL,          -- first characters, to recognise a key in listings
            tags JSONB,
            locked_tags TEXT[],
            created_at TIMESTAMP NOT NULL,
            revoked_at TIMESTAMP
        )
        """,
    ),
    (
        "0004_spool_progress",
        """
        CREATE TABLE spool_progress (
            segment TEXT PRIMARY KEY,
            "offset" BIGINT NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )
        """,
    ),
    (
        "0005_governance",
        """
        ALTER TABLE events ADD COLUMN approval_id TEXT;
        CREATE INDEX events_approval ON events (approval_id) WHERE approval_id IS NOT NULL;
        CREATE TABLE budgets (
            name TEXT PRIMARY KEY,
            definition TEXT NOT NULL,          -- the budget as JSON, as given (TEXT: JSONB would reorder it)
            updated_at TIMESTAMP NOT NULL,
            updated_by TEXT
        );
        CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,                -- threshold | forecast | blocked
            budget TEXT NOT NULL,
            period_start TIMESTAMP NOT NULL,
            threshold DOUBLE PRECISION,
            message TEXT NOT NULL,
            fired_at TIMESTAMP NOT NULL,
            details TEXT
        );
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL,              -- pending | approved | denied
            key_id TEXT,
            reason TEXT NOT NULL,              -- budget:<name> or rule:<name>
            model TEXT,
            message TEXT,
            requested_at TIMESTAMP NOT NULL,
            decided_at TIMESTAMP,
            decided_by TEXT,
            until TIMESTAMP,
            max_usd NUMERIC(38, 12)
        );
        """,
    ),
    (
        "0006_policies",
        """
        CREATE TABLE policies (
            kind TEXT NOT NULL,                -- limit | rule
            name TEXT NOT NULL,
            definition TEXT NOT NULL,          -- as given to the API, JSON
            updated_at TIMESTAMP NOT NULL,
            updated_by TEXT,
            PRIMARY KEY (kind, name)
        )
        """,
    ),
    (
        "0007_ledger_meta",
        """
        CREATE TABLE ledger_meta (
            name TEXT PRIMARY KEY,             -- identity_secret: proves a gateway serves this ledger
            value TEXT NOT NULL
        )
        """,
    ),
    (
        "0008_events_upstream_id",  # which key and provider created an OpenAI response (GET /v1/responses/{id})
        """
        CREATE INDEX events_upstream_id ON events (upstream_request_id) WHERE route = 'responses'
        """,
    ),
    (
        "0009_keys_end_user",  # a key handed to one person: its calls are theirs, whatever the request says
        "ALTER TABLE keys ADD COLUMN end_user TEXT",
    ),
    (
        "0010_price_rows_variant",  # service-tier rows (flex, priority, batch) and daily hours (DeepSeek off-peak)
        """
        ALTER TABLE price_rows ADD COLUMN variant TEXT NOT NULL DEFAULT '';  -- '' is the standard price
        ALTER TABLE price_rows ADD COLUMN hours TEXT;                        -- '16:30-00:30' (UTC), NULL: all day
        """,
    ),
    (
        "0011_events_tools_audio",  # audio tokens (parts of input/output) and server-side web searches; their rates
        # on the partitioned parent: every partition gets the columns. events_hourly sums none of them: unchanged.
        """
        ALTER TABLE events ADD COLUMN input_audio_tokens BIGINT NOT NULL DEFAULT 0,
                           ADD COLUMN output_audio_tokens BIGINT NOT NULL DEFAULT 0,
                           ADD COLUMN web_searches BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE price_rows ADD COLUMN web_search_per_k NUMERIC(38, 12),       -- USD per 1,000; NULL: none
                               ADD COLUMN input_audio_per_mtok NUMERIC(38, 12),   -- NULL: the text rate
                               ADD COLUMN output_audio_per_mtok NUMERIC(38, 12);  -- NULL: the text rate
        """,
    ),
    (
        "0012_events_image_tokens",  # image tokens (parts of input/output) and their rates
        # on the partitioned parent, as 0011. events_hourly sums neither: unchanged.
        """
        ALTER TABLE events ADD COLUMN input_image_tokens BIGINT NOT NULL DEFAULT 0,
                           ADD COLUMN output_image_tokens BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE price_rows ADD COLUMN input_image_per_mtok NUMERIC(38, 12),   -- NULL: the text rate
                               ADD COLUMN output_image_per_mtok NUMERIC(38, 12);  -- NULL: the text rate
        """,
    ),
    (
        "0013_events_file_search_code",  # Responses file-search calls and code-interpreter containers; the search rate
        # on the partitioned parent, as 0011. events_hourly sums neither: unchanged.
        """
        ALTER TABLE events ADD COLUMN file_searches BIGINT NOT NULL DEFAULT 0,
                           ADD COLUMN code_containers BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE price_rows ADD COLUMN file_search_per_k NUMERIC(38, 12);      -- USD per 1,000; NULL: none
        """,
    ),    (
        "0014_events_routing",  # why another model served the call; what a cached answer saved
        # on the partitioned parent, as 0011; events_hourly: unchanged
        """
        ALTER TABLE events ADD COLUMN route_reason TEXT,
                           ADD COLUMN cost_avoided_usd NUMERIC(38, 12),
                           ADD COLUMN prefix_hash TEXT,
                           ADD COLUMN prefix_tokens BIGINT NOT NULL DEFAULT 0,
                           ADD COLUMN request_hash TEXT,
                           ADD COLUMN max_output BIGINT;
        """,
    ),
    (
        "0015_business_metrics",  # outside counts (tickets resolved…) for unit costs: tokenops import metrics
        """
        CREATE TABLE business_metrics (
            id TEXT PRIMARY KEY,               -- day|metric|k=v,… (tags sorted): one value per day, metric and tags
            day DATE NOT NULL,
            metric TEXT NOT NULL,
            tags JSONB NOT NULL,
            value NUMERIC(38, 12) NOT NULL,    -- never negative
            source TEXT,                       -- the file it was imported from
            imported_at TIMESTAMP NOT NULL
        );
        CREATE INDEX business_metrics_metric_day ON business_metrics (metric, day);
        """,
    ),
]


NAMES = tuple(name for name, _ in DUCKDB)


def check_known(done: set[str], migrations: Sequence[tuple[str, str]], where: str) -> None:
    """Refuse a database that holds migrations this code does not know: a newer TokenOps wrote it."""
    unknown = sorted(done - {name for name, _ in migrations})
    if unknown:
        raise LedgerError(f"ledger {where} was written by a newer TokenOps (its schema has migration "
                          f"{', '.join(unknown)}, which this version does not know): upgrade TokenOps to use it")  # fmt: skip


def apply(conn: Any, migrations: Sequence[tuple[str, str]] = DUCKDB, *, param: str = "?",
          where: str = "database") -> list[str]:  # fmt: skip
    """Apply pending migrations on a DB-API-like connection (``execute`` returning a cursor, transactions by
    statement); returns the names applied. ``where`` names the database in errors."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations").fetchall()}
    check_known(done, migrations, where)
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
