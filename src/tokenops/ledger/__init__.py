"""The ledger: where every spend event and governance record is kept (see :mod:`tokenops.ledger.base`).

``open_ledger(url)`` picks the backend from the URL: ``duckdb:///path/file.duckdb`` (the embedded default) or
``postgresql://user@host:port/db`` (several gateways, long retention). Drivers are imported only by the
backend that needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tokenops.errors import ConfigError

if TYPE_CHECKING:
    from tokenops.ledger.base import Ledger


def duckdb_path(url: str, base_dir: Path | str = ".") -> Path:
    """``duckdb:///./x.duckdb`` → ./x.duckdb (relative to ``base_dir``); ``duckdb:////abs/x.duckdb`` → /abs/x.duckdb."""
    if not url.startswith("duckdb://"):
        raise ConfigError(f"not a DuckDB ledger URL: {url}", path="ledger")
    raw = url[len("duckdb://") :]
    raw = raw[1:] if raw.startswith("/") and not raw.startswith("//") else raw
    path = Path(raw[1:] if raw.startswith("//") else raw)
    if not str(path) or str(path) == ".":
        raise ConfigError(f"a DuckDB ledger URL names a file: duckdb:///./tokenops.duckdb, not {url}", path="ledger")
    return path if path.is_absolute() else Path(base_dir) / path


def open_ledger(url: str, base_dir: Path | str = ".") -> Ledger:
    """The ledger a URL names (nothing is opened until it is first used)."""
    if url.startswith("duckdb://"):
        from tokenops.ledger.duckdb import DuckDBLedger

        return DuckDBLedger(duckdb_path(url, base_dir))
    if url.startswith(("postgresql://", "postgres://")):
        from tokenops.ledger.postgres import PostgresLedger

        return PostgresLedger(url)
    raise ConfigError(f"unknown ledger URL {url!r}: expected duckdb:///path/to/file.duckdb or "
                      "postgresql://user@host:port/db", path="ledger")  # fmt: skip
