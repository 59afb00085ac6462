"""``tokenops forecast``: forecasts with an 80 % prediction interval, the model chosen and the interval calibrated
by a rolling-origin backtest (:mod:`tokenops.analytics.forecast`).

``tokenops forecast series FILE.csv --horizon N`` forecasts a ``timestamp,value`` file; the group's callback is
where forecasting the ledger's own spend (``--scope``) goes.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption
from tokenops.errors import UsageError

if TYPE_CHECKING:
    from tokenops.analytics.forecast import Forecast

app = typer.Typer(help="Forecast spend (or any series) with prediction intervals chosen and calibrated by backtest.",
                  invoke_without_command=True, no_args_is_help=False)  # fmt: skip


@app.callback()
def forecast_group(
    ctx: typer.Context,
    scope: Annotated[str, typer.Option("--scope", help="The ledger's spend to forecast: team=search,env=prod "
                                       "(default: all spend).")] = "",
    horizon: Annotated[str | None, typer.Option("--horizon", help="How far: 90d, 12w, 3m, 1q or days.")] = None,
    move: Annotated[str | None, typer.Option("--move", help="What if: move a share of one model's calls to "
                                             "another, 30%:gpt-4o=gpt-4o-mini.")] = None,
    price_change: Annotated[str | None, typer.Option("--price-change", help="What if: every price changes by "
                                                     "+10% or -25%.")] = None,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Forecast spend (or any series) with prediction intervals chosen and calibrated by backtest.

    `tokenops forecast --scope team=search --horizon 90d` forecasts the ledger's daily spend of a scope, applies
    known future price changes, and suggests a budget with the planning buffer; `tokenops forecast series FILE`
    forecasts any timestamp,value file."""
    if ctx.invoked_subcommand is not None:
        return
    if horizon is None:
        if scope or move is not None or price_change is not None:
            raise UsageError("--horizon is required: how far to forecast (90d, 12w, 3m, 1q)")
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from tokenops.cli.planning import forecast_scope

    forecast_scope(scope, horizon, move, price_change, config, fmt)


class SeriesFormat(StrEnum):
    table = "table"
    json = "json"


class Aggregate(StrEnum):
    sum = "sum"
    mean = "mean"


class Fill(StrEnum):
    interpolate = "interpolate"
    zero = "zero"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.I)
_UNIT = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_step(text: str, *, what: str = "--step") -> timedelta:
    """``30s``, ``5m``, ``1h``, ``1d``, ``1w`` as a positive timedelta."""
    m = _DURATION.match(text)
    try:
        step = timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2).lower()]) if m else timedelta(0)
    except OverflowError:
        raise UsageError(f"{what}: {text!r} is longer than timestamps reach") from None
    if step <= timedelta(0):  # also one below a microsecond, which a timestamp cannot step by
        raise UsageError(f"{what}: {text!r} is not a step (e.g. 5m, 1h, 1d, 1w)")
    return step


@app.command("series")
def series(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="CSV with a header and the columns timestamp,value (ISO 8601 "
                                              "timestamps, one row per step).", show_default=False)],
    horizon: Annotated[int, typer.Option("--horizon", "-n", min=1, help="Steps to forecast.", show_default=False)],
    fmt: Annotated[SeriesFormat, typer.Option("--format", "-f", help="Output format.")] = SeriesFormat.table,
    level: Annotated[int, typer.Option("--level", min=1, max=99, help="Prediction interval, %.")] = 80,
    step: Annotated[str | None, typer.Option(
        "--step", help="The series' step (5m, 1h, 1d…); default: the most common gap between rows.")] = None,
    resample: Annotated[Aggregate | None, typer.Option(
        "--resample", help="Aggregate the rows onto the --step grid first (sum: spend, counts; mean: a gauge), "
                           "for irregular timestamps or a coarser step.")] = None,
    fill: Annotated[Fill, typer.Option(
        "--fill", help="Missing steps: interpolate between neighbours, or zero (no row = nothing spent).")
    ] = Fill.interpolate,
    nonnegative: Annotated[bool | None, typer.Option(
        "--nonnegative/--allow-negative", help="Clip forecasts at 0 (default: when no value is negative).",
        show_default=False)] = None,
) -> None:  # fmt: skip
    """Forecast the next HORIZON steps of a timestamp,value CSV file with a prediction interval.

    The model (seasonal naive, AutoETS, AutoTheta, MSTL or their ensemble) is chosen by a rolling-origin backtest on the file itself, and the interval is scaled so that it covers LEVEL % of the backtest's errors.

    Timestamps continue the file's step, written like the file's. JSON: {"forecast": [{"timestamp", "value", "lo", "hi"}, …], "total": …, "model": …, "notes": […]}.
    """  # one line per paragraph: the help wraps them
    from tokenops.analytics.forecast import IrregularStepsError, forecast, forecast_total
    from tokenops.analytics.forecast import resample as regrid
    from tokenops.analytics.series import read_series

    data = read_series(file)
    grid = parse_step(step) if step is not None else None
    stamps, values = data.timestamps, data.values
    pre_notes: list[str] = []
    if resample is not None:
        grid = grid or data.step()
        if grid is None:
            raise UsageError("--resample needs --step for a single row")
        stamps, values = regrid(stamps, values, grid, resample.value)
        pre_notes.append(f"resampled {len(data)} rows onto {len(stamps)} steps of {_describe(grid)} "
                         f"({resample.value})")  # fmt: skip
    try:
        fc = forecast(stamps, values, horizon, level=level, step=grid, nonnegative=nonnegative, fill=fill.value)
    except IrregularStepsError as exc:
        where = f"{data.path}:{data.lines[exc.index]}" if resample is None else data.path
        raise UsageError(f"{where}: {exc} (e.g. --resample sum --step 1h)") from None
    except UsageError as exc:
        raise UsageError(f"{data.path}: {exc}") from None
    sample = data.texts[-1]
    total = forecast_total(fc)
    if not all(math.isfinite(x) for p in fc.points for x in (p.value, p.lo, p.hi, total.value, total.lo, total.hi)):
        raise UsageError(f"{data.path}: values too large to forecast (the forecast overflows a float)")
    points = [{"timestamp": format_like(p.timestamp, sample), "value": _num(p.value), "lo": _num(p.lo),
               "hi": _num(p.hi)} for p in fc.points]  # fmt: skip
    notes = pre_notes + fc.notes
    if fmt is SeriesFormat.json:
        import sys

        import orjson

        payload: dict[str, Any] = {
            "forecast": points, "model": fc.model, "level": fc.level,
            "step": _describe(fc.step) if fc.step else None, "season_lengths": list(fc.season_lengths),
            "total": {"value": _num(total.value), "lo": _num(total.lo), "hi": _num(total.hi), "steps": total.steps},
            "backtest": _backtest(fc), "notes": notes,
        }  # fmt: skip
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    _table(fc, points, total, notes)


