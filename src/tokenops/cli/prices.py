"""``tokenops prices list|show``: the price catalog (genai-prices plus the config's ``prices:`` rows)."""

from __future__ import annotations

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
        if r.in_force(now) and (search is None or search.lower() in r.model.lower())
    ]
    if provider and not rows:
        raise UsageError(f"no prices for provider {provider!r} (try without --provider, or --search)")
    emit(rows, fmt, title="Prices (USD per million tokens)", payload={"prices": rows},
         columns=["provider", "model", "input_per_mtok", "cache_read_per_mtok", "cache_write_5m_per_mtok",
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
         "tiers": tiers}, columns=["provider", "model", *_FIELDS, "effective_from", "effective_to", "source"])  # fmt: skip
    if tiers and fmt is Format.table:
        emit(tiers, fmt, title="Long-context tiers (whole call priced at the tier when the prompt is larger)")
