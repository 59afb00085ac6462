"""``tokenops recommend``: each kind of waste found from the ledger (hashes and sizes, no prompts), with its
evidence and a saving in dollars computed from the catalog; and the fingerprints the gateway records per call.

Prices (https://platform.openai.com/docs/pricing, https://docs.anthropic.com/en/docs/about-claude/pricing, read
2026-12-02): gpt-4o $2.50 input / $1.25 cached / $10 output, gpt-4o-mini $0.15 / $0.60, claude-sonnet-4-5 $3 /
$0.30 cache read / $3.75 5-minute cache write / $15 per 1M tokens.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from typer.testing import CliRunner

from harness import GatewayHarness
from tokenops.cli import app
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.services.recommend import recommend
from tokenops.usage import Usage

M = Decimal(1_000_000)
NOW = datetime.now(UTC).replace(microsecond=0)


def event(minutes_ago: float, *, model: str = "gpt-4o", provider: str = "openai", inp: int = 100, out: int = 50,
          team: str = "search", feature: str = "chat", **kw: Any) -> SpendEvent:  # fmt: skip
    cost = kw.pop("cost", None)
    usage = Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=kw.pop("cached", 0))
    return SpendEvent(request_id=new_request_id(), ts=NOW - timedelta(minutes=minutes_ago), source="gateway", provider=provider,
                      model_requested=model, model_used=model, route=kw.pop("route", "chat.completions"), usage=usage,
                      cost_usd=cost if cost is not None else Decimal("0.001"), key_id=kw.pop("key", "key_a"),
                      tags={"team": team, "feature": feature, **kw.pop("tags", {})}, **kw)  # fmt: skip


async def test_the_gateway_records_what_recommend_reads(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway()
    system = "You are a careful assistant. " * 50
    body = {"model": "gpt-4o-mini", "max_tokens": 300, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": "first"}]}  # fmt: skip
    one = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    two = await gw.client.post("/v1/chat/completions", json={**body, "stream": False, "user": "x"}, headers=gw.auth())
    other = {**body, "messages": [body["messages"][0], {"role": "user", "content": "second"}]}
    three = await gw.client.post("/v1/chat/completions", json=other, headers=gw.auth())
    a, b, c = (gw.event(r.headers["x-tokenops-request-id"]) for r in (one, two, three))
    assert a.prefix_hash and a.prefix_hash == b.prefix_hash == c.prefix_hash  # one system prompt
    assert len(system) // 4 <= a.prefix_tokens <= len(system) // 4 + 20 and a.max_output == 300
    assert a.request_hash == b.request_hash != c.request_hash  # stream and user do not change the answer


def test_each_kind_of_waste_is_found_and_priced(make_gateway: Any, tmp_path: Any) -> None:
    from harness import write_config
    from tokenops.ledger import open_ledger
    from tokenops.pricing.catalog import load_catalog

    cfg = write_config(tmp_path)
    ledger = open_ledger(cfg.ledger, cfg.base_dir)
    events = []
    # 5 calls repeating one 3,000-token prefix on claude-sonnet-4-5, never read from the cache
    events += [event(50 - i, model="claude-sonnet-4-5", provider="anthropic", inp=3200, feature="rag",
                     prefix_hash="p1", prefix_tokens=3000) for i in range(5)]  # fmt: skip
    # 12 calls of ~200 tokens and 2 of 40,000 on gpt-4o (feature "docs")
    events += [event(40 - i, inp=200, feature="docs") for i in range(12)]
    events += [event(20 + i, inp=40_000, feature="docs") for i in range(2)]
    # 10 calls asking for 4,000 output tokens and using at most 60 (feature "tags")
    events += [event(30 - i, model="gpt-4o-mini", out=50 + i, max_output=4000, feature="tags") for i in range(10)]
    # 4 short calls on gpt-4o (feature "classify"), 2 of them the same request twice within a minute
    events += [event(10, inp=120, out=5, feature="classify", cost=Decimal("0.00035"), request_hash="r1"),
               event(9.5, inp=120, out=5, feature="classify", cost=Decimal("0.00035"), request_hash="r1"),
               event(5, inp=90, out=5, feature="classify", cost=Decimal("0.000275"), request_hash="r2"),
               event(4, inp=90, out=5, feature="classify", cost=Decimal("0.000275"), request_hash="r3")]  # fmt: skip
    # nightly background work sent live
    events += [event(60 + i, inp=1000, feature="digest", tags={"workload": "nightly"}, cost=Decimal("0.02"))
               for i in range(3)]
    ledger.append(events)
    catalog = load_catalog()
    found = recommend(ledger, cfg, catalog, since=NOW - timedelta(days=1), until=NOW, now=NOW)
    kinds = {(f.kind, f.group["feature"]): f for f in found}
    assert set(kinds) == {("prompt_caching", "rag"), ("oversized_context", "docs"), ("max_tokens_headroom", "tags"),
                          ("frontier_for_simple", "classify"), ("duplicates", "classify"), ("batch", "digest"),
                          ("frontier_for_simple", "docs")}, sorted(kinds)  # fmt: skip
    caching = kinds[("prompt_caching", "rag")]
    # 4 repeats x 3,000 tokens at $3 - $0.30, less one cache write premium (3,000 x ($3.75 - $3))
    assert caching.calls == 5 and caching.window_usd == (4 * 3000 * Decimal("2.70") - 3000 * Decimal("0.75")) / M
    oversized = kinds[("oversized_context", "docs")]
    assert oversized.calls == 2 and oversized.window_usd == 2 * (40_000 - 200) * Decimal("2.50") / M
    assert kinds[("max_tokens_headroom", "tags")].window_usd == 0 and "set it near 118" in kinds[
        ("max_tokens_headroom", "tags")].evidence  # fmt: skip
    simple = kinds[("frontier_for_simple", "classify")]
    instead = (2 * (120 * Decimal("0.15") + 5 * Decimal("0.60")) + 2 * (90 * Decimal("0.15") + 5 * Decimal("0.60"))) / M
    assert simple.calls == 4 and simple.window_usd == Decimal("0.00125") - instead and "gpt-4o-mini" in simple.evidence
    assert kinds[("duplicates", "classify")].calls == 1 and kinds[("duplicates", "classify")].window_usd == Decimal(
        "0.00035")  # fmt: skip
    assert kinds[("batch", "digest")].window_usd == Decimal("0.03")
    # the window (a day) is scaled to 30 days, and the biggest saving comes first
    assert kinds[("batch", "digest")].monthly_usd == Decimal("0.9")
    assert found[0].monthly_usd == max(f.monthly_usd for f in found)
    ledger.close()
    result = CliRunner().invoke(app, ["recommend", "--since", "1d", "--by", "team,feature", "-f", "json", "-c",
                                      str(tmp_path / "tokenops.yaml")])  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = orjson.loads(result.output)
    assert {f["kind"] for f in payload["findings"]} >= {"prompt_caching", "batch", "duplicates"}
    bad = CliRunner().invoke(app, ["recommend", "--by", "colour", "-c", str(tmp_path / "tokenops.yaml")])
    assert bad.exit_code != 0


def test_background_work_at_peak_hours_is_pointed_to_the_off_peak_price(tmp_path: Any) -> None:
    """A model with time-of-day prices (as DeepSeek had: $0.27 / $1.10 from 00:30 to 16:30 UTC, half that the
    rest of the day): a nightly job's call sent at 10:00 would have cost half at 20:00; one sent at 20:00 saves
    nothing."""
    from datetime import time

    from harness import write_config
    from tokenops.ledger import open_ledger
    from tokenops.pricing.catalog import load_catalog
    from tokenops.pricing.model import PriceRow

    since = datetime(2025, 1, 1, tzinfo=UTC)
    peak = PriceRow("nightco", "night-1", since, "test", input_per_mtok=Decimal("0.27"),
                    output_per_mtok=Decimal("1.10"), hours=((time(0, 30), time(16, 30)),))  # fmt: skip
    night = PriceRow("nightco", "night-1", since, "test", input_per_mtok=Decimal("0.135"),
                     output_per_mtok=Decimal("0.55"), hours=((time(16, 30), time(0, 30)),))  # fmt: skip
    catalog = load_catalog((peak, night))
    cfg = write_config(tmp_path)
    ledger = open_ledger(cfg.ledger, cfg.base_dir)
    day = NOW.replace(hour=0, minute=0, second=0) - timedelta(days=1)
    ten, eight = day + timedelta(hours=10), day + timedelta(hours=20)
    paid_peak = (Decimal(10_000) * Decimal("0.27") + Decimal(2_000) * Decimal("1.10")) / M
    ledger.append([
        event((NOW - ten).total_seconds() / 60, model="night-1", provider="nightco", inp=10_000, out=2_000,
              feature="digest", tags={"workload": "nightly"}, cost=paid_peak),
        event((NOW - eight).total_seconds() / 60, model="night-1", provider="nightco", inp=10_000, out=2_000,
              feature="digest", tags={"workload": "nightly"}, cost=paid_peak / 2),
    ])  # fmt: skip
    found = recommend(ledger, cfg, catalog, since=NOW - timedelta(days=3), until=NOW, now=NOW)
    (off_peak,) = [f for f in found if f.kind == "off_peak"]
    assert off_peak.calls == 1 and off_peak.window_usd == paid_peak / 2
    ledger.close()
