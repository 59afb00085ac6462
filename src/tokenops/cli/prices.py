"""``tokenops prices list|show|calc|update``: the price catalog (genai-prices' data with TokenOps' reviewed
corrections, plus the config's ``prices:`` rows), the cost of a call, and updating genai-prices' data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, drain, emit, ledger_for, load
from tokenops.errors import UsageError

app = typer.Typer(help="Price catalog: what each model costs, and which models have no price.", no_args_is_help=True)

_FIELDS = ("input_per_mtok", "cache_read_per_mtok", "cache_write_5m_per_mtok", "cache_write_1h_per_mtok",
           "output_per_mtok", "reasoning_per_mtok")  # fmt: skip


def _catalog(cfg: Any) -> Any:
    from tokenops.pricing.catalog import load_catalog

    return load_catalog(tuple(e.to_row(cfg.source) for e in cfg.prices))


def _row(r: Any, *, history: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"provider": r.provider, "model": r.model}
    for f in _FIELDS:
        v = getattr(r, f)
        d[f] = None if v is None else format(v, "f")
    d["long_context_tiers"] = len(r.tiers)
    d["variant"] = r.variant or None  # a service tier's row (flex, priority, batch); none: the standard price
    d["hours"] = _hours(r.hours)  # the UTC hours of each day the row applies in (DeepSeek off-peak); none: all day
    d["effective_from"] = r.effective_from.date().isoformat()
    d["effective_to"] = r.effective_to.date().isoformat() if r.effective_to else None
    d["source"] = r.source
    d["id"] = r.id
    return d


@app.command("list")
def list_(
    provider: Annotated[str | None, typer.Option(help="Only this provider (catalog id, e.g. openai).")] = None,
    search: Annotated[str | None, typer.Option("--search", "-s", help="Only models whose name contains this.")] = None,
    unpriced: Annotated[bool, typer.Option("--unpriced", help="Models seen in the ledger with no price.")] = False,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List current prices per million tokens (USD), or with --unpriced the models that need one."""
    from datetime import UTC, datetime

    cfg = load(config)
    if unpriced:
        ledger = ledger_for(cfg)
        drain(cfg, ledger)
        rows = [{"provider": u.provider, "model": u.model, "requests": u.requests,
                 "first_seen": str(u.first_seen.replace(tzinfo=None)), "last_seen": str(u.last_seen.replace(tzinfo=None)),
                 "input_tokens": u.input_tokens, "output_tokens": u.output_tokens} for u in ledger.unpriced_models()]  # fmt: skip
        hint = "add a row under prices: in the config for each (see docs/configuration.md)" if rows else None
        emit(rows, fmt, title="Unpriced models", payload={"models": rows},
             columns=["provider", "model", "requests", "input_tokens", "output_tokens", "first_seen", "last_seen"],
             footer=hint)  # fmt: skip
        return
    catalog = _catalog(cfg)
    now = datetime.now(UTC)
    rows = [
        _row(r)
        for r in catalog.rows(provider=provider)
        if r.effective_from <= now and (r.effective_to is None or now < r.effective_to)  # any hours of the day
        and (search is None or search.lower() in r.model.lower())
    ]
    if provider and not rows:
        raise UsageError(f"no prices for provider {provider!r} (try without --provider, or --search)")
    emit(rows, fmt, title="Prices (USD per million tokens)", payload={"prices": rows},
         columns=["provider", "model", "variant", "hours", "input_per_mtok", "cache_read_per_mtok", "cache_write_5m_per_mtok",
                  "output_per_mtok", "source"])  # fmt: skip


