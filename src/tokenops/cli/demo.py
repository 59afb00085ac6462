"""``tokenops demo``: the whole product on this machine, no setup, no network."""

from __future__ import annotations

from typing import Annotated

import typer


def demo(
    directory: Annotated[str, typer.Option("--dir", help="Where the demo keeps its config and ledger.")] = "tokenops-demo",
    port: Annotated[int, typer.Option(help="Gateway port (0: any free port).", min=0, max=65535)] = 8787,
    days: Annotated[int, typer.Option(help="Days of history to backfill.", min=1, max=365)] = 30,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Keep the gateway running until Ctrl-C.")] = True,
    keep: Annotated[bool, typer.Option("--keep", help="Keep an earlier demo's ledger instead of starting afresh.")] = False,
) -> None:
    """Start a fake provider and the gateway, backfill history, send live calls, print a report."""
    from tokenops.demo import run_demo

    run_demo(directory=directory, port=port, days=days, wait=wait, keep=keep)
