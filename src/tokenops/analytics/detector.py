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
   * *resonance* -- a causal re-implementation of ARTime (adaptive resonance theory; see :class:`_Resonance`):
     windows of 8 downsampled, quantized levels plus their Haar shape are clustered by a dual-vigilance fuzzy ART
     whose vigilance adapts to the matches seen; a window that resonates with no learned category (after the
     first ``resonance_probation`` = 750 rows, learned as a batch) reports ARTime's confidence ``c`` in (0, 1]
     as ``p = 10^(-5c)`` (a fixed mapping, not a calibrated tail; it reports only on the rows it flags).
     Its value range is estimated causally (the probation's range widened by 25 % either side), where ARTime's
     NAB wrapper is given each file's global min, max and length.

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

4. **Spacing.** After a reported alert (an output at or above ``rest_level``), the next one must also wait
   ``spacing`` (3 %) of the rows seen so far, at most ``spacing_max`` (500) rows, unless its score reaches
   ``spacing_level`` (0.7: p <= 1e-7). Anomalies are rare relative to a series' history: a series with 10,000
   rows of history gets at most one ordinary alert per 300 rows, while an extreme row is always reported. This
   trims the false alarms that cluster behind an alert (on NAB: 116 -> 100 false-positive rows, no window lost).

**Threshold.** The score is monotone in rarity (higher = rarer). The corpus-wide optimum of the NAB threshold
sweep lands at 0.30 (0.2965 on the public half, for all three cost profiles), i.e. ``p`` of about 1e-3,
which is also ``rest_level``: 0.3 is the recommended default alert threshold.

Seasonality (hour of day, day of week) is handled by the pattern channel: a subsequence is compared with every
subsequence in memory, so yesterday's same-hour shape is a near neighbour. On the Numenta Anomaly Benchmark
(bench/nab.py; docs/benchmarks.md) this scores 73.5 / 64.4 / 78.4 (standard / low FP / low FN) on the public
half of NAB at threshold 0.2965 (72.1 / 61.6 / 77.5 without the spacing, 69.0 / 58.9 / 74.3 without the
resonance channel either). Cost: ~100 microseconds per row; memory:
O(window + memory x m x (1 + len(scales))) floats plus at most 1,024 x 32 for the resonance categories
(about 0.6 MB per series at most).
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
_SQRT_HALF = math.sqrt(0.5)


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


class _HoldsNumpy:
    """A part that keeps the numpy module as ``self.np``: pickled without it (a saved watch, see watch.py), and
    given it back when loaded."""

    np: Any

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("np", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import numpy

        self.__dict__.update(state)
        self.np = numpy


class _Pattern(_HoldsNumpy):
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


def _haar(np: Any, v: Any) -> Any:
    """Full orthonormal Haar decomposition of a vector of length 2^k: [approximation, coarsest .. finest details]."""
    parts = []
    a = v
    while len(a) > 1:
        parts.append((a[0::2] - a[1::2]) * _SQRT_HALF)
        a = (a[0::2] + a[1::2]) * _SQRT_HALF
    parts.append(a)
    return np.concatenate(parts[::-1])


class _Resonance(_HoldsNumpy):
    """A causal re-implementation of ARTime (Hampton 2021, the leader of the NAB scoreboard; ARTimeNAB.jl): an
    adaptive-resonance category learner (dual-vigilance fuzzy ART, complement-coded) over short windows of the
    downsampled series. ``update`` answers ARTime's confidence in (0, 1] on a row where a window resonates with
    no learned category (a new one is committed for it), else 0.

    Every ``sstep`` rows (``probation / (window x 13)``, 7 for the default 750) the block's most extreme value
    (its max or min, whichever is further from a running mean; the block mean unless 10 % away from it) is
    normalized to [0, 1], quantized to ``nlevels`` levels and snapped to the running median when within 0.075
    of it. The feature vector is the last ``window`` such values, plus their Haar transform after min-max
    normalization of the window (the shape, whatever its level). The first ``probation`` rows are learned as a
    batch: the starting vigilance is the mean best match when they are presented least-typical first. Then
    each window is matched (feature similarity^3 x similarity of the newest level^2) against the categories:
    a match above the upper vigilance refines that category, above the lower one commits a new category
    quietly, below both commits one and flags the window. The vigilances follow the matches seen (upper: their
    running mean, capped at 0.97; lower: pulled towards the worst recent match, or lowered after mismatches, not
    below the mean match of past anomalies), and a flag right after a flag or a new category is suppressed
    unless it matches clearly worse than the last one.

    Unlike ARTime's NAB wrapper, which is handed each file's global min and max and length (the future), the
    range is estimated causally: the values seen in the probation widened by ``margin`` of their width either
    side, fixed after that (values beyond it are clipped to the edge; the *range* channel reports those), and
    the probation is a fixed number of rows. Categories are capped at ``max_categories``; when full, the one
    matched least recently is replaced."""

    def __init__(self, np: Any, probation: int = 750, window: int = 8, nlevels: int = 80, margin: float = 0.25,
                 initial_rho: float = 0.8, max_categories: int = 1024) -> None:  # fmt: skip
        self.np = np
        probation -= probation % 2
        self.window = window
        self.sstep = max(1, probation // (window * 13))
        self.trend = max(window + 2, probation // self.sstep)
        self.mask = window * 1.5
        self.nlevels = nlevels
        self.margin = margin
        self.initial_rho = initial_rho
        self.max_categories = max(2, max_categories)
        self.i = 0
        self.block: deque[float] = deque(maxlen=self.sstep)
        self.dsi = 1
        self.ds_mean = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.dmin = 0.0
        self.dmax = 0.0
        self.medbin = [0] * (nlevels + 1)
        self.medlevel = 0
        self.below = 0
        self.above = 0
        self.levels: deque[float] = deque([0.0] * window, maxlen=window)
        self.buffer = array("d")  # the probation's downsampled values, until the batch
        self.W = np.ones((1, 4 * window))  # categories, complement-coded; the first is ARTime's all-ones seed
        self.used = np.zeros(1)  # when each category last resonated (for replacement)
        self.seeded = False
        self.rho_lb = 0.0
        self.rho_ub = 0.0
        self.last_anomaly_i = 0
        self.last_anomaly_sim = 0.0
        self.last_rho_update_i = 0
        self.mask_after_cat = False
        self.no_new_cat = 0
        self.anomaly_sims = 0.0  # sum and count of the anomalies' (lowest) similarities, and the last one
        self.anomalies = 0
        self.last_sim = 0.0
        self.sims: deque[float] = deque([1.0] * (self.trend // 2 + 1), maxlen=self.trend // 2 + 1)
        self.sim_gaps: deque[float] = deque([0.0] * (self.trend + 1), maxlen=self.trend + 1)
        self.sim_total = 0.0
        self.sim_count = 0

    def update(self, x: float) -> float:
        self.i += 1
        self.lo = min(self.lo, x)
        self.hi = max(self.hi, x)
        self.block.append(x)
        if self.i % self.sstep:
            return 0.0
        mean = sum(self.block) / len(self.block)
        hi, lo = max(self.block), min(self.block)
        if self.dsi == 1:
            self.ds_mean = mean
        self.ds_mean = (self.ds_mean + mean) / 2
        ds = lo if abs(hi - self.ds_mean) < abs(lo - self.ds_mean) else hi
        if abs(ds - mean) < 0.1 * mean:  # a spike must be at least 10 %
            ds = mean
        out = 0.0
        if self.dsi <= self.trend:
            self.buffer.append(ds)
            if self.dsi == self.trend:
                width = self.hi - self.lo
                self.dmin, self.dmax = self.lo - self.margin * width, self.hi + self.margin * width
                features = [self._features(v, k) for k, v in enumerate(self.buffer, 1)]
                self.buffer = array("d")
                self._batch(features)
        else:
            out = self._detect(self._features(ds, self.dsi), self.dsi)
        self.dsi += 1
        return out

    def _features(self, ds: float, dsi: int) -> Any:
        np = self.np
        nl = self.nlevels
        span = self.dmax - self.dmin
        u = (ds - self.dmin) / span if span > 0 else ds - self.dmin
        level = int(round(min(max(u, 0.0), 1.0) * nl))
        value = level / nl
        # a running median of the levels (ARTime's approximation), by counts per level
        self.medbin[level] += 1
        if dsi == 1:
            self.medlevel = level
        if self.medlevel > level:
            self.below += 1
        elif self.medlevel < level:
            self.above += 1
        half = dsi // 2
        if half < self.above:
            self.below += self.medbin[self.medlevel]
            self.medlevel += 1
            while self.medlevel < nl and self.medbin[self.medlevel] == 0:
                self.medlevel += 1
            self.above -= self.medbin[self.medlevel]
        elif half < self.below:
            self.above += self.medbin[self.medlevel]
            self.medlevel -= 1
            while self.medlevel > 0 and self.medbin[self.medlevel] == 0:
                self.medlevel -= 1
            self.below -= self.medbin[self.medlevel]
        median = self.medlevel / nl
        if abs(value - median) < 0.075:
            value = median
        self.levels.append(value)
        if dsi < self.window:
            return np.zeros(2 * self.window)
        w = np.fromiter(self.levels, dtype=float, count=self.window)
        shape = w - w.min()
        if shape.max() > 0:
            shape /= shape.max()
        shape = _haar(np, shape)
        shape -= shape.min()
        if shape.max() > 0:
            shape /= shape.max()
        return np.concatenate([shape, w])

    def _match(self, W: Any, f: Any) -> tuple[Any, Any, Any]:
        """Complement-coded input, its fuzzy-AND with every category, and (match, level similarity) of each."""
        np = self.np
        x = np.concatenate([f, 1.0 - f])
        em = np.minimum(W, x)
        size = W.sum(axis=1)
        size[size == 0] = 0.001
        e = 2 * self.window - 1  # the newest level and its complement: the "energy" of the window
        level_sim = (em[:, e] + em[:, -1]) / np.maximum(W[:, e] + W[:, -1], 1e-12)
        return x, em, ((em.sum(axis=1) / size) ** 3 * level_sim**2, level_sim)

    def _train(self, f: Any, learning: bool = True) -> tuple[bool, float, float]:
        """Dual-vigilance fuzzy ART step: (mismatch, best match, its level similarity)."""
        if not self.seeded:  # ARTime's first input only seeds the all-ones category
            self.seeded = True
            return False, 0.0, 0.0
        x, em, (M, level_sim) = self._match(self.W, f)
        order = self.np.argsort(-M, kind="stable")
        best = int(order[0])
        A, Ae = float(M[best]), float(level_sim[best])
        if not learning:
            return False, A, Ae
        resonated = False
        for j in order:
            m = M[j]
            if m >= self.rho_ub:  # resonance: fast learning (every category above the upper vigilance)
                self.W[j] = em[j]
                self.used[j] = self.i
                resonated = True
            elif m >= self.rho_lb and not resonated:  # close enough: a new category, quietly
                self._commit(x)
                return False, A, Ae
            else:
                break
        if resonated:
            return False, A, Ae
        self._commit(x)  # no resonance: a new category, and a candidate anomaly
        return True, A, Ae

    def _commit(self, x: Any) -> None:
        np = self.np
        if len(self.W) < self.max_categories:
            self.W = np.vstack([self.W, x])
            self.used = np.append(self.used, self.i)
        else:
            j = int(np.argmin(self.used))
            self.W[j] = x
            self.used[j] = self.i

    def _batch(self, features: list[Any]) -> None:
        np = self.np
        X = np.array(features[self.window - 1 :])
        norm = np.linalg.norm(X, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = (X @ X.T) / np.outer(norm, norm)
        zero = norm == 0
        sim[zero, :] = (1.0 - norm)[None, :].repeat(len(X), 0)[zero, :]
        sim[:, zero] = (1.0 - norm)[:, None].repeat(len(X), 1)[:, zero]
        np.fill_diagonal(sim, 1.0)
        sim = np.nan_to_num(sim)
        order = np.argsort(sim.sum(axis=0), kind="stable")  # least typical first
        trial = _Resonance(np, window=self.window, max_categories=self.max_categories)
        trial.rho_lb = trial.rho_ub = self.initial_rho
        matches = [trial._train(X[k])[1] for k in order]
        start = min(self.trend // 2 - 1, len(matches) - 1)
        rho = float(np.mean(matches[start:]))
        self.rho_lb = self.rho_ub = rho
        for k, f in enumerate(features, 1):
            self._detect(f, k)

    def _detect(self, f: Any, i: int) -> float:
        since = i - self.last_anomaly_i
        update_after_anomaly = since == self.mask
        update_for_trend = i - self.last_rho_update_i >= self.trend // 2
        mask_after_anomaly = since <= self.mask
        if i > self.trend + self.mask and self.mask_after_cat and self.no_new_cat >= self.mask:
            self.mask_after_cat = False
        if i < self.window:
            _, A, Ae = self._train(f, learning=False)
            new = True
        else:
            new, A, Ae = self._train(f)
        self.no_new_cat = 0 if new else self.no_new_cat + 1
        self.sim_total += A
        self.sim_count += 1
        self.sims.append(A)
        self.sim_gaps.append(self.rho_ub - A)
        if since < self.mask and self.anomalies and A < self.last_sim:
            self.anomaly_sims += A - self.last_sim
            self.last_sim = A
        masking = self.mask_after_cat or mask_after_anomaly
        below_last = A < self.last_anomaly_sim * (0.90 if mask_after_anomaly else 0.70)
        out = 0.0
        if i > self.trend and new and (not masking or below_last):
            out = self._confidence(A, Ae)
            self.anomaly_sims += A
            self.anomalies += 1
            self.last_sim = self.last_anomaly_sim = A
            self.last_anomaly_i = i
        self.mask_after_cat = new or self.mask_after_cat
        if i > self.trend and (update_after_anomaly or update_for_trend):
            lowest = min(self.sims)
            ub = min(0.97, self.sim_total / self.sim_count)
            lb = self.rho_lb
            if lb <= lowest:
                lb += (lowest - lb) * 0.19
            else:
                gaps = [min(0.37, g) for g in self.sim_gaps if g > 0.05] if i > 2 * self.trend else []
                lb -= max(0.01, sum(gaps) / len(gaps) if gaps else 0.0) / 2
                if self.anomalies:
                    lb = max(self.anomaly_sims / self.anomalies, lb)
            self.rho_lb = min(ub, lb)
            self.rho_ub = ub
            self.last_rho_update_i = i
            self.mask_after_cat = True
        return out

    def _confidence(self, sim: float, level_sim: float) -> float:
        sim = min(0.999, sim)
        ub = ((1 - sim) - (1 - self.rho_ub)) / (1 - sim)
        lb = ((1 - sim) - (1 - self.rho_lb)) / (1 - sim)
        s = ub * 0.35 + lb * 0.65 + (1.0 - level_sim) * 1.5
        return min(1.0, max(1e-6, s))


class AnomalyDetector:
    """Incremental anomaly scores for one series; see the module docstring for the method.

    ``update(ts, value)`` scores the next row (rows in time order; the timestamp is accepted for the API's sake
    and for gaps, the method itself is row-based); ``expected()`` then gives the normal range the detector had
    for that row, to explain a high score ("expected 10-14, actual 55").
    """

    def __init__(self, *, window: int = 2000, m: int = 8, memory: int = 2000, lik_long: int = 2000,
                 tail_frac: float = 0.02, range_tolerance: float = 0.05, warmup: int = 150, rest: int = 100,
                 rest_seconds: float = 43200.0, rest_level: float = 0.3,
                 scales: Sequence[int] = (8, 16, 32, 64), resonance_probation: int = 750,
                 resonance_margin: float = 0.25, spacing: float = 0.03, spacing_max: int = 500,
                 spacing_level: float = 0.7) -> None:  # fmt: skip
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
        self.resonance = _Resonance(numpy, probation=resonance_probation, margin=resonance_margin)
        self.rest_seconds = rest_seconds
        self.since_alarm = rest
        self.spacing = spacing
        self.spacing_max = spacing_max
        self.spacing_level = spacing_level
        self.since_alert = math.inf  # rows since the last score at or above ``rest_level`` that was reported
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

        confidence = self.resonance.update(x)
        if confidence > 0.0:  # a window that resonates with no learned category
            ps["resonance"] = 10.0 ** (-5.0 * confidence)

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
        if out < self.spacing_level and self.since_alert < min(self.spacing * self.n, self.spacing_max):
            out = 0.0  # too soon after the last alert, for the history seen so far
        self.since_alarm += 1
        self.since_alert += 1
        if out >= self.rest_level:
            self.since_alert = 0
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
