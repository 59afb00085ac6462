"""The live anomaly watch: every scope's spend, tokens, calls, error and 429 rates and latency, bucket by bucket,
scored by the streaming detector (:mod:`tokenops.analytics.detector`), plus calls that use far more tokens than
their feature usually does.

The watch reads the ledger through its read interface only (:meth:`Ledger.activity`, ``spend_report``,
``large_calls``), so it runs the same on DuckDB and PostgreSQL. It keeps one detector per (scope, signal) in
memory; :meth:`AnomalyWatch.advance` feeds the buckets that finished since the last call (a bucket is read
``settle`` seconds after it ends, when the spool's writer has caught up) and answers the anomalies found in
them. The first call, or one after a gap, learns from ``history`` seconds of the ledger first (no alerts for
what it learns from). The gateway calls it in the background and lets one replica do each round
(:mod:`tokenops.gateway.anomalies`); ``tokenops anomalies --scan`` runs it over a window of the ledger at once.

An anomaly says what was seen and why it matters: the actual value, the expected value and range (the median
and spread of the scope's recent buckets at this time of day where days of history exist, else of its recent
buckets), a severity, the top contributors (key, user, model, feature) against the hour before, and for money
what changed (volume, model mix, tokens per call, price: :mod:`tokenops.analytics.variance`).
"""

from __future__ import annotations

import hashlib
import math
import pickle
import statistics
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tokenops.analytics.variance import MixRow, decompose
from tokenops.ledger.reports import NONE, ActivityRow, ReportQuery
from tokenops.money import format_usd
from tokenops.tags import UNTAGGED

if TYPE_CHECKING:
    from tokenops.config import AnomaliesConfig
    from tokenops.ledger.base import Ledger

STATE_VERSION = 1  # of a saved watch (AnomalyWatch.snapshot)
BASELINE_BUCKETS = 12  # the buckets before an anomaly that its contributors are compared with
CONTRIBUTOR_DIMENSIONS = ("key", "user", "model", "feature")
SEVERITIES = ("low", "medium", "high", "critical")
MONEY_SIGNALS = ("cost", "tokens", "requests", "tokens_per_call")
UP_ONLY = ("error_rate", "rate_limited", "latency", "tokens_per_call", "tokens")  # a drop: good news, or the
# same news as the drop in spend and calls (an outage), which are reported
MAX_EXPLAINED = 50  # anomalies explained per round (each reads the ledger five times), the most severe first;
# the others are reported without contributors
LABELS = {"cost": "spend", "tokens": "tokens", "requests": "calls", "tokens_per_call": "tokens per call",
          "error_rate": "error rate", "rate_limited": "upstream 429 rate", "latency": "mean latency"}  # fmt: skip


class Detector(Protocol):
    def update(self, ts: datetime, value: float) -> float: ...


