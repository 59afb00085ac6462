"""``tokenops approvals list|approve|deny``: the approval workflow for expensive models and budgets."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, drain, emit, ledger_for, load
from tokenops.errors import UsageError
from tokenops.timespec import parse_time

app = typer.Typer(help="Approve or deny calls that need a person's yes.", no_args_is_help=True)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="Only pending | approved | denied | expired.")] = None,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List approval requests, newest first."""
    from tokenops.services.approvals import list_approvals

    if status is not None and status not in ("pending", "approved", "denied", "expired"):
        raise UsageError("--status must be pending, approved, denied or expired")
    cfg = load(config)
    ledger = ledger_for(cfg)
    drain(cfg, ledger)  # requests the gateway made a moment ago
    rows = [a.to_public() for a in list_approvals(ledger, status)]
    emit(rows, fmt, title="Approvals", payload={"approvals": rows},
         columns=["id", "status", "reason", "model", "key_id", "requested_at", "decided_by", "until", "max_usd"])  # fmt: skip


def _decide(approval_id: str, approve: bool, until: str | None, max_usd: str | None, config: str | None,
            fmt: Format) -> None:  # fmt: skip
    import getpass

    from tokenops.money import usd_setting
    from tokenops.services.approvals import decide

    cfg = load(config)
    ledger = ledger_for(cfg)
    drain(cfg, ledger)
    cap = None
    if max_usd is not None:
        try:
            cap = usd_setting(max_usd, what="--max-usd")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    decided = decide(ledger, approval_id, approve=approve, by=getpass.getuser(),
                     until=parse_time(until, what="--until", future=True), max_usd=cap)  # fmt: skip
    if fmt is Format.json:
        emit([], fmt, payload=decided.to_public())
    else:
        typer.echo(f"{decided.id} {decided.status} by {decided.decided_by}"
                   + (f" until {decided.until:%Y-%m-%d %H:%M} UTC" if decided.until else "")
                   + (f", up to ${decided.max_usd}" if decided.max_usd is not None else "") + ".")  # fmt: skip


@app.command("approve")
def approve(
    approval_id: Annotated[str, typer.Argument(help="The approval request id (apr_…).")],
    until: Annotated[str | None, typer.Option(help="Grant ends at this date/time (ISO) or after 2h, 7d.")] = None,
    max_usd: Annotated[str | None, typer.Option("--max-usd", help="Spend cap of the grant, in USD.")] = None,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Grant a request: its key may make such calls (until a date, up to an amount)."""
    _decide(approval_id, True, until, max_usd, config, fmt)


@app.command("deny")
def deny(
    approval_id: Annotated[str, typer.Argument(help="The approval request id (apr_…).")],
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Deny a request."""
    _decide(approval_id, False, None, None, config, fmt)