def _describe(step: timedelta) -> str:
    from tokenops.analytics.forecast import describe_step

    return describe_step(step)


def _num(x: float) -> float:
    return float(f"{x:.10g}") if math.isfinite(x) else x


def _backtest(fc: Forecast) -> dict[str, Any] | None:
    b = fc.backtest
    if b is None:
        return None
    return {"window": b.horizon, "windows": b.origins, "points": b.points,
            "relative_mae": {k: round(v, 4) for k, v in b.scores.items()},
            "interval_scale": round(b.scale, 4), "coverage_before": round(b.raw_coverage, 4),
            "coverage": round(b.coverage, 4)}  # fmt: skip


def _fmt(x: float) -> str:
    a = abs(x)
    if a >= 1e15 or (0 < a < 1e-4):
        return f"{x:.4g}"
    digits = 2 if a >= 100 else 4 if a >= 1 else 6
    return f"{x:,.{digits}f}"


def _table(fc: Forecast, points: list[dict[str, Any]], total: Any, notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Forecast: {fc.model}, {fc.level} % interval")
    table.add_column("timestamp")
    for c in ("value", "lo", "hi"):
        table.add_column(c, justify="right")
    for p in points:
        table.add_row(p["timestamp"], _fmt(p["value"]), _fmt(p["lo"]), _fmt(p["hi"]))
    console = Console()
    console.print(table)
    console.print(f"total over {total.steps} steps: {_fmt(total.value)} ({fc.level} % between {_fmt(total.lo)} and "
                  f"{_fmt(total.hi)})", soft_wrap=True)  # fmt: skip
    b = fc.backtest
    if b is not None:
        console.print(f"backtest: {b.origins} windows of {b.horizon} step{'s' * (b.horizon != 1)}; MAE relative to seasonal naive "
                      + ", ".join(f"{k} {v:.3f}" for k, v in b.scores.items())
                      + f"; interval scaled ×{b.scale:.2f}, covering {100 * b.coverage:.0f} % of {b.points} "
                      f"backtest points ({100 * b.raw_coverage:.0f} % before)", soft_wrap=True, markup=False)  # fmt: skip
    for n in notes:
        console.print(f"note: {n}", soft_wrap=True, markup=False)


_STYLE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:(?P<sep>[T ])(?P<hh>\d{2})(?::(?P<mm>\d{2}))?(?::(?P<ss>\d{2}))?"
                    r"(?:[.,](?P<frac>\d+))?)?\s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?$")  # fmt: skip


def format_like(dt: datetime, sample: str) -> str:
    """``dt`` written in the style of ``sample`` (a timestamp as the input file wrote it): date only, ``T`` or
    space, minutes/seconds/fraction, ``Z`` or ``+HH:MM``; more precision where ``dt`` needs it."""
    m = _STYLE.match(sample.strip())
    if m is None:
        return dt.isoformat()
    midnight = (dt.hour, dt.minute, dt.second, dt.microsecond) == (0, 0, 0, 0)
    day = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"  # not strftime's %Y: year 1 is "0001", not "1"
    if m.group("sep") is None and midnight:
        out = day
    else:
        out = day + (m.group("sep") or " ") + dt.strftime("%H:%M")
        frac = len(m.group("frac") or "")
        if m.group("ss") is not None or m.group("sep") is None or dt.second or dt.microsecond or frac:
            out += dt.strftime(":%S")
        if frac or dt.microsecond:
            digits = max(frac, 1 if dt.microsecond else 0)
            micro = f"{dt.microsecond:06d}"
            if dt.microsecond and len(micro.rstrip("0")) > digits:
                digits = len(micro.rstrip("0"))
            out += "." + (micro + "0" * max(0, digits - 6))[:digits]
    off = dt.utcoffset()
    if off is not None:
        tz = m.group("tz") or ""
        if tz in ("Z", "z") and off == timedelta(0):
            out += tz
        else:
            secs = int(off.total_seconds())
            sign = "-" if secs < 0 else "+"
            hh, mm = divmod(abs(secs) // 60, 60)
            out += f"{sign}{hh:02d}:{mm:02d}" if (":" in tz or not tz or tz in ("Z", "z")) else f"{sign}{hh:02d}{mm:02d}"
    return out