@app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="Model name, e.g. gpt-4o or claude-sonnet-4-5-20250929.")],
    provider: Annotated[str | None, typer.Option(help="Provider to look under (default: any).")] = None,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Show a model's price history, tiers and source."""
    cfg = load(config)
    catalog = _catalog(cfg)
    providers = [provider] if provider else sorted({r.provider for r in catalog.rows()})
    keys = []
    for p in providers:
        key = catalog.resolve(p, model)
        if key is not None and key not in keys and key[0] == p:
            keys.append(key)
    if not keys:
        raise UsageError(f"no price known for model {model!r}; calls to it are recorded as unpriced. "
                         "Add a row under prices: in the config.")  # fmt: skip
    rows = [_row(r) for key in keys for r in catalog.rows(*key)]
    tiers = [
        {"id": r.id, "above_input_tokens": t.above_input_tokens,
         **{f: (None if getattr(t, f) is None else format(getattr(t, f), "f")) for f in _FIELDS}}
        for key in keys for r in catalog.rows(*key) for t in r.tiers
    ]  # fmt: skip
    emit(rows, fmt, title=f"Prices of {model} (USD per million tokens)", payload={"model": model, "rows": rows,
         "tiers": tiers}, columns=["provider", "model", "variant", "hours", *_FIELDS, "effective_from", "effective_to",
                                   "source"])  # fmt: skip
    if tiers and fmt is Format.table:
        emit(tiers, fmt, title="Long-context tiers (whole call priced at the tier when the prompt is larger)")


_PREFERRED = ("openai", "anthropic", "google")  # tried first when --provider is not given and the config has none
def _hours(hours: Any) -> str | None:
    from tokenops.pricing.model import format_hours

    return format_hours(hours) or None


# What a price the row leaves out is billed at (tokenops.pricing.model.price_usage).
_UNSET = {"input_per_mtok": "0", "cache_read_per_mtok": "= input", "cache_write_5m_per_mtok": "= input",
          "cache_write_1h_per_mtok": "= 5m write", "output_per_mtok": "0", "reasoning_per_mtok": "= output"}  # fmt: skip


