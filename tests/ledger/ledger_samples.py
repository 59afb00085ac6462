"""Events and records to fill a ledger with in backend tests: awkward on purpose (non-ASCII tags, unpriced and
untagged calls, empty values, times on bucket edges and across DST changes and ISO year ends)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.usage import Usage

START = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)  # before the end of summer time in Europe (25 Oct) and the US
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "llama.3+1(b)", "weird$^x|m%_", "mistral[large]")
_segments = itertools.count(1)


def event(i: int = 0, **kw: Any) -> SpendEvent:
    base: dict[str, Any] = dict(
        request_id=new_request_id(), ts=START + timedelta(seconds=i), source="test", provider="openai",
        model_requested="gpt-4o-mini", model_used="gpt-4o-mini", usage=Usage(input_tokens=100 + i, output_tokens=10),
        cost_usd=Decimal("0.000021"), tags={"team": "a"},
    )  # fmt: skip
    base.update(kw)
    return SpendEvent(**base)


def edge_times() -> list[datetime]:
    """Instants on or next to the edges of hours, days, weeks and months in the zones the tests report in."""
    out = []
    for day in (datetime(2026, 10, 25), datetime(2026, 11, 1), datetime(2026, 12, 1), datetime(2027, 1, 1),
                datetime(2026, 12, 28)):  # fmt: skip
        for offset_h in (0, -1, -2, 4, 5, -5, -10, -11, -5.5, -5.75, -10.5):  # local midnights, UTC+/-...
            t = day.replace(tzinfo=UTC) + timedelta(hours=offset_h)
            out += [t - timedelta(microseconds=1), t, t + timedelta(microseconds=1)]
    return out


def sample_events(n: int = 400, seed: int = 7) -> list[SpendEvent]:
    rnd = random.Random(seed)
    teams = ["search", "ads", "Ärger", "東京", None]
    times = edge_times()
    events = []
    for i in range(n + len(times)):
        ts = times[i - n] if i >= n else START + timedelta(seconds=rnd.randint(0, 75 * 86400),
                                                           microseconds=rnd.randint(0, 999_999))  # fmt: skip
        model = rnd.choice(MODELS)
        tags = {k: v for k, v in (("team", rnd.choice(teams)), ("env", rnd.choice(["prod", "dev", None])),
                                  ("feature", rnd.choice(["résumé", "chat", None])),
                                  ("x", rnd.choice(["y", "z", "ü", None])), ("customer", rnd.choice(["c1", None])))
                if v is not None}  # fmt: skip
        priced = rnd.random() > 0.15
        input_tokens = rnd.randint(0, 50_000)
        events.append(SpendEvent(
            request_id=new_request_id(), ts=ts.astimezone(UTC), source=rnd.choice(["gateway", "demo"]),
            provider=rnd.choice(["openai", "anthropic", ""]), model_requested=rnd.choice([model, "cheap"]),
            model_used=model, route=rnd.choice(["chat.completions", "messages", ""]), stream=rnd.random() > 0.5,
            usage=Usage(input_tokens=input_tokens, cache_read_tokens=rnd.randint(0, input_tokens),
                        output_tokens=rnd.randint(0, 4000)),
            usage_estimated=rnd.random() > 0.9,
            cost_usd=Decimal(rnd.randint(0, 10**12)).scaleb(-12) if priced else None,
            price_row_id="openai:gpt-4o:2026" if priced else None, key_id=rnd.choice(["key_a", "key_b", None]),
            end_user=rnd.choice(["alice", "bob", "", None]), tags=tags,
            missing_tags=("team",) if "team" not in tags else (),
            status=rnd.choice(["ok", "ok", "ok", "upstream_error", "cancelled"]), http_status=200,
            latency_ms=rnd.random() * 1000, ttft_ms=None, cache="off",
            approval_id=rnd.choice([None, None, "apr_1", "apr_2"]),
        ))  # fmt: skip
    return events


def write_segment(spool_dir: Path, lines: Sequence[bytes], torn: bytes = b"") -> Path:
    """A spool segment no process appends to (as a dead gateway leaves it)."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    path = spool_dir / f"{next(_segments):013d}-1-deadbeef.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines) + torn)
    return path


def approval_record(i: int, at: datetime) -> bytes:
    return orjson.dumps({"record": "approval", "id": f"apr_{i}", "key_id": "key_a", "reason": "budget:monthly",
                         "model": "gpt-4o", "message": f"über budget {i}", "requested_at": at.isoformat()})  # fmt: skip


def alert_record(i: int, at: datetime, budget: str = "monthly") -> bytes:
    return orjson.dumps({"record": "alert", "id": f"alr_{i}", "kind": "threshold", "budget": budget,
                         "period_start": datetime(2026, 11, 1, tzinfo=UTC).isoformat(), "threshold": 0.5 + i / 10,
                         "message": f"{budget} at {50 + 10 * i} %", "fired_at": at.isoformat(),
                         "details": {"spent": "12.5"}})  # fmt: skip


def ledger_before(backend: Any, monkeypatch: Any, migration: str) -> Any:
    """A ledger of ``backend`` migrated with every step but ``migration``: the schema of a TokenOps from before it.
    The caller undoes ``monkeypatch`` before opening the ledger again (which then applies that one step)."""
    from tokenops.ledger import migrations
    from tokenops.ledger.postgres import PostgresLedger

    postgres = isinstance(backend(), PostgresLedger)
    steps = [m for m in (migrations.POSTGRESQL if postgres else migrations.DUCKDB) if m[0] != migration]
    assert len(steps) == len(migrations.NAMES) - 1
    if postgres:
        monkeypatch.setattr(migrations, "POSTGRESQL", steps)
    else:
        real = migrations.apply
        monkeypatch.setattr(migrations, "apply", lambda conn, **kw: real(conn, steps, **kw))
    old = backend()
    assert old.migrate() == [n for n, _ in steps]
    return old
