"""Web searches and audio tokens in the ledger (migration 0011_events_tools_audio), on every backend: the usage
columns, the price rows' web-search and audio rates, and spool lines written before the fields existed."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from ledger_samples import event, ledger_before, write_segment

from tokenops.ledger.base import Ledger, price_row_record
from tokenops.pricing.model import PriceRow
from tokenops.usage import Usage

AUDIO = Usage(input_tokens=1_000, output_tokens=500, input_audio_tokens=600, output_audio_tokens=400, web_searches=3)


def sql(ledger: Ledger, statement: str) -> list[Any]:
    with ledger.connect() as conn:  # type: ignore[attr-defined]
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def rates_row() -> PriceRow:
    return PriceRow(provider="openai", model="gpt-audio", effective_from=datetime(2026, 1, 1, tzinfo=UTC),
                    source="test", input_per_mtok=Decimal("2.5"), output_per_mtok=Decimal(10),
                    web_search_per_k=Decimal(10), input_audio_per_mtok=Decimal(32),
                    output_audio_per_mtok=Decimal(64))  # fmt: skip


def test_usage_of_searches_and_audio_round_trips_with_its_price_row(any_ledger: Ledger) -> None:
    row = rates_row()
    e = event(1, usage=AUDIO, price_row_id=row.id)
    assert any_ledger.append([e], [row]) == 1
    assert any_ledger.get_event(e.request_id) == e
    assert sql(any_ledger, f"SELECT input_audio_tokens, output_audio_tokens, web_searches FROM events "
                           f"WHERE request_id = '{e.request_id}'") == [(600, 400, 3)]  # fmt: skip
    stored = sql(any_ledger, "SELECT web_search_per_k, input_audio_per_mtok, output_audio_per_mtok FROM price_rows")
    assert stored == [(Decimal(10), Decimal(32), Decimal(64))]
    (exported,) = any_ledger.export_rows("price_rows", None, 10)
    assert exported["web_search_per_k"] == Decimal(10)
    assert any_ledger.totals().tokens["web_searches"] == 3


def test_spool_lines_with_and_without_the_new_fields_drain(any_ledger: Ledger, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    row = rates_row()
    exact = event(1, usage=AUDIO, price_row_id=row.id)
    old = event(2)
    old_line = orjson.loads(old.to_json())
    for name in ("input_audio_tokens", "output_audio_tokens", "web_searches"):
        del old_line["usage"][name]  # a line written before 0011
    bad = orjson.loads(event(3).to_json())
    bad["usage"]["input_audio_tokens"] = 10**6  # more audio than input
    write_segment(spool_dir, [orjson.dumps(price_row_record(row)), exact.to_json(), orjson.dumps(old_line),
                              orjson.dumps(bad)])  # fmt: skip
    assert any_ledger.drain(spool_dir) == 2
    assert any_ledger.get_event(exact.request_id) == exact
    stored = any_ledger.get_event(old.request_id)
    assert stored == old and stored.usage.web_searches == 0 and stored.usage.input_audio_tokens == 0
    assert sql(any_ledger, f"SELECT output_audio_per_mtok FROM price_rows WHERE id = '{row.id}'") == [(Decimal(64),)]


def test_a_ledger_before_0011_gains_the_columns_with_zeros(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    old = ledger_before(backend, monkeypatch, "0011_events_tools_audio")
    sql(old, "INSERT INTO events (request_id, ts, source, status, input_tokens, output_tokens, recorded_at) VALUES "
             "('req_old', TIMESTAMP '2026-11-01 08:00:00', 'test', 'ok', 10, 5, TIMESTAMP '2026-11-01 08:00:01')")  # fmt: skip
    monkeypatch.undo()
    new = backend()
    assert new.migrate() == ["0011_events_tools_audio"]
    got = new.get_event("req_old")
    assert got is not None and got.usage == Usage(input_tokens=10, output_tokens=5)
    e = event(1, usage=AUDIO)
    assert new.append([e], [rates_row()]) == 1 and new.get_event(e.request_id) == e
