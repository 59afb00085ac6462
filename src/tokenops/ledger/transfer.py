"""Copying a whole ledger into another (``tokenops ledger migrate --from URL --to URL``), and proving the copy.

Each table of :data:`tokenops.ledger.base.TABLES` is read from the source in pages, in key order, and written
to the destination page by page (:meth:`Ledger.export_rows` / :meth:`Ledger.import_rows`): any backend to
any backend, every column as it is (an event keeps the time it was first recorded). Writing is idempotent: an
event, price row or alert the destination holds is skipped, and keys, definitions and approvals (which change:
a key is revoked, an approval decided) are brought up to date, so a second run copies nothing twice and an
interrupted run is finished by running it again.

:func:`verify` then compares what both ledgers hold: the rows of each table, the events' total cost (exact)
and their token sums.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tokenops.ledger.base import TABLES, Ledger

BATCH = 10_000  # rows per page: one COPY (PostgreSQL) or read_json (DuckDB) each

Progress = Callable[[str, int, int], None]  # (table, rows read in this page, rows new in the destination)


@dataclass
class Copied:
    """What one run read from the source and wrote as new into the destination, per table."""

    read: dict[str, int] = field(default_factory=dict)
    new: dict[str, int] = field(default_factory=dict)


def copy_ledger(source: Ledger, dest: Ledger, *, batch: int = BATCH, progress: Progress | None = None) -> Copied:
    """Copy every table of ``source`` into ``dest`` (price rows first, events last). The next page is read while
    the last one is written (both databases do their work outside Python's lock)."""
    copied = Copied()
    with ThreadPoolExecutor(1, thread_name_prefix="tokenops-copy") as reader:
        for table in TABLES:
            copied.read[table] = copied.new[table] = 0
            for rows in _pages(source, table, batch, reader):
                new = dest.import_rows(table, rows)
                copied.read[table] += len(rows)
                copied.new[table] += new
                if progress is not None:
                    progress(table, len(rows), new)
    return copied


def _pages(source: Ledger, table: str, batch: int, reader: ThreadPoolExecutor) -> Iterator[list[dict[str, Any]]]:
    """The pages of ``table``, each asked for (in ``reader``) before the one before it is handed on."""
    key = TABLES[table].key
    page = reader.submit(source.export_rows, table, None, batch)
    while rows := page.result():  # until an empty page: a page may hold more or fewer rows than asked
        page = reader.submit(source.export_rows, table, tuple(rows[-1][k] for k in key), batch)
        yield rows


def verify(source: Ledger, dest: Ledger) -> list[str]:
    """How ``dest`` differs from ``source`` (rows per table, total cost, token sums); empty when they agree."""
    return source.totals().differences(dest.totals())
