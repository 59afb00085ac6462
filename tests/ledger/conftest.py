"""Ledger fixtures: the same tests on every backend (``any_ledger``), and fresh PostgreSQL databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services import fresh_database
from tokenops.ledger.base import Ledger
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.postgres import PostgresLedger


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database (dropped after the test)."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def pg_ledger(pg_url: str) -> Iterator[PostgresLedger]:
    ledger = PostgresLedger(pg_url)
    yield ledger
    ledger.close()


@pytest.fixture(params=["duckdb", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Opens the test's ledger (another object on the same data each call: another process would do the same).
    Every object opened is closed after the test."""
    opened: list[Ledger] = []
    if request.param == "duckdb":
        path = tmp_path / "ledger.duckdb"

        def open_duckdb() -> Ledger:
            opened.append(DuckDBLedger(path))
            return opened[-1]

        yield open_duckdb
    else:
        with fresh_database() as url:

            def open_postgres() -> Ledger:
                opened.append(PostgresLedger(url))
                return opened[-1]

            yield open_postgres
            for ledger in opened:
                ledger.close()


@pytest.fixture
def any_ledger(backend: Callable[[], Ledger]) -> Ledger:
    """A ledger on each backend: DuckDB, then PostgreSQL."""
    return backend()