def default_detector(threshold: float, bucket: int) -> Detector:
    """The streaming detector, resting (one incident, one alert) only after a score that the watch acts on: a
    blip below the threshold must not silence the series when a real spike follows; and spacing its moderate
    alerts by at most 12 hours of buckets (the detector's own cap, 500 rows, is 41 hours of 5-minute buckets)."""
    from tokenops.analytics.detector import AnomalyDetector

    return AnomalyDetector(rest_level=threshold, spacing_max=max(1, min(500, 43_200 // bucket)))


@dataclass(frozen=True)
class Anomaly:
    kind: str  # "series" (a bucket of a scope) | "call" (one call far above its feature's usual tokens)
    signal: str
    scope: dict[str, str]
    bucket_start: datetime
    bucket_seconds: int
    actual: float
    expected: float | None
    low: float | None
    high: float | None
    score: float
    severity: str  # low | medium | high | critical
    direction: str  # up | down
    contributors: list[dict[str, Any]] = field(default_factory=list)
    changes: dict[str, str] | None = None
    request_id: str | None = None
    related: list[dict[str, Any]] = field(default_factory=list)  # other signals of the same scope and bucket
    actual_usd: Decimal | None = None  # a spend anomaly's exact spend (``actual`` is its float, for the statistics)

    @property
    def id(self) -> str:
        text = f"{self.kind}|{self.signal}|{sorted(self.scope.items())}|{self.bucket_start.isoformat()}|{self.request_id}"
        return "anom_" + hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def name(self) -> str:
        """What the alert is about: ``spend team=search`` (the incident: one per scope and signal)."""
        scope = ",".join(f"{k}={v}" for k, v in self.scope.items()) or "all"
        return f"{self.signal} {scope}"

    def show(self, value: float | None) -> str:
        if value is None:
            return "?"
        if self.signal == "cost":
            return "$" + format_usd(Decimal(repr(round(value, 6))))
        if self.signal in ("error_rate", "rate_limited"):
            return f"{value:.1%}"
        if self.signal == "latency":
            return f"{value:,.0f} ms"
        return f"{value:,.0f}" if abs(value) >= 10 else f"{value:,.2f}"

    @property
    def message(self) -> str:
        if self.kind == "call":
            who = ", ".join(f"{c['dimension']}={c['value']}" for c in self.contributors)
            return (f"call {self.request_id} used {self.show(self.actual)} tokens, {self.actual / (self.expected or 1):,.0f}× "
                    f"the {self.show(self.expected)} a call of {_scope(self.scope)} usually uses ({who})")  # fmt: skip
        when = f"{self.bucket_start:%Y-%m-%d %H:%M} UTC"
        seen = "$" + format_usd(self.actual_usd) if self.actual_usd is not None else self.show(self.actual)
        text = (f"{LABELS.get(self.signal, self.signal)} of {_scope(self.scope)} was {seen} in the "
                f"{_duration(self.bucket_seconds)} from {when}")  # fmt: skip
        if self.expected is not None:
            text += f", expected {self.show(self.expected)} ({self.show(self.low)}–{self.show(self.high)})"
        if self.contributors:
            text += "; top contributors: " + ", ".join(
                f"{c['dimension']}={c['value']} {c['change']}" for c in self.contributors[:3])
        if self.changes:
            text += "; what changed: " + self.changes["sentence"]
        return text

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "signal": self.signal, "scope": dict(self.scope),
                "bucket_start": self.bucket_start.isoformat(), "bucket_seconds": self.bucket_seconds,
                "actual": self.actual, "expected": self.expected, "low": self.low, "high": self.high,
                "actual_usd": None if self.actual_usd is None else format_usd(self.actual_usd),
                "score": round(self.score, 6), "severity": self.severity, "direction": self.direction,
                "contributors": self.contributors, "changes": self.changes, "request_id": self.request_id,
                "related": self.related, "message": self.message}  # fmt: skip


def _scope(scope: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in scope.items()) or "all traffic"


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hour" + ("s" if seconds != 3600 else "")
    return f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} s"


def severity(actual: float, expected: float | None, high: float | None, direction: str) -> str:
    """How bad: by how many times the actual is off the expected value (critical ≥ 10×, high ≥ 3×, medium ≥ 1.5×)."""
    if expected is None:
        return "medium"
    if direction == "down":
        ratio = (expected + 1e-9) / (actual + 1e-9)
    elif expected <= 0:
        return "medium"  # something where there usually is nothing: worth a look, not a fire (no ratio to judge)
    else:
        ratio = (actual + 1e-9) / (max(expected, high or 0.0) + 1e-9)
    return "critical" if ratio >= 10 else "high" if ratio >= 3 else "medium" if ratio >= 1.5 else "low"


def signal_value(signal: str, row: ActivityRow | None, min_requests: int) -> float | None:
    """The value of a signal in one bucket (None: the bucket says nothing about it, e.g. a rate without calls)."""
    if row is None:
        return 0.0 if signal in ("cost", "tokens", "requests") else None
    if signal == "cost":
        return float(row.cost_usd)
    if signal == "tokens":
        return float(row.tokens)
    if signal == "requests":
        return float(row.requests)
    if signal == "tokens_per_call":
        ok = row.requests - row.errors
        return row.tokens / ok if ok > 0 else None
    if signal == "error_rate":
        return row.errors / row.requests if row.requests >= min_requests else None
    if signal == "rate_limited":
        return row.rate_limited / row.requests if row.requests >= min_requests else None
    if signal == "latency":
        return row.latency_ms_sum / row.latency_n if row.latency_n >= min_requests else None
    raise ValueError(f"unknown signal {signal!r}")


class _Track:
    """One (scope, signal): its last days of values in one compact ring (8 bytes a bucket), for the expected range
    and, for signals without a detector of their own, the score.

    The expected value of a bucket is the median of the same time of day on the days before (with at least three
    of them; spend keeps eight days, so a Monday morning is compared with a week of mornings, not with the weekend
    alone), else of the last 48 buckets; the spread is the scaled median absolute deviation, at least 10 % of the
    median. Only spend gets the full streaming detector (the one measured on NAB, about a megabyte of state); the
    other signals are scored by how far they are from that range, on the same scale (``-log10(p) / 10``)."""

    def __init__(self, detector: Detector | None, per_day: int, keep_days: int = 3) -> None:
        self.detector = detector
        self.seen = 0
        self.per_day = per_day
        self.size = max(per_day * keep_days, 48)
        self.ring = array("d", bytes(8 * self.size))
        self.pos = 0  # where the next value goes
        self.stored = 0  # buckets in the ring, gaps (NaN) included
        self.rest_until = 0  # after an anomaly the track is not judged until it has seen this many values

    def _back(self, k: int) -> float:
        return self.ring[(self.pos - k) % self.size]

    def expected(self, slot: int) -> tuple[float, float, float] | None:
        del slot  # the ring is in bucket order: the same time yesterday is per_day buckets back
        days = [v for d in range(1, self.size // self.per_day + 1)
                if d * self.per_day <= self.stored and self.per_day > 1
                and not math.isnan(v := self._back(d * self.per_day))]  # fmt: skip
        values = days if len(days) >= 3 else [v for k in range(1, min(self.stored, 48) + 1)
                                              if not math.isnan(v := self._back(k))]  # fmt: skip
        if len(values) < 3:
            return None
        mid = statistics.median(values)
        spread = 1.4826 * statistics.median(abs(v - mid) for v in values)
        spread = max(spread, 0.1 * abs(mid), 1e-9)
        return mid, max(mid - 3 * spread, 0.0), mid + 3 * spread

    def score(self, value: float, expected: tuple[float, float, float] | None) -> float:
        """The light score: the normal tail of the distance from the expected value in spreads."""
        if expected is None:
            return 0.0
        mid, _, high = expected
        z = abs(value - mid) / ((high - mid) / 3)
        p = max(math.erfc(z / math.sqrt(2.0)), 1e-300)
        return min(1.0, -math.log10(p) / 10.0)

    def add(self, slot: int, value: float) -> None:
        del slot
        self.seen += 1
        self.ring[self.pos] = value
        self.pos = (self.pos + 1) % self.size
        self.stored = min(self.stored + 1, self.size)

    def skip(self) -> None:
        """A bucket that says nothing about this signal (a rate without calls): a gap in the ring."""
        self.ring[self.pos] = math.nan
        self.pos = (self.pos + 1) % self.size
        self.stored = min(self.stored + 1, self.size)


FULL_DETECTOR = ("cost",)  # the signals scored by the streaming detector itself


@dataclass
class _Series:
    scope: dict[str, str]
    tracks: dict[str, _Track]
    first: datetime
    last: datetime | None = None  # the last bucket fed


class AnomalyWatch:
    """See the module docstring. Not thread-safe: one caller at a time (the gateway's round, or the CLI)."""

    def __init__(self, ledger: Ledger, settings: AnomaliesConfig, *, detector: Callable[[], Detector] | None = None,
                 where: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.ledger = ledger
        # only the calls inside this scope (a scan of one team): each series is the scope and its dimensions
        self.where = dict(where or {})
        self.settings = settings
        self.bucket = settings.bucket
        self.make_detector = detector or (lambda: default_detector(settings.threshold, settings.bucket))
        self.series: dict[tuple[tuple[str, ...], tuple[str, ...]], _Series] = {}
        self.fed_until: datetime | None = None  # buckets before this one have been fed
        self.usual_tokens: dict[str, tuple[int, int]] = {}  # feature -> (calls, tokens) learnt so far
        self.pace: Callable[[], None] | None = None  # called between series: a gateway lets its calls run there
        # after an anomaly a series' signal rests as the detector does: 100 buckets or 12 hours, the shorter
        self.rest_buckets = max(1, min(100, 43_200 // self.bucket))

    # --- saved state ----------------------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        """What a saved state must match to be resumed: the settings that shape the series and the detector's
        code (a changed detector starts afresh)."""
        from tokenops.analytics import detector

        code = Path(detector.__file__).read_bytes()
        keys = repr((self.bucket, self.settings.scopes, self.settings.signals, self.settings.threshold,
                     sorted(self.where.items()), STATE_VERSION))  # fmt: skip
        return hashlib.sha256(code + keys.encode()).hexdigest()

    def snapshot(self) -> bytes:
        """The watch's learnt state (its detectors and where it is), to resume after a restart."""
        return pickle.dumps({"fingerprint": self._fingerprint(), "series": self.series, "fed_until": self.fed_until,
                             "usual_tokens": self.usual_tokens}, protocol=pickle.HIGHEST_PROTOCOL)  # fmt: skip

    def restore(self, data: bytes) -> bool:
        """Resume from :meth:`snapshot`'s bytes; False (and nothing changed) when they are not this watch's: other
        settings, another detector, or unreadable. A state older than the history is learnt again anyway."""
        try:
            state = pickle.loads(data)  # noqa: S301 (the gateway's own file, in its spool folder)
            if not isinstance(state, dict) or state.get("fingerprint") != self._fingerprint():
                return False
            series, fed_until, usual = state["series"], state["fed_until"], state["usual_tokens"]
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, KeyError, TypeError,
                ValueError):  # not a state this code wrote  # fmt: skip
            return False
        self.series, self.fed_until, self.usual_tokens = series, fed_until, usual
        return True

    # --- time ---------------------------------------------------------------------------------------------
    def floor(self, t: datetime) -> datetime:
        epoch = int(t.timestamp())
        return datetime.fromtimestamp(epoch - epoch % self.bucket, UTC)

    def ready_until(self, now: datetime) -> datetime:
        """The end of the last bucket that has settled at ``now``."""
        return self.floor(now - timedelta(seconds=self.settings.settle))

    # --- rounds -------------------------------------------------------------------------------------------
    def advance(self, now: datetime) -> list[Anomaly]:
        """Feed every bucket settled by ``now`` that has not been fed; the anomalies of those buckets. A cold
        watch (first call, or one that missed more than its history) learns the history first; one that missed a
        few buckets (a restart, a crash after its last save) catches up on them quietly: only the newest bucket
        alerts, as it would have after a relearning."""
        end = self.ready_until(now)
        last = end - timedelta(seconds=self.bucket)
        if self.fed_until is None or self.fed_until < end - timedelta(seconds=self.settings.history):
            self.reset()
            self.run(end - timedelta(seconds=self.settings.history), last, alert=False)
        elif self.fed_until < last - timedelta(seconds=self.bucket):
            self.run(self.fed_until, last, alert=False)
        if self.fed_until is not None and self.fed_until >= end:
            return []
        return self.run(self.fed_until or end - timedelta(seconds=self.bucket), end, alert=True)

    def scan(self, since: datetime, until: datetime) -> list[Anomaly]:
        """Learn from ``history`` before ``since``, then the anomalies of the buckets in [since, until)."""
        self.reset()
        since, until = self.floor(since), self.floor(until)
        self.run(since - timedelta(seconds=self.settings.history), since, alert=False)
        return self.run(since, until, alert=True)

    def reset(self) -> None:
        self.series.clear()
        self.fed_until = None
        self.usual_tokens.clear()

    def run(self, start: datetime, end: datetime, *, alert: bool) -> list[Anomaly]:
        start, end = self.floor(start), self.floor(end)
        if end <= start:
            self.fed_until = max(self.fed_until or end, end)
            return []
        found: list[Anomaly] = []
        step = timedelta(seconds=self.bucket)
        done: list[list[str]] = []
        for dims in self.settings.scopes:
            dims = [d for d in dims if d not in self.where]  # [] within a scope: the scope's own total
            if dims in done:
                continue
            done.append(dims)
            rows = self.ledger.activity(ReportQuery.build(by=dims, since=start, until=end, where=self.where),
                                        self.bucket)  # fmt: skip
            by_key: dict[tuple[str, ...], dict[datetime, ActivityRow]] = {}
            for r in rows:
                by_key.setdefault(tuple(r.keys[d] for d in dims), {})[r.bucket] = r
            keys = list(by_key)
            known = [k for (d, k) in self.series if d == tuple(dims)]
            for k in known:
                if k not in by_key:
                    keys.append(k)  # a scope gone quiet: its buckets are zeros
            cap = max(1, self.settings.max_series // len(self.settings.scopes))
            if len(keys) > cap:  # the biggest spenders first
                keys.sort(key=lambda k: -sum(float(r.cost_usd) for r in by_key.get(k, {}).values()))
                keys = keys[:cap]
            for key in keys:
                found += self._feed(tuple(dims), key, by_key.get(key, {}), start, end, step, alert)
                if self.pace is not None:
                    self.pace()
        if alert:
            kept = fold(found)
            worst = sorted(kept, key=lambda a: (-SEVERITIES.index(a.severity), -a.score))[:MAX_EXPLAINED]
            explain = {id(a) for a in worst}  # the rest are kept, with their values and range but no contributors
            found = [self._explain(a) if id(a) in explain else a for a in kept] + self._call_outliers(start, end)
        usual = ReportQuery.build(by=["feature"], since=start, until=end, where=self.where)
        for f in self.ledger.spend_report(usual).rows:
            c, t = self.usual_tokens.get(f.keys["feature"], (0, 0))
            self.usual_tokens[f.keys["feature"]] = (c + f.requests, t + f.input_tokens + f.output_tokens)
        self.fed_until = end
        return found

    def _feed(self, dims: tuple[str, ...], key: tuple[str, ...], buckets: Mapping[datetime, ActivityRow],
              start: datetime, end: datetime, step: timedelta, alert: bool) -> list[Anomaly]:  # fmt: skip
        s = self.series.get((dims, key))
        if s is None:
            if not buckets:
                return []
            first = min(buckets)
            per_day = max(1, 86400 // self.bucket)
            s = _Series({**self.where, **dict(zip(dims, key, strict=True))},
                        {sig: _Track(self.make_detector(), per_day, keep_days=8) if sig in FULL_DETECTOR
                         else _Track(None, per_day) for sig in self.settings.signals}, first)  # fmt: skip
            self.series[(dims, key)] = s
            t = first
        else:
            t = start if s.last is None else max(start, s.last + step)
        found = []
        per_day = max(1, 86400 // self.bucket)
        while t < end:
            row = buckets.get(t)
            slot = int(t.timestamp()) // self.bucket % per_day
            for signal, track in s.tracks.items():
                value = signal_value(signal, row, self.settings.min_requests)
                if value is None:
                    track.skip()  # the ring stays in bucket order: the same time yesterday is per_day back
                    continue
                # learning history, or resting after an anomaly (one incident, one anomaly): no range needed
                judge = alert and track.seen >= max(self.settings.min_history, track.rest_until)
                expected = track.expected(slot) if judge else None
                if track.detector is not None:
                    score = track.detector.update(t, value)
                else:
                    score = track.score(value, expected) if judge else 0.0
                if judge and score >= self.settings.threshold:
                    a = self._judge(signal, s.scope, t, value, expected, score, row)
                    if a is not None:
                        found.append(a)
                        track.rest_until = track.seen + self.rest_buckets
                track.add(slot, value)
            s.last = t
            t += step
        return found

    def _judge(self, signal: str, scope: dict[str, str], t: datetime, value: float,
               expected: tuple[float, float, float] | None, score: float, row: ActivityRow | None) -> Anomaly | None:  # fmt: skip
        """An anomaly if the value is outside its expected range by enough to matter, else None."""
        if expected is None:
            return None
        mid, low, high = expected
        if low <= value <= high:
            return None
        direction = "up" if value > high else "down"
        if direction == "down" and signal in UP_ONLY:
            return None
        if signal == "cost" and abs(value - mid) < float(self.settings.min_change_usd):
            return None
        if signal in ("tokens", "requests", "tokens_per_call") and abs(value - mid) < 0.5 * max(mid, 1.0):
            return None
        # a handful of calls (or tokens) more or less in a quiet scope is noise, whatever the ratio
        if signal == "requests" and abs(value - mid) < self.settings.min_requests:
            return None
        if signal == "tokens" and abs(value - mid) < self.settings.call_min_tokens:
            return None
        if signal in ("error_rate", "rate_limited") and value - mid < 0.05:
            return None
        if signal == "latency" and value < 1.5 * mid:
            return None
        exact = (row.cost_usd if row is not None else Decimal(0)) if signal == "cost" else None
        return Anomaly("series", signal, scope, t, self.bucket, value, mid, low, high, score,
                       severity(value, mid, high, direction), direction, actual_usd=exact)  # fmt: skip

    # --- explanation --------------------------------------------------------------------------------------
    def _explain(self, a: Anomaly) -> Anomaly:
        """Contributors against the hour before, and for money what changed."""
        end = a.bucket_start + timedelta(seconds=self.bucket)
        base_start = a.bucket_start - timedelta(seconds=BASELINE_BUCKETS * self.bucket)
        measure = _MEASURE.get(a.signal, _MEASURE["cost"])
        contributors: list[dict[str, Any]] = []
        for dim in CONTRIBUTOR_DIMENSIONS:
            if dim in a.scope:
                continue
            rows = self.ledger.activity(ReportQuery.build(by=[dim], since=base_start, until=end, where=a.scope),
                                        self.bucket)  # fmt: skip
            now_v: dict[str, float] = {}
            base_v: dict[str, float] = {}
            for r in rows:
                target = now_v if r.bucket == a.bucket_start else base_v
                target[r.keys[dim]] = target.get(r.keys[dim], 0.0) + measure(r)
            for value in set(now_v) | set(base_v):
                if value in (NONE, UNTAGGED):
                    continue  # "no user" is not a contributor
                delta = now_v.get(value, 0.0) - base_v.get(value, 0.0) / BASELINE_BUCKETS
                contributors.append({"dimension": dim, "value": value, "delta": delta})
        total = sum(c["delta"] for c in contributors if c["dimension"] == "key") or sum(
            c["delta"] for c in contributors if c["dimension"] == "model")
        sign = 1 if a.direction == "up" else -1
        contributors.sort(key=lambda c: -sign * c["delta"])
        top: list[dict[str, Any]] = []
        seen: set[str] = set()
        for c in contributors:
            if sign * c["delta"] <= 0 or len(top) >= 4 or c["dimension"] in seen and len(top) >= 2:
                continue
            seen.add(c["dimension"])
            share = c["delta"] / total if total else None
            shown = _show_delta(a.signal, c["delta"])
            top.append({"dimension": c["dimension"], "value": c["value"], "delta": c["delta"],
                        "share": None if share is None else round(share, 4),
                        "change": shown + (f" ({share:.0%})" if share is not None and 0 < share <= 1 else "")})  # fmt: skip
        changes = None
        if a.signal in MONEY_SIGNALS:
            rows = self.ledger.activity(ReportQuery.build(by=["model"], since=base_start, until=end, where=a.scope),
                                        self.bucket)  # fmt: skip
            base = [MixRow(r.keys["model"], r.requests, r.tokens, r.cost_usd) for r in rows if r.bucket != a.bucket_start]
            now = [MixRow(r.keys["model"], r.requests, r.tokens, r.cost_usd) for r in rows if r.bucket == a.bucket_start]
            effects = decompose(base, now, base_scale=Decimal(1) / BASELINE_BUCKETS)
            changes = {**effects.to_json(), "largest": effects.largest(), "sentence": effects.sentence()}
        return replace(a, contributors=top, changes=changes)

    def _call_outliers(self, start: datetime, end: datetime) -> list[Anomaly]:
        usual = {f: t / c for f, (c, t) in self.usual_tokens.items() if c >= 20 and t > 0}
        if not usual:
            return []
        # no call has 2**62 tokens: a call_factor of 1e300 (or inf) finds none, rather than overflow int() or the SQL
        bound = min(min(usual.values()) * self.settings.call_factor, 2**62)
        floor = min(max(self.settings.call_min_tokens, int(bound)), 2**62)
        found = []
        calls = self.ledger.large_calls(start, end, floor, self.where)
        for rid, ts, key_id, user, team, feature, model, inp, out, cost in calls:
            feature = feature or UNTAGGED
            typical = usual.get(feature)
            tokens = int(inp) + int(out)
            if typical is None or tokens < typical * self.settings.call_factor or tokens < self.settings.call_min_tokens:
                continue
            t = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
            who = [{"dimension": d, "value": v, "delta": None, "share": None, "change": ""}
                   for d, v in (("key", key_id), ("user", user), ("model", model), ("team", team)) if v]  # fmt: skip
            ratio = tokens / typical
            found.append(Anomaly("call", "tokens_per_call", {**self.where, "feature": feature}, t, 0, float(tokens), typical,
                                 None, None, 1.0, "critical" if ratio >= 500 else "high", "up", who,
                                 {"cost_usd": format_usd(Decimal(cost))} if cost is not None else None, rid))  # fmt: skip
        return found


def fold(found: list[Anomaly]) -> list[Anomaly]:
    """One anomaly per incident: in a bucket, the tokens, calls and tokens-per-call anomalies of a scope whose spend
    is anomalous too are folded into the spend anomaly (as ``related``), and a scope whose anomaly is the same as a
    broader scope's (same signal, same value within 1 %) is left out for the broader one."""
    by_scope: dict[tuple[datetime, str], dict[str, Anomaly]] = {}
    for a in found:
        by_scope.setdefault((a.bucket_start, repr(sorted(a.scope.items()))), {})[a.signal] = a
    merged: list[Anomaly] = []
    for signals in by_scope.values():
        cost = signals.get("cost")
        for signal, a in signals.items():
            if cost is not None and signal in ("tokens", "requests", "tokens_per_call"):
                continue
            if a is cost:
                related = [{"signal": o.signal, "actual": o.actual, "expected": o.expected, "message": o.message}
                           for o in signals.values() if o is not cost and o.signal in ("tokens", "requests",
                                                                                        "tokens_per_call")]  # fmt: skip
                a = replace(a, related=related)
            merged.append(a)
    merged.sort(key=lambda a: (a.bucket_start, len(a.scope), a.name))
    kept: list[Anomaly] = []
    for a in merged:
        if any(k.bucket_start == a.bucket_start and k.signal == a.signal and len(k.scope) <= len(a.scope)
               and all(a.scope.get(d, v) == v for d, v in k.scope.items())  # no conflicting value
               and (k.actual > 0 or k.scope.items() <= a.scope.items())
               and abs(k.actual - a.actual) <= 0.01 * max(abs(k.actual), 1e-9) for k in kept):  # fmt: skip
            continue  # the same calls seen from a broader scope (a value of 0 is the same only within it)
        kept.append(a)
    return kept


def _show_delta(signal: str, delta: float) -> str:
    sign = "+" if delta >= 0 else "−"
    if signal == "cost":
        return f"{sign}${format_usd(Decimal(repr(round(abs(delta), 6))))}"
    unit = {"latency": " calls", "requests": " calls", "error_rate": " errors", "rate_limited": " 429s"}.get(signal, "")
    return f"{sign}{abs(delta):,.0f}{unit}"


_MEASURE: dict[str, Callable[[ActivityRow], float]] = {
    "cost": lambda r: float(r.cost_usd),
    "tokens": lambda r: float(r.tokens),
    "tokens_per_call": lambda r: float(r.tokens),
    "requests": lambda r: float(r.requests),
    "error_rate": lambda r: float(r.errors),
    "rate_limited": lambda r: float(r.rate_limited),
    "latency": lambda r: float(r.requests),  # who sent the slow calls: their calls
}


def matches(scope: Mapping[str, str], want: Mapping[str, str]) -> bool:
    """Whether an anomaly's scope is inside ``want`` (every condition of ``want`` is in the scope)."""
    return all(scope.get(k) == v for k, v in want.items())


__all__ = ["Anomaly", "AnomalyWatch", "Detector", "matches", "severity", "signal_value"]
