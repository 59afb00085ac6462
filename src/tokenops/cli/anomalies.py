"""``tokenops anomalies``: the anomalies the gateway's watch recorded, or found now with ``--scan``
(:mod:`tokenops.cli.anomalies_list`); ``tokenops anomalies score``: any series scored by the streaming detector
(:mod:`tokenops.analytics.detector`), each row only from itself and the rows before it."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Annotated

import typer

from tokenops.cli import anomalies_list
from tokenops.errors import UsageError

app = typer.Typer(help="Anomalies in spend, tokens, calls, error rates and latency; anomaly scores for any series.")
app.callback(invoke_without_command=True)(anomalies_list.anomalies)  # `tokenops anomalies [--since] [--scope]`


@app.command("score")
def score(
    file: Annotated[Path, typer.Argument(help="CSV with a header and the columns timestamp,value, in time order.",
                                         show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Write timestamp,value,anomaly_score rows here.",
                                         show_default=False)],
) -> None:  # fmt: skip
    """Score every row of FILE from 0 (normal) to 1 (anomalous), as a live detector would: a row's score uses only
    that row and the rows before it. Timestamps and values are written back as they were read."""
    from tokenops.analytics.detector import score_series
    from tokenops.analytics.series import read_series

    # Real exports repeat or step back an hour (daylight saving time, a clock reset; two files of the NAB corpus
    # do): the detector is row-based, so such a file is scored in file order, with a warning.
    try:
        series = read_series(file)
    except UsageError as exc:
        if not _ORDER_PROBLEM.search(str(exc)):
            raise
        typer.echo(f"warning: {exc}; scoring the rows in file order", err=True)
        series = read_series(file, strict_order=False)
    stamps, values, texts = series.timestamps, series.values, series.texts
    scores = score_series(stamps, values)
    try:
        with open(output, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["timestamp", "value", "anomaly_score"])
            for text, value, s in zip(texts, values, scores, strict=True):
                writer.writerow([text, repr(value), f"{s:.6f}"])
    except OSError as exc:
        raise UsageError(f"{output}: cannot write ({exc.strerror or exc})") from None
    typer.echo(f"scored {len(scores)} rows of {file} → {output}", err=True)


_ORDER_PROBLEM = re.compile(r":\d+: timestamp .* (repeats line \d+|is before line \d+'s .*\(rows must be in time order\))$")
