"""Streaming anomaly detection for one time series (spend, tokens or calls per bucket), one row at a time.

Every row gets a score in [0, 1] computed only from that row and the rows before it, so the same code scores a
CSV file (``tokenops anomalies score``) and a live series bucket by bucket (:class:`AnomalyDetector` keeps its
state between calls). The method, and what each part is for:

1. **Surprise channels.** Each one turns the new row into a statistic and answers a tail probability ``p``:
   how rarely the series' own recent history produced a value at least that extreme.

   * *step* -- the jump ``|x_t - x_{t-1}|``: spikes and sudden level shifts.
   * *pattern* -- the distance from the last ``m`` values (a short subsequence, in the series' units) to their
     nearest neighbour among the ``memory`` previous subsequences that do not overlap it (a streaming
     discord, as in matrix-profile methods): a shape that was never seen, even at a normal level -- a daily
     cycle that goes flat, a missing weekly peak, an oscillation that starts.
   * *pattern likelihood* -- HTM's "anomaly likelihood" (Ahmad et al. 2017) on the pattern channel: the mean
     surprise of the last 10 rows, calibrated like the other channels against the last ``lik_long`` such
     means (not against a fitted normal, whose thin tail over-alerts on these skewed, autocorrelated means).
     One surprising row is noise; a run of them is a change of regime (more noise, a new oscillation).
   * *coarse patterns* -- the pattern channel again on block means of ``scale`` rows, one octave apart
     (``scales`` = 8, 16, 32, 64 rows; each answers once per block): shapes too slow for 8 rows -- a day
     that is flatter or busier than any seen, a slow drift, a weekly peak that goes missing. A multi-resolution
     discord; each coarse channel reports only on the row that closes its block.
   * *range* -- the value leaves the range seen so far by more than 5 % of its width (as NAB's HTM detector
     does): rare, and nearly always worth an alert.

   Tail probabilities come from a sliding window of the statistic, kept sorted: the empirical tail, extended
   past its top 2 % by an exponential fitted to their mean excess (peaks over threshold, as in SPOT), so a
   value beyond anything seen still gets a graded, finite probability. Each series calibrates itself: a
   jump that is routine in a noisy series is rare in a smooth one.

2. **Fusion.** ``p = min(p_channel) x channels`` (Bonferroni over the channels that report on this row); the score is ``log(p) / log(1e-10)``,
   clipped to [0, 1], so 0.5 means "one in 100,000" whatever the series' scale or noise. One threshold
   therefore suits every series.

3. **Rest.** After a score at or above ``rest_level`` (0.3: p <= 1e-3) the following rows score 0 for
   ``rest`` rows or ``rest_seconds`` (12 h), whichever ends first: one incident raises one alert, not a
   storm, and the detector re-baselines meanwhile (a level shift becomes the new normal as the windows fill
   with it). Nothing is scored during the first ``warmup`` rows.

**Threshold.** The score is monotone in rarity (higher = rarer). The corpus-wide optimum of the NAB threshold
sweep lands at 0.30 (0.2965 on the public half, for all three cost profiles), i.e. ``p`` of about 1e-3,
which is also ``rest_level``: 0.3 is the recommended default alert threshold.

Seasonality (hour of day, day of week) is handled by the pattern channel: a subsequence is compared with every
subsequence in memory, so yesterday's same-hour shape is a near neighbour. On the Numenta Anomaly Benchmark
(bench/nab.py; docs/benchmarks.md) this scores 69.0 / 58.9 / 74.3 (standard / low FP / low FN) on the public
half of NAB. Cost: ~90 microseconds per row; memory: O(window + memory x m x (1 + len(scales))) floats.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

_LOG_FLOOR = math.log(1e-10)
_MIN_P = 1e-250


def _upper_normal_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


class _Tail:
    """The last ``size`` values of a statistic, kept sorted, and the upper tail probability of a new value:
    the empirical tail, extended past the top ``frac`` by an exponential fitted to their mean excess."""

    def __init__(self, size: int, frac: float = 0.02, min_count: int = 30):
        self.size = max(1, size)
        self.frac = frac
        self.min_count = min_count
        # both in arrays of doubles (8 bytes a value, not a 24-byte float object and two pointers): the service
        # keeps one detector per watched series
        self.fifo = array("d")  # the values in arrival order, a ring once full (oldest at ``head``)
        self.head = 0
        self.sorted = array("d")

    def __len__(self) -> int:
        return len(self.fifo)

    def push(self, x: float) -> None:
        if len(self.fifo) == self.size:
            old = self.fifo[self.head]
            del self.sorted[bisect_left(self.sorted, old)]
            self.fifo[self.head] = x
            self.head = (self.head + 1) % self.size
        else:
            self.fifo.append(x)
        insort(self.sorted, x)

    def pvalue(self, x: float) -> float:
        s = self.sorted
        n = len(s)
        if n < self.min_count:
            return 1.0
        k = max(5, int(self.frac * n))
        u = s[n - k]
        if x <= u:
            return (n - bisect_left(s, x) + 1) / (n + 1)
        excess = sum(s[n - k :]) / k - u
        beta = max(excess, 1e-3 * (s[-1] - s[0]), 1e-12)
        return max(k / (n + 1) * math.exp(max(-(x - u) / beta, -600.0)), _MIN_P)

    def quantile(self, q: float) -> float:
        s = self.sorted
        pos = q * (len(s) - 1)
        i = int(pos)
        if i + 1 >= len(s):
            return s[-1]
        return s[i] + (s[i + 1] - s[i]) * (pos - i)


class _Likelihood:
    """HTM-style anomaly likelihood, calibrated like every other channel: the mean of the last ``short`` raw
    scores (in [0, 1]) against the empirical distribution (with its exponential tail) of the last ``long``
    such means; answers the upper tail probability (1.0 while learning, the first ``learning`` means)."""

    def __init__(self, short: int = 10, long: int = 2000, learning: int = 150, frac: float = 0.02):
        self.short: deque[float] = deque(maxlen=short)
        self.means = _Tail(long, frac, min_count=learning)

    def update(self, raw: float) -> float:
        self.short.append(raw)
        avg = sum(self.short) / len(self.short)
        q = self.means.pvalue(avg)
        self.means.push(avg)
        return q


class _Pattern:
    """Streaming discord: the distance from the last ``m`` inputs to their nearest neighbour among the
    ``memory`` previous subsequences that do not overlap them, and its tail probability over the last
    ``window`` distances (None until 20 subsequences are in memory)."""

    def __init__(self, np: Any, m: int, memory: int, window: int, frac: float) -> None:
        self.np = np
        self.m = max(1, m)
        self.recent: deque[float] = deque(maxlen=self.m)
        self.pending: deque[Any] = deque()
        self.capacity = max(1, memory)
        self.memory = np.zeros((min(self.capacity, 64), self.m))  # grown by doubling up to ``capacity``
        self.filled = 0
        self.pos = 0
        self.distances = _Tail(window, frac)

    def update(self, x: float) -> float | None:
        self.recent.append(x)
        if len(self.recent) < self.m:
            return None
        np = self.np
        v = np.fromiter(self.recent, dtype=float, count=self.m)
        p = None
        if self.filled >= 20:
            d2 = ((self.memory[: self.filled] - v) ** 2).sum(axis=1)
            dist = math.sqrt(float(d2.min()))
            if math.isfinite(dist):
                p = self.distances.pvalue(dist)
                self.distances.push(dist)
        self.pending.append(v)
        if len(self.pending) > self.m:  # a subsequence joins the memory once it no longer overlaps
            if self.filled == len(self.memory) < self.capacity:  # room for more: grow (the ring has not wrapped)
                grown = np.zeros((min(2 * len(self.memory), self.capacity), self.m))
                grown[: self.filled] = self.memory
                self.memory = grown
                self.pos = self.filled
            self.memory[self.pos] = self.pending.popleft()
            self.pos = (self.pos + 1) % len(self.memory)
            self.filled = min(self.filled + 1, len(self.memory))
        return p


class AnomalyDetector:
    """Incremental anomaly scores for one series; see the module docstring for the method.

    ``update(ts, value)`` scores the next row (rows in time order; the timestamp is accepted for the API's sake
    and for gaps, the method itself is row-based); ``expected()`` then gives the normal range the detector had
    for that row, to explain a high score ("expected 10-14, actual 55").
    """

    def __init__(self, *, window: int = 2000, m: int = 8, memory: int = 2000, lik_long: int = 2000,
                 tail_frac: float = 0.02, range_tolerance: float = 0.05, warmup: int = 150, rest: int = 100,
                 rest_seconds: float = 43200.0, rest_level: float = 0.3,
                 scales: Sequence[int] = (8, 16, 32, 64)) -> None:  # fmt: skip
        import numpy

        self.warmup = warmup
        self.rest = rest
        self.rest_level = rest_level
        self.range_tolerance = range_tolerance
        self.n = 0
        self.lo = math.inf
        self.hi = -math.inf
        self.prev: float | None = None
        self.steps = _Tail(window, tail_frac)
        # pattern channel on the rows themselves, and on block means of ``scale`` rows (coarser shapes)
        self.pattern = _Pattern(numpy, m, memory, window, tail_frac)
        self.pattern_lik = _Likelihood(long=lik_long)
        self.scales = [max(2, int(k)) for k in scales]
        self.coarse = [_Pattern(numpy, m, memory, window, tail_frac) for _ in self.scales]
        self.block_sums = [0.0] * len(self.scales)
        self.rest_seconds = rest_seconds
        self.since_alarm = rest
        self.alarm_at: datetime | None = None
        self._expected: tuple[float, float, float] | None = None
        self.last_channels: dict[str, float] = {}

    def update(self, ts: datetime, value: float) -> float:
        """The score of this row, in [0, 1] (0 during the warm-up and the rest after an alert)."""
        x = float(value)
        if not math.isfinite(x):  # not a number: treat it as "no change" rather than poison the state
            x = self.prev if self.prev is not None else 0.0
        x = min(max(x, -1e150), 1e150)  # squares of the pattern channels stay finite
        self.n += 1
        ps: dict[str, float] = {}

        if self.prev is not None:
            self._expected = self._range()
            step = abs(x - self.prev)
            ps["step"] = self.steps.pvalue(step)
            self.steps.push(step)

        p = self.pattern.update(x)
        if p is not None:
            ps["pattern"] = p
            ps["pattern_likelihood"] = self.pattern_lik.update(min(1.0, -math.log10(p) / 3.0))
        for j, scale in enumerate(self.scales):
            self.block_sums[j] += x
            if self.n % scale == 0:
                p = self.coarse[j].update(self.block_sums[j] / scale)
                self.block_sums[j] = 0.0
                if p is not None:
                    ps[f"pattern_x{scale}"] = p

        if self.n > self.warmup and self.hi > self.lo:
            excess = max(x - self.hi, self.lo - x) / (self.hi - self.lo)
            if excess > self.range_tolerance:
                ps["range"] = 10.0 ** -(3.0 + 10.0 * min(excess, 1.0))

        self.last_channels = ps
        p = min(1.0, min(ps.values(), default=1.0) * max(1, len(ps)))
        score = min(1.0, max(0.0, math.log(max(p, _MIN_P) + 1e-10) / _LOG_FLOOR))
        if self.n <= self.warmup:
            score = 0.0
        resting = self.since_alarm < self.rest
        if resting and self.alarm_at is not None:
            try:
                resting = (ts - self.alarm_at).total_seconds() < self.rest_seconds
            except TypeError:  # naive and aware timestamps mixed: rows decide
                pass
        out = 0.0 if resting else score
        self.since_alarm += 1
        if score >= self.rest_level:
            self.since_alarm = 0
            self.alarm_at = ts
        self.lo = min(self.lo, x)
        self.hi = max(self.hi, x)
        self.prev = x
        return out

    def _range(self) -> tuple[float, float, float]:
        assert self.prev is not None
        width = self.steps.quantile(0.99) if len(self.steps) else 0.0
        return self.prev, self.prev - width, self.prev + width

    def expected(self) -> tuple[float, float, float] | None:
        """(expected value, low, high) for the row last scored, as the detector saw it before that row: the
        previous value and the 99th percentile of recent steps either side. None before two rows."""
        return self._expected


def score_series(timestamps: Sequence[datetime], values: Sequence[float], **options: Any) -> list[float]:
    """Scores of a whole series, row by row (``options`` go to :class:`AnomalyDetector`)."""
    if len(timestamps) != len(values):
        raise ValueError(f"{len(timestamps)} timestamps but {len(values)} values")
    det = AnomalyDetector(**options)
    return [det.update(t, v) for t, v in zip(timestamps, values, strict=True)]
