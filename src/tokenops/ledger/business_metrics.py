"""Business metrics: outside counts (tickets resolved, summaries written, active customers) kept beside the spend.

A metric row is the count of one ``metric`` on one calendar ``day`` for one set of ``tags`` (``team``,
``feature``, ``customer``…, the same words as the spend's tags). ``(day, metric, tags)`` identifies a row:
importing it again replaces its value (:meth:`tokenops.ledger.base.Ledger.put_business_metrics`), so an import
can be re-run. Unit costs divide the spend of a scope by the metric rows whose tags match that scope (see
:mod:`tokenops.services.units`). Values are exact decimals (DECIMAL(38,12)), never negative.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from tokenops.tags import format_tags


@dataclass(frozen=True)
class MetricRow:
    day: date
    metric: str
    value: Decimal
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return metric_id(self.day, self.metric, self.tags)


def metric_id(day: date, metric: str, tags: Mapping[str, str]) -> str:
    """The key of a metric row: ``2026-10-01|tickets_resolved|feature=support-bot,team=support``. Unambiguous:
    metric and tag names cannot hold ``|``, ``,`` or ``=``, tag values neither ``,`` nor ``=``; tags sorted."""
    return f"{day.isoformat()}|{metric}|{format_tags(tags)}"


@dataclass(frozen=True)
class MetricsWritten:
    """What :meth:`~tokenops.ledger.base.Ledger.put_business_metrics` did: rows new to the ledger, and rows it
    held already (same day, metric and tags), whose value was replaced."""

    added: int
    replaced: int
