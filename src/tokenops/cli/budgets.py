"""``tokenops budgets set|list|status|delete``: budgets for any scope, from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, drain, emit, ledger_for, load

app = typer.Typer(help="Budgets: money or tokens per scope and period, with thresholds and actions.",
                  no_args_is_help=True)  # fmt: skip


def _threshold(text: str) -> dict[str, Any]:
    """``0.8:downgrade:gpt-4o-mini``, ``0.5`` (alert) or ``1.0:block``."""
    parts = text.split(":")
    out: dict[str, Any] = {"at": parts[0], "action": parts[1] if len(parts) > 1 else "alert"}
    if len(parts) > 2:
        out["model"] = ":".join(parts[2:])
    return out


def _definitions(cfg: Any) -> Any:
    from tokenops.policy.definitions import Definitions

    return Definitions.of(ledger_for(cfg), cfg)


@app.command("set")
def set_(
    name: Annotated[str, typer.Option("--name", "-n", help="Budget name.")],
    scope: Annotated[str, typer.Option(help="Scope: team=alpha,env=prod; also key=ID, user=NAME, model=GLOB.")] = "",
    amount_usd: Annotated[str | None, typer.Option("--amount-usd", help="Amount in USD, e.g. 250.")] = None,
    amount_tokens: Annotated[int | None, typer.Option("--amount-tokens", help="Amount in tokens.")] = None,
    period: Annotated[str, typer.Option(help="day | week | month | quarter | custom")] = "month",
    timezone: Annotated[str, typer.Option("--timezone", "--tz", help="IANA time zone of the period.")] = "UTC",
    start: Annotated[str | None, typer.Option(help="Start of a custom period (ISO date).")] = None,
    end: Annotated[str | None, typer.Option(help="End (exclusive) of a custom period (ISO date).")] = None,
    hard: Annotated[bool, typer.Option("--hard/--soft", help="A hard budget blocks calls at 100%.")] = False,
    threshold: Annotated[list[str] | None, typer.Option("--threshold", "-t",
                         help="AT[:ACTION[:MODEL]], repeatable: 0.5  0.8:downgrade:gpt-4o-mini  0.9:require_approval  1.0:block")] = None,  # fmt: skip
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create or replace a budget. A running gateway picks it up within a few seconds."""
    import getpass

    cfg = load(config)
    definition: dict[str, Any] = {"scope": scope, "period": period, "timezone": timezone, "hard": hard,
                                  "thresholds": [_threshold(t) for t in threshold or []]}  # fmt: skip
    for key, value in (("amount_usd", amount_usd), ("amount_tokens", amount_tokens), ("start", start), ("end", end)):
        if value is not None:
            definition[key] = value
    definitions = _definitions(cfg)
    budget = definitions.validate("budget", name, definition)
    public = budget.to_public()
    stored = {**public, "scope": budget.scope.as_dict(), "amount_usd": amount_usd, "amount_tokens": amount_tokens}
    stored = {k: v for k, v in stored.items() if k not in ("unit", "amount", "name") and v is not None}
    if budget.custom_window():
        stored["start"], stored["end"] = (d.isoformat() for d in budget.custom_window())
    definitions.put("budget", name, stored, by=getpass.getuser())
    if fmt is Format.json:
        emit([], fmt, payload=public)
    else:
        per = "from " + " to ".join(d.date().isoformat() for d in budget.custom_window() or ()) if period == "custom" \
            else f"per {period}"
        typer.echo(f"Budget {name} set: {public['amount']} {public['unit']} {per} for {budget.scope}.")


@app.command("list")
def list_(config: ConfigOption = None, fmt: FormatOption = Format.table) -> None:
    """List budgets from the config file and those set with the CLI/API."""
    cfg = load(config)
    rows = [{**b.to_public(), "source": src} for b, src in _definitions(cfg).all("budget")]
    shown = rows if fmt is Format.json else [
        {**r, "thresholds": " ".join(f"{t['at']:g}:{t['action']}{':' + t['model'] if t.get('model') else ''}"
                                     for t in r["thresholds"])} for r in rows]  # fmt: skip
    emit(shown, fmt, title="Budgets", payload={"budgets": rows},
         columns=["name", "scope", "amount", "unit", "period", "timezone", "hard", "thresholds", "source"])  # fmt: skip


@app.command("status")
def status(config: ConfigOption = None, fmt: FormatOption = Format.table) -> None:
    """Spent, remaining, forecast at period end and threshold states for each budget, this period.

    Every budget of the config and the ledger is shown, from the ledger's figures; where this config's gateway
    answers (and proves it serves this ledger), its live figures replace them (calls in flight included)."""
    from tokenops.services.reports import budget_statuses

    cfg = load(config)
    ledger = ledger_for(cfg)
    drain(cfg, ledger)
    rows = {r["name"]: r for r in budget_statuses(ledger, cfg)}
    rows.update(_live_status(cfg, ledger))
    table_rows = [{**r, "thresholds": " ".join(f"{t['at']:g}:{t['action']}{'✓' if t['reached'] else ''}"
                                               for t in r["thresholds"])} for r in rows.values()]  # fmt: skip
    emit(table_rows, fmt, title="Budget status (this period)", payload={"budgets": list(rows.values())},
         columns=["name", "scope", "unit", "amount", "spent", "remaining", "forecast_at_period_end", "used_fraction",
                  "thresholds", "period_end"])  # fmt: skip


def _live_status(cfg: Any, ledger: Any) -> dict[str, dict[str, Any]]:
    """Live figures (reservations of calls in flight included) from the gateway this config runs, when it answers
    on gateway.host:port, proves it serves this ledger (see tokenops.ledger.identity), and the config has the admin
    key. Nothing is sent to a listener that cannot prove it; its answers are never shown."""
    if cfg.admin_key is None:
        return {}
    import httpx

    from tokenops.ledger.identity import new_challenge, verify

    host = "127.0.0.1" if cfg.gateway.host in ("0.0.0.0", "::") else cfg.gateway.host
    base = f"http://{host}:{cfg.gateway.port}"
    challenge = new_challenge()
    try:
        r = httpx.get(f"{base}/readyz", params={"challenge": challenge}, timeout=2)
        proof = r.json().get("identity") if r.headers.get("content-type", "").startswith("application/json") else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return {}
    if not verify(ledger.identity_secret(), challenge, proof):
        typer.secho(f"warning: {base} answers but does not prove it serves {cfg.ledger}; the admin key was not sent "
                    "to it and the figures below are the ledger's", err=True, fg="yellow")  # fmt: skip
        return {}
    try:
        r = httpx.get(f"{base}/v1/admin/budgets", timeout=2,
                      headers={"authorization": f"Bearer {cfg.admin_key.get_secret_value()}"})  # fmt: skip
        budgets = r.json()["budgets"] if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return {}
    return {b["name"]: b for b in budgets if isinstance(b, dict) and isinstance(b.get("name"), str)}


@app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="Budget name.")], config: ConfigOption = None) -> None:
    """Delete a budget set with the CLI/API (config-file budgets are changed in the file)."""
    _definitions(load(config)).delete("budget", name)
    typer.echo(f"Deleted budget {name}.")