@app.command("calc")
def calc(
    model: Annotated[str, typer.Argument(help="Model name, as a call names it (claude-sonnet-4-5, gpt-4o-2024-08-06).")],
    input_tokens: Annotated[int, typer.Option(
        "--input", min=0, help="Prompt tokens in all: uncached, cache reads and cache writes together.")],
    output_tokens: Annotated[int, typer.Option("--output", min=0, help="Completion tokens in all, reasoning included.")],
    cached: Annotated[int, typer.Option("--cached", min=0, help="Of --input: prompt-cache reads.")] = 0,
    cache_write_5m: Annotated[int, typer.Option(
        "--cache-write-5m", min=0, help="Of --input: 5-minute prompt-cache writes.")] = 0,
    cache_write_1h: Annotated[int, typer.Option(
        "--cache-write-1h", min=0, help="Of --input: 1-hour prompt-cache writes.")] = 0,
    reasoning: Annotated[int, typer.Option("--reasoning", min=0, help="Of --output: reasoning tokens.")] = 0,
    web_searches: Annotated[int, typer.Option(
        "--web-searches", min=0, max=1_000_000, help="Server-side web searches (priced per 1,000).")] = 0,
    file_searches: Annotated[int, typer.Option(
        "--file-searches", min=0, max=1_000_000, help="File-search tool calls (priced per 1,000).")] = 0,
    tier: Annotated[str | None, typer.Option(
        "--tier", help="Service tier (standard, flex, priority, batch, …): priced with the catalog's row for that "
                       "tier; a tier the catalog has no row for is priced at the standard rate, and flagged.")] = None,
    at: Annotated[str | None, typer.Option(
        "--at", help="When the call is made: 2025-10-15, 2025-10-15T12:00 (UTC unless it has an offset), or 30d/12h "
                     "ago. Default: now.")] = None,
    provider: Annotated[str | None, typer.Option(
        help="A configured provider or a catalog provider id. Default: the configured providers, then openai, "
             "anthropic, google and the other catalog providers.")] = None,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:  # fmt: skip
    """The exact cost of one call, with the price row and rates it was priced with.

    Priced exactly like the gateway prices a call (the same lookup and arithmetic).
    """
    from decimal import ROUND_HALF_EVEN, Decimal

    from tokenops import money
    from tokenops.pricing.model import format_hours, price_usage, tier_variant
    from tokenops.timespec import parse_time
    from tokenops.usage import MalformedUsage, Usage

    cfg = load(config)
    when = parse_time(at, what="--at") or datetime.now(UTC)
    try:
        usage = Usage(input_tokens=input_tokens, cache_read_tokens=cached, cache_write_5m_tokens=cache_write_5m,
                      cache_write_1h_tokens=cache_write_1h, output_tokens=output_tokens, reasoning_tokens=reasoning,
                      web_searches=web_searches, file_searches=file_searches)  # fmt: skip
    except MalformedUsage:
        if cached + cache_write_5m + cache_write_1h > input_tokens:
            raise UsageError("--cached, --cache-write-5m and --cache-write-1h are parts of --input: together they "
                             f"exceed it ({cached}+{cache_write_5m}+{cache_write_1h} > {input_tokens})") from None  # fmt: skip
        if reasoning > output_tokens:
            raise UsageError(f"--reasoning is part of --output: {reasoning} > {output_tokens}") from None
        raise UsageError("token counts must be at most 1,000,000,000 each") from None
    catalog = _catalog(cfg)
    candidates = _candidates(cfg, catalog, provider)
    found = next(((name, row) for name, ids in candidates if (row := catalog.lookup(ids, model, when))), None)
    if found is None:
        where = f"provider {provider!r}" if provider else "any provider"
        raise UsageError(f"no price known for model {model!r} under {where} at {_iso(when)}; calls to it are "
                         "recorded as unpriced. Add a row under prices: in the config.")  # fmt: skip
    name, row = found
    service_tier = None
    if tier is not None:  # the tier's own row, as the gateway prices a call its provider says that tier served
        variant = tier_variant(tier)
        tiered = catalog.lookup((row.provider,), row.model, when, variant=variant) if variant else None
        row = tiered or row
        flagged = bool(variant) and tiered is None
        note = (f"service tier {tier!r} is not in the price catalog: the standard rate was used" if flagged
                else f"the {variant} rate" if variant else "the standard rate")  # fmt: skip
        service_tier = {"requested": tier, "priced_as": variant if tiered else "standard", "flagged": flagged,
                        "note": note}  # fmt: skip
    cost = price_usage(usage, row)
    exact = money.add(cost.input, cost.cache_read, cost.cache_write, cost.output, cost.request, cost.tools)
    applied = row.tier_at(usage.input_tokens)
    rates = row.prices_for(usage)
    others = [] if provider else _others(catalog, model, when, row.provider)
    price_row = {
        "id": row.id, "provider": row.provider, "model": row.model, "source": row.source,
        "variant": row.variant, "hours": format_hours(row.hours) or None,
        "effective_from": _iso(row.effective_from), "effective_to": _iso(row.effective_to) if row.effective_to else None,
        "rates_applied": {f: _dec(rates[f]) for f in _FIELDS} | {"per_request": _dec(row.per_request)},
        "base_rates": {f: _dec(getattr(row, f)) for f in _FIELDS},
        "long_context_tier": None if applied is None else {"above_input_tokens": applied.above_input_tokens,
                                                           **{f: _dec(getattr(applied, f)) for f in _FIELDS}},
        "tiers": [t.above_input_tokens for t in row.tiers],
        "tool_rates_per_k": {"web_search": _dec(row.web_search_per_k), "file_search": _dec(row.file_search_per_k)},
    }  # fmt: skip
    parts = {"input": cost.input, "cache_read": cost.cache_read, "cache_write": cost.cache_write,
             "output": cost.output, "request": cost.request}  # fmt: skip
    if usage.web_searches or usage.file_searches:
        parts["tools"] = cost.tools
    totals = {
        "cost_usd": money.format_usd(exact),  # every term exact, nothing rounded
        "cost_usd_recorded": money.format_usd(cost.total),  # what the gateway records: rounded once, to 12 places
        "cost_usd_rounded": format(cost.total.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN), "f"),
    }
    payload: dict[str, Any] = {
        "model": model, "provider": name, "at": _iso(when), "usage": usage.to_dict(), **totals,
        "cost_parts_usd": {k: money.format_usd(v) for k, v in parts.items()},
        "service_tier": service_tier, "rows": [price_row], "other_providers": others,
    }  # fmt: skip
    if fmt is Format.json:
        emit([], fmt, payload=payload)
        return
    tokens = {"input": usage.uncached_input_tokens, "cache_read": usage.cache_read_tokens,
              "cache_write": usage.cache_write_tokens, "output": usage.output_tokens, "request": None,
              "tools": usage.web_searches + usage.file_searches}  # fmt: skip
    lines = [{"part": k, "tokens": tokens[k], "cost_usd": money.format_usd(v)} for k, v in parts.items()]
    lines += [{"part": "total (exact)", "tokens": usage.total_tokens, "cost_usd": totals["cost_usd"]},
              {"part": "total (recorded, to the pico-dollar)", "tokens": None, "cost_usd": totals["cost_usd_recorded"]},
              {"part": "total (rounded to the cent)", "tokens": None, "cost_usd": totals["cost_usd_rounded"]}]  # fmt: skip
    notes = []
    if cost.tool_fee_unpriced:
        notes.append("warning: the price row has no rate for these tool calls: they are not in the cost (flagged)")
    if service_tier and service_tier["flagged"]:
        notes.append(f"warning: {service_tier['note']} (flagged)")
    if others:
        notes.append(f"also priced under: {', '.join(others)} (choose with --provider)")
    if fmt is Format.csv:
        emit(lines, fmt)
        for note in notes:
            typer.echo(note, err=True)
        return
    emit(lines, fmt, title=f"Cost of {model} under {name} at {_iso(when)} (USD)")
    if applied is not None:
        tier_text = f"above {applied.above_input_tokens} input tokens: applied to every token of the call"
    else:
        tier_text = "not reached" if row.tiers else "none"
    fields = [("id", row.id), ("provider / model", f"{row.provider} / {row.model}"), ("source", row.source),
              ("effective", f"{price_row['effective_from']} to {price_row['effective_to'] or 'now'}"),
              *((f"{f} (applied)", price_row["rates_applied"][f] or _UNSET[f]) for f in _FIELDS),
              ("per_request (applied)", price_row["rates_applied"]["per_request"] or "none"),
              ("long-context tier", tier_text)]  # fmt: skip
    emit([{"field": k, "value": "" if v is None else v} for k, v in fields], fmt,
         title="Price row used (USD per million tokens)", footer="\n".join(notes) or None)  # fmt: skip


