"""Forecasts of a regular time series with an 80 % (or any) prediction interval, chosen and calibrated by a
rolling-origin backtest on the series itself.

The method, step by step (:func:`forecast`):

1. **Regular grid.** The step is the most common gap between consecutive instants (or the ``step`` given).
   Timestamps with a UTC offset are ordered and spaced by the instant they name, so hourly data across a
   daylight-saving change is regular. A timestamp up to 10 % of a step off the grid (a daily series written at
   local midnight across a DST change is 1 h off) is snapped to it; one further off is an
   :class:`IrregularStepsError` (resample first: :func:`resample`). Missing steps are filled by linear
   interpolation (``fill="interpolate"``) or with zero (``fill="zero"``, right for spend: no row, no spend);
   the notes say how many.
2. **Seasons from the step.** Sub-hourly data may have an hourly season (60 one-minute steps), sub-daily data a
   daily one (24 hours), sub-weekly data a weekly one (7 days, 168 hours), daily data a yearly one (365). A season
   of ``m`` steps is used only when the history holds at least three of them (``3 m`` steps) and ``m <= 1440``;
   otherwise the notes say the history is too short for it. At most the last ``max_history`` steps are used
   (at least four of the longest season), which bounds the run time (a second or two on 1000 hourly steps).
3. **Candidates** (statsforecast, Nixtla): seasonal naive at each season (naive without one); AutoETS
   (exponential smoothing, error/trend/season chosen by AICc, damped trends included) with the longest season
   of at most 24 steps; AutoTheta with the same season; MSTL (every season removed by STL, the remainder's
   trend forecast by a non-seasonal AutoETS); and the mean of the last three (``Ensemble``), whose interval is
   the mean of theirs.
4. **Selection by rolling-origin backtest.** The last few windows of the history (three to five, each of the
   requested horizon, shorter where the history is short) are forecast from the data before them; the
   candidate with the lowest mean absolute error over them is chosen. A series too short to backtest gets
   AutoETS (or a naive forecast under ten steps).
5. **Interval calibration.** A model's own interval assumes the model is right. Across the backtest windows
   (up to ten for the chosen model, each forecast from at least half the history) each error is divided by the
   interval's half-width on its side, and the interval is scaled by the ``level`` quantile of those ratios
   (split-conformal, with the finite-sample correction). Widening is applied in full; narrowing is shrunk
   towards 1 (``min(scale ** (w / (w + 2)), 2 scale)`` for ``w`` windows), because the errors within one window are
   correlated (few independent samples) and the windows that chose the model flatter it. Out of sample, on the
   85 windows of ``bench/forecast.py``, full narrowing covered 75 % of the points instead of 80 %; ``w + 5``,
   86 %; ``w + 2`` (the constant chosen there), 81 %. ``Forecast.backtest`` keeps the scores, the scale and the
   backtest coverage before and after.
6. **Clipping.** When the history is never negative (``nonnegative=None``), forecasts and bounds below zero are
   set to zero: spend cannot be negative.

Degenerate input does not fail: a single point gives a flat forecast with a zero-width interval (nothing to
estimate a spread from; the notes say so); two to nine steps give a naive forecast whose interval grows with the
spread of the step-to-step changes; a constant history (all zeros, say) gives that constant.

The total over a horizon (:func:`forecast_total`, "the next 90 days will cost X, 80 % between A and B") is
not the sum of the per-step bounds, which would assume every step errs fully in the same direction. The
per-step errors are taken as Gaussian with the calibrated per-step spread (``Forecast.sigma``) and one
correlation ``rho`` between any two steps (``Forecast.error_correlation``: a shared error of the level, as when
a forecast misses a level shift, plus independent noise). ``rho`` is estimated on the backtest windows as the
sum over windows of the cross products ``e_i e_j`` (i != j) of the errors, over the same sum for the
calibrated spreads, clipped to [0, 0.99] and shrunk towards 0.5 by three windows' worth (few windows estimate
it loosely). The total's variance is ``(1 - rho) sum sigma_i^2 + rho (sum sigma_i)^2``: between independent
steps (rho = 0) and the sum of the per-step bounds (rho = 1).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

from tokenops.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    Array = np.ndarray[Any, np.dtype[np.float64]]

SNAP_TOLERANCE = 0.1  # of a step: how far off the grid a timestamp may be and still be snapped to it
MAX_SEASON = 1440
MIN_SEASON_CYCLES = 3
MAX_HISTORY = 1000
MAX_CAL_WINDOWS = 10
RHO_PRIOR = 3  # windows' worth of belief in a middle correlation (0.5) of the errors of one window's steps
NARROW_PRIOR = 2  # windows' worth of belief in the model's own interval width, against narrowing it
MIN_MODEL_STEPS = 10  # below this: a naive forecast, no models, no backtest
MAX_GRID = 5_000_000

Fill = Literal["interpolate", "zero"]


@dataclass(frozen=True)
class ForecastPoint:
    timestamp: datetime
    value: float
    lo: float
    hi: float


@dataclass(frozen=True)
class Backtest:
    """How the model was chosen and its interval calibrated (rolling origin over the end of the history)."""

    horizon: int  # the length of each backtest window (the requested horizon, or less for a short history)
    origins: int  # windows used to choose the model
    scores: dict[str, float]  # candidate -> mean absolute error over those windows, relative to seasonal naive's
    points: int  # forecast points used for the interval's calibration
    scale: float  # the factor the chosen model's own interval was scaled by
    raw_coverage: float  # share of those points inside the model's own interval
    coverage: float  # ... inside the calibrated interval (close to the level by construction)


@dataclass(frozen=True)
class Forecast:
    points: list[ForecastPoint]
    model: str
    level: int
    season_lengths: tuple[int, ...]
    notes: list[str]
    step: timedelta | None = None
    sigma: tuple[float, ...] = ()  # per-step standard deviation of the error (calibrated, before clipping)
    error_correlation: float = 0.0  # correlation of any two steps' errors (for totals)
    nonnegative: bool = False
    backtest: Backtest | None = None

    def to_json(self) -> dict[str, Any]:
        return {"forecast": [{"timestamp": p.timestamp.isoformat(), "value": p.value, "lo": p.lo, "hi": p.hi}
                             for p in self.points]}  # fmt: skip


@dataclass(frozen=True)
class ForecastTotal:
    value: float
    lo: float
    hi: float
    level: int
    steps: int


class IrregularStepsError(UsageError):
    """The timestamps do not sit on a regular grid; ``index`` is the first row off it."""

    def __init__(self, message: str, *, index: int):
        self.index = index
        super().__init__(message)


# --------------------------------------------------------------------------------------------------- the grid


def _instant(dt: datetime) -> datetime:
    return dt.astimezone(UTC) if dt.tzinfo is not None else dt


def _check(timestamps: Sequence[datetime], values: Sequence[float]) -> None:
    if len(timestamps) != len(values):
        raise UsageError(f"{len(timestamps)} timestamps but {len(values)} values")
    if not values:
        raise UsageError("no data to forecast")
    if len({dt.tzinfo is None for dt in timestamps}) > 1:
        raise UsageError("timestamps mix naive ones and ones with a UTC offset")
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise UsageError(f"value {i + 1} ({v!r}) is not a finite number")
    for i in range(1, len(timestamps)):
        if _instant(timestamps[i]) <= _instant(timestamps[i - 1]):
            raise UsageError(f"timestamps must increase: {timestamps[i].isoformat()} (row {i + 1}) is not after "
                             f"{timestamps[i - 1].isoformat()}")  # fmt: skip


def infer_step(timestamps: Sequence[datetime]) -> timedelta | None:
    """The most common gap between consecutive instants (None for fewer than two)."""
    if len(timestamps) < 2:
        return None
    inst = [_instant(t) for t in timestamps]
    return Counter(b - a for a, b in zip(inst, inst[1:], strict=False)).most_common(1)[0][0]


def describe_step(step: timedelta) -> str:
    s = step.total_seconds()
    for unit, n in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if s >= n and s % n == 0:
            k = int(s // n)
            return f"{k} {unit}s" if k != 1 else f"1 {unit}"
    return f"{s:g} seconds"


def _regularize(timestamps: Sequence[datetime], values: Sequence[float], step: timedelta,
                fill: Fill) -> tuple[list[float], list[str]]:  # fmt: skip
    """The values on the grid first timestamp + k * step (k = 0 .. last), filled where rows are missing."""
    s = step.total_seconds()
    if s <= 0:
        raise UsageError(f"the step must be positive (got {step})")
    t0 = _instant(timestamps[0])
    slots: list[int] = []
    worst = 0.0
    for i, t in enumerate(timestamps):
        pos = (_instant(t) - t0).total_seconds() / s
        k = round(pos)
        off = abs(pos - k)
        if off > SNAP_TOLERANCE or (slots and k <= slots[-1]):
            prev = timestamps[i - 1]
            raise IrregularStepsError(
                f"irregular steps: the series steps by {describe_step(step)} but {t.isoformat()} is "
                f"{describe_step(_instant(t) - _instant(prev))} after {prev.isoformat()} (not a whole number of "
                "steps); resample it to a regular step first", index=i)  # fmt: skip
        worst = max(worst, off)
        slots.append(k)
    n = slots[-1] + 1
    if n > MAX_GRID:
        raise UsageError(f"the series spans {n} steps of {describe_step(step)}: too many to forecast")
    notes: list[str] = []
    if worst > 1e-9:
        snapped = sum(1 for i, t in enumerate(timestamps)
                      if abs((_instant(t) - t0).total_seconds() / s - slots[i]) > 1e-9)  # fmt: skip
        notes.append(f"snapped {snapped} timestamp{'s' * (snapped != 1)} onto the regular {describe_step(step)} "
                     f"grid (off by up to {describe_step(timedelta(seconds=round(worst * s)))}, "
                     "e.g. a daylight-saving change)")  # fmt: skip
    grid: list[float | None] = [None] * n
    for k, v in zip(slots, values, strict=True):
        grid[k] = float(v)
    missing = n - len(slots)
    if missing:
        if fill == "zero":
            out = [0.0 if v is None else v for v in grid]
            how = "with 0"
        else:
            out = []
            for k, j in zip(slots, slots[1:], strict=False):
                a, b = grid[k], grid[j]
                assert a is not None and b is not None
                out.append(a)
                out.extend(a + (b - a) * (q / (j - k)) for q in range(1, j - k))
            last = grid[slots[-1]]
            assert last is not None
            out.append(last)
            how = "by linear interpolation"
        notes.append(f"filled {missing} missing step{'s' * (missing != 1)} {how}")
        return out, notes
    return [v for v in grid if v is not None], notes


def resample(timestamps: Sequence[datetime], values: Sequence[float], step: timedelta,
             how: Literal["sum", "mean"] = "sum") -> tuple[list[datetime], list[float]]:  # fmt: skip
    """Aggregate onto a regular grid of ``step`` (sum, e.g. spend or requests; or mean, e.g. a gauge). Buckets
    start at multiples of the step since midnight of the first timestamp's day (in its own offset, for
    timestamps with one); buckets without a row are left out (``forecast`` fills them)."""
    _check(timestamps, values)
    s = step.total_seconds()
    if s <= 0:
        raise UsageError(f"the step must be positive (got {step})")
    first = timestamps[0]
    tz = first.tzinfo
    anchor = first.replace(hour=0, minute=0, second=0, microsecond=0)
    buckets: dict[int, list[float]] = {}
    for t, v in zip(timestamps, values, strict=True):
        local = t.astimezone(tz) if tz is not None else t
        k = math.floor((local - anchor).total_seconds() / s)
        buckets.setdefault(k, []).append(float(v))
    keys = sorted(buckets)
    out_t = [anchor + k * step for k in keys]
    out_v = [sum(buckets[k]) if how == "sum" else sum(buckets[k]) / len(buckets[k]) for k in keys]
    return out_t, out_v


def season_candidates(step: timedelta) -> list[tuple[int, str]]:
    """The seasons (in steps) a series of this step may have: hourly, daily, weekly, yearly."""
    s = step.total_seconds()
    out: list[tuple[int, str]] = []
    for period, name in ((3600, "hourly"), (86400, "daily"), (7 * 86400, "weekly"), (365 * 86400, "yearly")):
        if name == "yearly" and s != 86400:
            continue  # a yearly season only for daily data (365 days; weekly data would need 52.18)
        m = period / s
        if m >= 2 and abs(m - round(m)) < 1e-9 and round(m) <= MAX_SEASON:
            out.append((round(m), name))
    return out


# --------------------------------------------------------------------------------------------------- models


def _quiet() -> Any:
    """A context in which the numeric libraries' warnings (and numpy's floating-point complaints) stay quiet."""
    import contextlib

    import numpy as np

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(np.errstate(all="ignore"))
    return stack


def _sf_models() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import statsforecast.models as m
    return m


Result = tuple["Array", "Array", "Array"]  # mean, lo, hi


class _Candidates:
    """The candidate models for one series' seasons; ``run`` forecasts y for h steps (None if the model fails)."""

    def __init__(self, seasons: list[int], level: int):
        self.seasons = seasons
        self.level = level
        small = [m for m in seasons if m <= 24]
        self.ets_m = max(small) if small else 1
        self.names: list[str] = [f"SeasonalNaive({m})" for m in seasons] or ["Naive"]
        self.names += ["AutoETS", "AutoTheta"]
        if seasons:
            self.names.append("MSTL")
        self.names.append("Ensemble")

    def label(self, name: str) -> str:
        if name == "AutoETS" or name == "AutoTheta":
            return f"{name}(season={self.ets_m})" if self.ets_m > 1 else name
        if name == "MSTL":
            return f"MSTL(seasons={','.join(map(str, self.seasons))}; trend=AutoETS)"
        if name == "Ensemble":
            return f"Ensemble(mean of {'+'.join(self.parts())})"
        return name

    def parts(self) -> list[str]:
        return [n for n in ("AutoETS", "AutoTheta", "MSTL") if n in self.names]

    def run(self, name: str, y: Array, h: int, cache: dict[str, Result | None]) -> Result | None:
        if name in cache:
            return cache[name]
        if name == "Ensemble":
            got = [self.run(p, y, h, cache) for p in self.parts()]
            ok = [g for g in got if g is not None]
            res: Result | None = None
            if len(ok) == len(got) and len(ok) >= 2:
                import numpy as np

                res = (np.mean([g[0] for g in ok], axis=0), np.mean([g[1] for g in ok], axis=0),
                       np.mean([g[2] for g in ok], axis=0))  # fmt: skip
        else:
            res = self._one(name, y, h)
        cache[name] = res
        return res

    def _one(self, name: str, y: Array, h: int) -> Result | None:
        import numpy as np

        m = _sf_models()
        if name == "Naive":
            model: Any = m.Naive()
        elif name.startswith("SeasonalNaive("):
            model = m.SeasonalNaive(season_length=int(name[14:-1]))
        elif name == "AutoETS":
            model = m.AutoETS(season_length=self.ets_m)
        elif name == "AutoTheta":
            model = m.AutoTheta(season_length=self.ets_m)
        elif name == "MSTL":
            model = m.MSTL(season_length=list(self.seasons), trend_forecaster=m.AutoETS(model="ZZN"))
        else:  # pragma: no cover
            raise ValueError(name)
        try:
            with _quiet():
                out = model.forecast(y=y, h=h, level=[self.level])
            mean = np.asarray(out["mean"], dtype=np.float64)
            lo = np.asarray(out[f"lo-{self.level}"], dtype=np.float64)
            hi = np.asarray(out[f"hi-{self.level}"], dtype=np.float64)
        except Exception:  # a model that cannot fit this window is simply not a candidate for it
            return None
        if mean.shape != (h,) or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(lo))
                                      and np.all(np.isfinite(hi))):  # fmt: skip
            return None
        return mean, np.minimum(lo, mean), np.maximum(hi, mean)


