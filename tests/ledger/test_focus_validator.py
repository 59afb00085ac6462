"""The FinOps Foundation's own FOCUS validator on what ``tokenops export focus`` writes (CSV and Parquet).

It runs in its own environment (it needs Python 3.12; ``scripts/focus-validator``), which ``scripts/test`` sets up
and names in ``TOKENOPS_FOCUS_VALIDATOR``. The rules it does not check row by row are checked on every row in
tests/ledger/test_focus_export.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_focus_export import ROWS, calls

from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.services.focus import focus_export, write_focus

VALIDATOR = os.environ.get("TOKENOPS_FOCUS_VALIDATOR")
pytestmark = pytest.mark.skipif(not VALIDATOR, reason="scripts/test runs it (TOKENOPS_FOCUS_VALIDATOR: the "
                                "validator needs its own Python 3.12 environment)")  # fmt: skip


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    assert VALIDATOR
    return subprocess.run([VALIDATOR, str(path)], capture_output=True, text=True, timeout=300)


def test_the_export_passes_the_focus_validator_as_csv_and_parquet(tmp_path: Path) -> None:
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    ledger.append(calls(), ROWS)
    export = focus_export(ledger, since=None, until=None)
    ledger.close()
    assert len({r["x_TokenType"] for r in export.rows}) >= 8  # every kind of line the export writes, nearly
    for name in ("spend.csv", "spend.parquet"):
        write_focus(export, tmp_path / name)
        done = validate(tmp_path / name)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Total: " in done.stdout and "no rule failed" in done.stdout


def test_the_validator_is_really_run_a_broken_file_fails(tmp_path: Path) -> None:
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    ledger.append(calls(), ROWS)
    write_focus(focus_export(ledger, since=None, until=None), tmp_path / "spend.csv")
    ledger.close()
    text = (tmp_path / "spend.csv").read_text()
    (tmp_path / "bad.csv").write_text(text.replace(",USD,", ",usd,"))  # not an ISO 4217 code
    done = validate(tmp_path / "bad.csv")
    assert done.returncode == 1 and "BillingCurrency" in done.stdout, done.stdout + done.stderr
