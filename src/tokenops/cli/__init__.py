"""The ``tokenops`` command: one module per command group, heavy imports inside the commands.

Errors a user can fix (config, arguments, a busy ledger) print one line naming what is wrong and exit 2;
no traceback.
"""

from __future__ import annotations

import sys

import typer

from tokenops.cli import (
    anomalies,
    approvals,
    budgets,
    demo,
    evaluate,
    export,
    forecast,
    imports,
    keys,
    ledger,
    planning,
    prices,
    recommend,
    report,
    serve,
    train,
)

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
app.add_typer(imports.app, name="import")
app.add_typer(export.app, name="export")
app.add_typer(anomalies.app, name="anomalies")
app.add_typer(forecast.app, name="forecast")
app.add_typer(planning.plan_app, name="plan")
app.add_typer(train.app, name="train")
report.app.command("variance")(planning.variance)
report.app.command("portfolio")(planning.portfolio)
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