# --------------------------------------------------------------------------------------------------- forecast


def forecast(timestamps: Sequence[datetime], values: Sequence[float], horizon: int, *, level: int = 80,
             step: timedelta | None = None, nonnegative: bool | None = None, fill: Fill = "interpolate",
             max_history: int = MAX_HISTORY) -> Forecast:  # fmt: skip
    """Forecast the next ``horizon`` steps of a regular series with a ``level`` % prediction interval.

    ``timestamps`` increase (naive, or all with a UTC offset); ``step`` defaults to the most common gap (one day
    for a single point at midnight, else one hour). ``nonnegative=None`` clips at zero when no value is
    negative. Raises :class:`~tokenops.errors.UsageError` (:class:`IrregularStepsError` for timestamps off a
    regular grid) for input it cannot use. See the module's documentation for the method.
    """
    if horizon < 1:
        raise UsageError(f"the horizon must be at least 1 step (got {horizon})")
    if not 1 <= level <= 99:
        raise UsageError(f"the level must be between 1 and 99 % (got {level})")
    _check(timestamps, values)
    notes: list[str] = []
    if step is None:
        step = infer_step(timestamps)
        if step is None:
            t = timestamps[0]
            midnight = (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0)
            step = timedelta(days=1) if midnight else timedelta(hours=1)
            notes.append(f"a single row: the step is unknown, assumed {describe_step(step)}")
    y_list, grid_notes = _regularize(timestamps, values, step, fill)
    notes += grid_notes
    if nonnegative is None:
        nonnegative = min(values) >= 0
    last = timestamps[-1]
    try:
        last + horizon * step  # the last step first: a horizon past the year 9999 fails before any work
        stamps = [last + (i + 1) * step for i in range(horizon)]
    except OverflowError:
        raise UsageError(f"{horizon} steps of {describe_step(step)} after {last.isoformat()} reach beyond the year "
                         "9999") from None  # fmt: skip

    import numpy as np

    y = np.asarray(y_list, dtype=np.float64)
    n = len(y)
    seasons: list[int] = []
    for m, name in season_candidates(step):
        if n >= MIN_SEASON_CYCLES * m:
            seasons.append(m)
        elif n >= m:  # only worth a note when the data could plausibly have it
            notes.append(f"history of {n} steps too short for the {name} season ({m} steps; needs "
                         f"{MIN_SEASON_CYCLES * m})")  # fmt: skip
    keep = max(max_history, 4 * max(seasons, default=0))
    if n > keep:
        y = y[-keep:]
        notes.append(f"used the last {keep} of {n} steps")
        n = keep

    def done(mean: Array, lo: Array, hi: Array, model: str, sigma: Array, rho: float,
             backtest: Backtest | None = None) -> Forecast:  # fmt: skip
        if nonnegative:
            mean, lo, hi = np.maximum(mean, 0), np.maximum(lo, 0), np.maximum(hi, 0)
        lo, hi = np.minimum(lo, mean), np.maximum(hi, mean)
        pts = [ForecastPoint(t, float(v), float(a), float(b)) for t, v, a, b in zip(stamps, mean, lo, hi, strict=True)]
        return Forecast(pts, model, level, tuple(seasons), notes, step, tuple(float(s) for s in sigma), rho,
                        bool(nonnegative), backtest)  # fmt: skip

    z = NormalDist().inv_cdf(0.5 + level / 200)
    hs = np.arange(1, horizon + 1, dtype=np.float64)
    if float(np.ptp(y)) <= 1e-12 * max(1.0, float(np.max(np.abs(y)))):
        if n == 1:
            notes.append("a single value: flat forecast; no spread to estimate an interval from (lo = hi)")
        else:
            notes.append("constant history: flat forecast, zero-width interval")
        flat = np.full(horizon, float(y[-1]))
        return done(flat, flat.copy(), flat.copy(), "Constant", np.zeros(horizon), 0.0)
    if n < MIN_MODEL_STEPS:
        d = np.diff(y)
        sd = float(np.sqrt(np.mean(d**2)))  # a random walk's step spread (no drift: too few points to trust one)
        sigma = sd * np.sqrt(hs)
        flat = np.full(horizon, float(y[-1]))
        notes.append(f"only {n} steps: naive forecast (the last value), interval from the step-to-step changes")
        return done(flat, flat - z * sigma, flat + z * sigma, "Naive", sigma, 1.0)

    cands = _Candidates(seasons, level)
    min_train = max(MIN_MODEL_STEPS, 2 * max(seasons, default=0) + 2)
    avail = n - min_train
    if avail < 2:
        notes.append("too short to backtest: AutoETS without model selection or calibration")
        return _fit_final(cands, "AutoETS", y, horizon, 1.0, z, None, 0.0, done, notes)
    h_bt = min(horizon, max(1, avail // 3))
    n_sel = max(1, min(5, max(3, math.ceil(20 / h_bt)), avail // h_bt))
    # calibration: more windows for the chosen model, each forecast from at least half the history
    n_cal = max(n_sel, min(MAX_CAL_WINDOWS, (n - max(min_train, n // 2)) // h_bt))
    if h_bt < horizon:
        notes.append(f"backtest windows of {h_bt} step{'s' * (h_bt != 1)} (the history is short for {horizon})")
    origins = [n - h_bt * (j + 1) for j in range(n_cal)]
    caches: list[dict[str, Result | None]] = [{} for _ in origins]
    errors: dict[str, float] = {}
    for name in cands.names:
        total, ok = 0.0, True
        for j in range(n_sel):
            o = origins[j]
            r = cands.run(name, y[:o], h_bt, caches[j])
            if r is None:
                ok = False
                break
            total += float(np.mean(np.abs(y[o:o + h_bt] - r[0])))
        if ok:
            errors[name] = total / n_sel
    if not errors:
        notes.append("no model could be fitted on the backtest windows: naive forecast")
        return _fit_final(cands, cands.names[0], y, horizon, 1.0, z, None, 0.0, done, notes)
    base = errors.get(cands.names[0])
    best = min(errors, key=lambda k: (errors[k], cands.names.index(k)))
    scores = {cands.label(k): (v / base if base else (0.0 if v == 0 else math.inf)) for k, v in errors.items()}

    # calibration: each backtest error over the interval's half-width on its side
    ratios: list[float] = []
    windows: list[tuple[Array, Array]] = []  # each window's errors and the model's own error spread
    inside_raw = 0
    for j, o in enumerate(origins):
        r = cands.run(best, y[:o], h_bt, caches[j])
        if r is None:
            continue
        mean, lo, hi = r
        err = y[o:o + h_bt] - mean
        half = np.where(err >= 0, hi - mean, mean - lo)
        inside_raw += int(np.sum((y[o:o + h_bt] >= lo) & (y[o:o + h_bt] <= hi)))
        with np.errstate(all="ignore"):
            ratio = np.where(half > 0, np.abs(err) / np.where(half > 0, half, 1.0), np.where(err == 0, 0.0, np.inf))
        ratios.extend(float(x) for x in ratio)
        windows.append((err, (hi - lo) / (2 * z)))
    npts = len(ratios)
    rs = sorted(ratios)
    q = min(1.0, math.ceil((npts + 1) * level / 100) / npts) if npts else 1.0
    scale = rs[max(0, math.ceil(q * npts) - 1)] if npts else 1.0
    if 0 < scale < 1:
        # narrowing the model's own interval rests on few independent windows (errors within one are correlated)
        # and on the windows that chose the model (optimistic): shrink it towards 1 by their number, by at most a
        # factor of 2 (a model whose own interval is 100 times too wide, inflated by a spike, is still narrowed)
        scale = min(scale ** (len(windows) / (len(windows) + NARROW_PRIOR)), 2 * scale)
    if not math.isfinite(scale):
        scale = max((x for x in rs if math.isfinite(x)), default=1.0) * 2  # a zero-width interval that missed
        notes.append("the model's interval was degenerate on the backtest; widened it")
    scale = max(scale, 1e-6)
    coverage = sum(1 for x in ratios if x <= scale) / npts if npts else math.nan
    # the errors' correlation between steps of one window, for totals: sum over windows of the cross products
    # e_i e_j (i != j) over the same for the calibrated spreads (a window that errs as a whole counts fully)
    num = sum(float(np.sum(e)) ** 2 - float(np.sum(e * e)) for e, _ in windows)
    den = sum(float(np.sum(scale * s)) ** 2 - float(np.sum((scale * s) ** 2)) for _, s in windows)
    if h_bt == 1 or den <= 0:
        rho = 0.5  # no pairs of steps to measure: a middle assumption
    else:  # a few windows estimate it loosely: shrink towards a middle 0.5 by RHO_PRIOR windows' worth
        rho = min(0.99, max(0.0, num / den))
        rho = (len(windows) * rho + RHO_PRIOR * 0.5) / (len(windows) + RHO_PRIOR)
    bt = Backtest(h_bt, n_sel, scores, npts, scale, inside_raw / npts if npts else math.nan, coverage)
    return _fit_final(cands, best, y, horizon, scale, z, bt, rho, done, notes)


def _fit_final(cands: _Candidates, name: str, y: Array, horizon: int, scale: float, z: float, bt: Backtest | None,
               rho: float, done: Callable[..., Forecast], notes: list[str]) -> Forecast:  # fmt: skip

    r = cands.run(name, y, horizon, {})
    if r is None and name != cands.names[0]:
        notes.append(f"{cands.label(name)} failed on the whole history; fell back to {cands.names[0]}")
        name = cands.names[0]
        r = cands.run(name, y, horizon, {})
    if r is None:  # pragma: no cover - seasonal naive and naive do not fail on ten or more finite values
        raise UsageError("no forecasting model could be fitted to this series")
    mean, lo, hi = r
    lo, hi = mean - scale * (mean - lo), mean + scale * (hi - mean)
    sigma = (hi - lo) / (2 * z)
    return done(mean, lo, hi, cands.label(name), sigma, rho, bt)


def forecast_total(fc: Forecast, steps: int | None = None) -> ForecastTotal:
    """The sum of the first ``steps`` (default: all) forecast values with an interval at the forecast's level.

    The per-step errors are taken as Gaussian with spreads ``fc.sigma`` and one correlation
    ``fc.error_correlation`` between any two steps (see the module documentation); the bounds are clipped at zero for a
    non-negative series. Not the sum of the per-step bounds: that would be the interval of errors that all go
    the same way, much wider than the level claims over a long horizon.
    """
    k = len(fc.points) if steps is None else steps
    if not 1 <= k <= len(fc.points):
        raise UsageError(f"steps must be between 1 and {len(fc.points)} (got {steps})")
    value = sum(p.value for p in fc.points[:k])
    sig = list(fc.sigma[:k]) if fc.sigma else [0.0] * k
    rho = fc.error_correlation
    # var = sum_i sum_j s_i s_j rho^[i != j] = (1 - rho) sum s_i^2 + rho (sum s_i)^2
    var = (1 - rho) * sum(s * s for s in sig) + rho * sum(sig) ** 2
    sd = math.sqrt(max(var, 0.0))
    z = NormalDist().inv_cdf(0.5 + fc.level / 200)
    lo, hi = value - z * sd, value + z * sd
    if fc.nonnegative:
        lo, hi = max(lo, 0.0), max(hi, 0.0)
    return ForecastTotal(value, min(lo, value), max(hi, value), fc.level, k)
