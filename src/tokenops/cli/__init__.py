"""The ``tokenops`` command: one module per command group, heavy imports inside the commands.

Errors a user can fix (config, arguments, a busy ledger) print one line naming what is wrong and exit 2;
no traceback.
"""

from __future__ import annotations

import sys

import typer

from tokenops.cli import approvals, budgets, demo, evaluate, keys, ledger, prices, recommend, report, serve

app = typer.Typer(
    name="tokenops",
    help="TokenOps: see, attribute and govern every dollar of LLM spend.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(report.app, name="report")
app.add_typer(prices.app, name="prices")
app.add_typer(budgets.app, name="budgets")
app.add_typer(approvals.app, name="approvals")
app.add_typer(ledger.app, name="ledger")
app.add_typer(evaluate.app, name="evaluate")
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
app.command("recommend")(recommend.recommend)


@app.command("version")
def version() -> None:
    """Print the TokenOps version."""
    from tokenops import __version__

    typer.echo(__version__)


def main() -> None:
    from tokenops.errors import TokenOpsError

    try:
        app()
    except TokenOpsError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
