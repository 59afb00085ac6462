"""``tokenops anomalies`` and the admin API's anomaly list: what the live watch recorded, or a scan of the ledger.

The gateway's watch records each anomaly as an alert of kind ``anomaly`` (see :mod:`tokenops.gateway.anomalies`);
listing reads them back. ``scan`` runs the same watch over a window of the ledger now, for a ledger no gateway
watched (imports, a first look) or to see what a different setting would have flagged; it records nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenops.analytics.watch import AnomalyWatch, matches
from tokenops.config import AnomaliesConfig
from tokenops.errors import UsageError
from tokenops.ledger.base import Ledger

SEVERITIES = ("low", "medium", "high", "critical")


def _keep(row: Mapping[str, Any], scope: Mapping[str, str], signal: str | None, min_severity: str | None) -> bool:
    if not matches(row.get("scope") or {}, scope):
        return False
    if signal and row.get("signal") != signal:
        return False
    if min_severity and SEVERITIES.index(row.get("severity", "low")) < SEVERITIES.index(min_severity):
        return False
    return True


def check(signal: str | None, min_severity: str | None) -> None:
    from tokenops.config import SIGNALS

    if signal is not None and signal not in SIGNALS:
        raise UsageError(f"--signal must be one of {', '.join(SIGNALS)}, not {signal!r}")
    if min_severity is not None and min_severity not in SEVERITIES:
        raise UsageError(f"--severity must be one of {', '.join(SEVERITIES)}, not {min_severity!r}")


def _window(since: datetime | None, until: datetime) -> None:
    if since is not None and since >= until:  # an empty window would answer "no anomalies", which it cannot know
        raise UsageError(f"--since ({since.astimezone(UTC):%Y-%m-%d %H:%M} UTC) must be before --until "
                         f"({until.astimezone(UTC):%Y-%m-%d %H:%M} UTC; default: now)")  # fmt: skip


def recorded(ledger: Ledger, since: datetime | None, until: datetime | None, scope: Mapping[str, str],
             signal: str | None = None, min_severity: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The anomalies the live watch recorded in the window, oldest first (each as :meth:`Anomaly.to_json`)."""
    check(signal, min_severity)
    _window(since, until or datetime.now(UTC))
    out = []
    for r in ledger.anomalies(since, until):
        row = dict(r["details"]) or {"id": r["id"], "message": r["message"]}
        row.setdefault("bucket_start", r["bucket_start"].isoformat())
        row["recorded_at"] = r["fired_at"].isoformat()
        if _keep(row, scope, signal, min_severity):
            out.append(row)
    return out


def scan(ledger: Ledger, settings: AnomaliesConfig, since: datetime | None, until: datetime | None,
         scope: Mapping[str, str], signal: str | None = None, min_severity: str | None = None,
         now: datetime | None = None, bucket: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Run the watch over [since, until) of the ledger (default: the last day), learning from ``history`` before:
    within ``scope`` only (each series is the scope and one of the configured dimensions), in ``bucket``-second
    buckets if given (an hour makes a scan of weeks quick)."""
    check(signal, min_severity)
    if bucket is not None:
        if not 60 <= bucket <= 86400:
            raise UsageError(f"--bucket must be 60 to 86400 seconds, not {bucket}")
        # coarser buckets need a longer history for the same number of them (the detector learns from rows)
        history = min(max(settings.history, settings.min_history * bucket), 90 * 86400)
        settings = settings.model_copy(update={"bucket": bucket, "history": history,
                                               "min_history": min(settings.min_history, history // bucket)})
    now = now or datetime.now(UTC)
    end = until or now
    start = since or end - timedelta(days=1)
    _window(start, end)
    if (end - start).total_seconds() / settings.bucket > 100_000:
        raise UsageError(f"--scan over {end - start} in {settings.bucket} s buckets is too long: narrow --since")
    watch = AnomalyWatch(ledger, settings, where=scope)
    found = watch.scan(start, end)
    return [a.to_json() for a in found if _keep(a.to_json(), scope, signal, min_severity)]
