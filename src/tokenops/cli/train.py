"""``tokenops train router``: fit the difficulty router to rows of your own traffic (the rows ``tokenops evaluate
router`` reads; ``tokenops evaluate models --rows-out`` writes them) and write a weights file for
``routing.auto.model_file``. See :mod:`tokenops.optimize.train_router` for the model and the choice."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenops.cli.common import Format, emit
from tokenops.cli.evaluate_router import ReportFormat
from tokenops.errors import UsageError

app = typer.Typer(help="Fit the difficulty router to your own labelled prompts.", no_args_is_help=True)


@app.command("router")
def router(
    data: Annotated[Path, typer.Option(
        "--data", help='JSON Lines: {"id", "prompt", "scores": {model: 0..1}} (as for tokenops evaluate router).',
        dir_okay=False)],
    strong: Annotated[str, typer.Option("--strong", help="The strong (expensive) model, as named in the rows.")],
    weak: Annotated[str, typer.Option("--weak", help="The weak (cheap) model, as named in the rows.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The weights file to write (gzip JSON), for "
                                      "routing.auto.model_file.", dir_okay=False)],
    folds: Annotated[int, typer.Option("--folds", min=3, max=10, help="Cross-validation folds (by row id).")] = 5,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="Output format.")] = ReportFormat.table,
) -> None:  # fmt: skip
    """Fit the difficulty router to your rows; keep it only if it beats the packaged router by cross-validation."""
    from tokenops.optimize.evaluate_router import read_rows
    from tokenops.optimize.train_router import train, weights_bytes

    if strong == weak:
        raise UsageError("--strong and --weak name the same model")
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory")
    rows = read_rows(data, strong, weak)
    trained = train(rows, folds=folds, meta={"data": data.name, "strong": strong, "weak": weak})
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(weights_bytes(trained.router))
        os.replace(tmp, out)  # a reader never sees half a file
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    mean = trained.mean
    payload: dict[str, Any] = {
        "n": trained.n, "folds": trained.folds, "chosen": trained.chosen, "out": str(out),
        "cv_apgr": {"packaged": round(mean(trained.packaged), 4), "prior": round(mean(trained.prior), 4),
                    "fitted": round(trained.best.cv_apgr, 4)},
        "fold_apgr": {"packaged": [round(x, 4) for x in trained.packaged], "prior": [round(x, 4) for x in trained.prior],
                      "fitted": [round(x, 4) for x in trained.best.folds]},
        "params": {"lambda_hand": trained.best.lambda_hand, "lambda_grams": trained.best.lambda_grams},
        "ngram_weights": len(trained.router.ngram_weights),
    }  # fmt: skip
    if fmt is ReportFormat.json:
        emit([], Format.json, payload=payload)
        return
    why = {"fitted": "the fitted router beat the packaged one and the prior alone on the folds",
           "packaged": "the fitted router did not beat the packaged one by more than the folds' noise: the file "
                       "holds the packaged router",
           "prior": "the fitted router did not beat the prior by more than the folds' noise: the file holds the "
                    "prior alone (the rule router)"}[trained.chosen]  # fmt: skip
    typer.echo(f"{data}: {trained.n} rows, {strong} (strong) vs {weak} (weak); {trained.folds}-fold "
               "cross-validation by row id")  # fmt: skip
    typer.echo("APGR by fold (0.5 is a random router; the fitted one's is optimistic: its penalties were chosen on "
               "these folds)")  # fmt: skip
    for name, values in payload["fold_apgr"].items():
        typer.echo(f"  {name:<9} mean {payload['cv_apgr'][name]:.4f}   " + "  ".join(f"{x:.3f}" for x in values))
    typer.echo(f"chosen: {trained.chosen}: {why}")
    typer.echo(f"wrote {out}: use it with routing.auto.model_file, measure it on rows it never saw with "
               f"tokenops evaluate router --model {out}")  # fmt: skip
    if trained.n < 500:
        typer.echo(f"note: {trained.n} rows is few: fold figures this size move by several points of APGR")