def _candidates(cfg: Any, catalog: Any, provider: str | None) -> list[tuple[str, tuple[str, ...]]]:
    """(provider name, the catalog ids its prices are looked up under), in the order they are tried."""
    if provider:
        return [(provider, cfg.price_catalogs(provider) if provider in cfg.providers else (provider,))]
    out = [(name, cfg.price_catalogs(name)) for name in cfg.providers]
    ids = {r.provider for r in catalog.rows()}
    ordered = [p for p in _PREFERRED if p in ids] + sorted(ids - set(_PREFERRED))
    out += [(p, (p,)) for p in ordered if p not in cfg.providers]
    return out


def _others(catalog: Any, model: str, when: datetime, used: str) -> list[str]:
    """The other catalog providers whose own data prices ``model`` at ``when``."""
    out = []
    for p in sorted({r.provider for r in catalog.rows()} - {used}):
        key = catalog.resolve(p, model)
        if key is not None and key[0] == p and catalog.lookup([p], model, when) is not None:
            out.append(p)
    return out


def _dec(v: Any) -> str | None:
    return None if v is None else format(v, "f")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@app.command("update")
def update(
    url: Annotated[str | None, typer.Option(
        "--url", help="Where to download genai-prices' data file. Default: the config's pricing.update_url, else "
                      "genai-prices' published file on GitHub.")] = None,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:  # fmt: skip
    """Download genai-prices' latest data, check it, and install it for the catalog (the old file is kept).

    Offline, or when the download is cut short or is not valid genai-prices data, nothing changes.
    """
    from tokenops.pricing.datafile import update_data

    cfg = load(config)
    result = update_data(url or cfg.pricing.update_url)
    payload = {"url": result.url, "path": str(result.path), "changed": result.changed,
               "previous": str(result.previous) if result.previous else None, "providers": result.providers,
               "models": result.models, "price_rows": result.rows, "sha256": result.sha256, "bytes": result.size}  # fmt: skip
    if fmt is not Format.table:
        emit([payload], fmt, payload=payload)
        return
    if not result.changed:
        typer.echo(f"already up to date: {result.path} is the same as {result.url} ({result.models} models)")
        return
    typer.echo(f"installed {result.path}: {result.providers} providers, {result.models} models, "
               f"{result.rows} price rows (sha256 {result.sha256[:12]}) from {result.url}")  # fmt: skip
    if result.previous:
        typer.echo(f"the previous file is kept as {result.previous}")
