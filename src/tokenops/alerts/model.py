"""The alert value type, the channel interface and the words every channel uses to describe an alert.

The policy engine builds an :class:`Alert` when a budget crosses a threshold, is forecast to run out before its
period ends, or blocks a call; the anomaly detector builds an ``anomaly`` alert (``budget`` names the signal and scope, ``details`` holds the
expected range, the actual value, the severity and the contributors); the gateway builds a ``system`` alert when one of its parts goes down or comes back
(``budget`` then names the part: ``ledger``, ``state``, ``spool``; ``details.status`` is ``down`` or ``recovered``). An alert is a plain frozen value: it is serialised once (:meth:`Alert.to_json`)
for machines (webhooks) and described once (:func:`describe`, :func:`subject`) for people (Slack, email), so
every channel says the same thing the same way.

Field meanings:

* ``threshold`` is a fraction of the budget (``0.8`` is 80 %); ``None`` for forecast and blocked alerts.
* ``spent_usd`` is what the budget's scope had spent in the period when the alert fired.
* ``amount_usd`` is the budget's amount (its limit) for the period; ``None`` for a budget without a money limit.
* ``period_start`` / ``period_end`` bound the budget period, end exclusive; they carry the budget's time zone
  (a ``zoneinfo.ZoneInfo``) so that the period can be named the way the budget's owner thinks of it.
* ``details`` is free-form; the describers read ``exhausts_at`` (or ``exhausted_at``: a datetime or ISO string)
  of forecast alerts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from tokenops.errors import TokenOpsError

AlertKind = Literal["threshold", "forecast", "blocked", "system", "anomaly"]
KINDS: tuple[str, ...] = ("threshold", "forecast", "blocked", "system", "anomaly")


class AlertDeliveryError(TokenOpsError):
    """A channel could not deliver an alert; the message names the channel and never holds a secret."""

    def __init__(self, message: str, *, channel: str | None = None, status: int | None = None):
        self.channel = channel
        self.status = status
        super().__init__(message)


def new_alert_id() -> str:
    """A fresh alert id; receivers use it to drop duplicates of a retried delivery."""
    return f"alert_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Alert:
    """One budget event, ready to be delivered to any number of channels.

    Alert(id=new_alert_id(), kind="threshold", budget="alpha-monthly", scope={"team": "alpha"},
          period_start=datetime(2026, 11, 1, tzinfo=ZoneInfo("Europe/Berlin")),
          period_end=datetime(2026, 12, 1, tzinfo=ZoneInfo("Europe/Berlin")),
          threshold=0.8, spent_usd=Decimal("200"), amount_usd=Decimal("250"),
          message="team alpha passed 80% of its monthly budget", fired_at=datetime.now(UTC), details={})
    """

    id: str
    kind: AlertKind
    budget: str
    scope: dict[str, str]
    period_start: datetime
    period_end: datetime
    threshold: float | None
    spent_usd: Decimal | None
    amount_usd: Decimal | None
    message: str
    fired_at: datetime
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked here because a bad alert would otherwise only fail inside a background channel, far from the
        # code that built it.
        if self.kind not in KINDS:
            raise ValueError(f"alert kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        for name in ("period_start", "period_end", "fired_at"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"alert {name} must be a time-zone-aware datetime, got {value!r}")
        for name in ("spent_usd", "amount_usd"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, Decimal) or not value.is_finite()):
                raise ValueError(f"alert {name} must be a finite Decimal or None, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: Decimals as exact strings, datetimes as ISO 8601 in UTC (``...Z``)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "budget": self.budget,
            "scope": dict(self.scope),
            "period_start": iso_utc(self.period_start),
            "period_end": iso_utc(self.period_end),
            "timezone": timezone_name(self.period_start),
            "threshold": self.threshold,
            "spent_usd": _money(self.spent_usd),
            "amount_usd": _money(self.amount_usd),
            "message": self.message,
            "fired_at": iso_utc(self.fired_at),
            "details": _jsonable(self.details),
        }


@runtime_checkable
class Channel(Protocol):
    """Where alerts go. ``send`` raises :class:`AlertDeliveryError` when the alert could not be delivered.

    Third-party channels implement the same two members as the built-in ones; the dispatcher needs nothing else.
    """

    name: str

    async def send(self, alert: Alert) -> None: ...


# --- serialisation ------------------------------------------------------------------------------------------


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _money(value: Decimal | None) -> str | None:
    # str() of a Decimal is exact; format(value, "f") avoids exponents like 1E+2 that some parsers refuse.
    return None if value is None else format(value, "f")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return iso_utc(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


# --- words for people ---------------------------------------------------------------------------------------

_EMOJI = {"threshold": ":warning:", "forecast": ":chart_with_upwards_trend:", "blocked": ":no_entry:",
          "system": ":rotating_light:", "anomaly": ":mag:"}


def format_usd(value: Decimal) -> str:
    """``$1,234.50``; amounts under a cent keep their significant digits (``$0.0042``) rather than show $0.00."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value == 0 or value >= Decimal("0.01"):
        return f"{sign}${value.quantize(Decimal('0.01')):,}"
    return f"{sign}${value.normalize():f}"


def format_percent(threshold: float) -> str:
    return f"{round(threshold * 100, 2):g}%"


def timezone_name(value: datetime) -> str:
    tz = value.tzinfo
    if isinstance(tz, ZoneInfo):
        return tz.key
    if value.utcoffset() == timedelta(0):
        return "UTC"
    return value.tzname() or "UTC"


def period_label(start: datetime, end: datetime) -> str:
    """``Nov 2026, Europe/Berlin`` for a calendar month, ``12 Nov 2026, UTC`` for a day, else a range."""
    end_local = end.astimezone(start.tzinfo)
    tz = timezone_name(start)
    midnight = start.time() == end_local.time() == datetime.min.time()
    if midnight and start.day == 1 and end_local.day == 1:
        months = (end_local.year - start.year) * 12 + end_local.month - start.month
        if months == 1:
            return f"{start:%b %Y}, {tz}"
        if months == 12 and start.month == 1:
            return f"{start:%Y}, {tz}"
    if midnight and end_local.date() - start.date() == timedelta(days=1):
        return f"{start.day} {start:%b %Y}, {tz}"
    last = end_local - timedelta(days=1) if midnight else end_local
    return f"{start.day} {start:%b %Y} – {last.day} {last:%b %Y}, {tz}"


def scope_label(scope: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in scope.items())


def exhausts_at(alert: Alert) -> datetime | None:
    raw = alert.details.get("exhausts_at", alert.details.get("exhausted_at"))  # the policy engine says the latter
    if isinstance(raw, datetime):
        when = raw
    elif isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            return None
    else:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(alert.period_start.tzinfo)


def _what(alert: Alert) -> str:
    if alert.kind == "threshold":
        return f"passed {format_percent(alert.threshold)}" if alert.threshold is not None else "passed a threshold"
    if alert.kind == "forecast":
        when = exhausts_at(alert)
        if when is None:
            return "is projected to run out before its period ends"
        return f"will run out on {when.day} {when:%b} at the current rate"
    return "blocked a call"


def describe(alert: Alert, *, bold: Callable[[str], str] = str, emoji: bool = False) -> str:
    """One readable line, e.g.

    ``TokenOps budget alpha-monthly (team=alpha) passed 80% — $200.00 of $250.00 spent (Nov 2026, Europe/Berlin).``
    Slack passes ``bold`` (``*name*``) and ``emoji``; email uses the plain line.
    """
    if alert.kind == "anomaly":  # the anomaly detector: budget names the signal and scope, message explains it
        return " ".join([*([_EMOJI["anomaly"]] if emoji else []), "TokenOps anomaly", bold(alert.budget) + ":",
                         alert.message])
    if alert.kind == "system":  # about TokenOps itself (a part down or back), not a budget
        return " ".join([*([_EMOJI["system"]] if emoji else []), "TokenOps", bold(alert.budget) + ":", alert.message])
    scope = scope_label(alert.scope)
    parts = [_EMOJI[alert.kind]] if emoji else []
    parts += ["TokenOps budget", bold(alert.budget)]
    if scope:
        parts.append(f"({scope})")
    parts.append(_what(alert))
    line = " ".join(parts)
    if alert.spent_usd is not None and alert.amount_usd is not None:
        line += f" — {format_usd(alert.spent_usd)} of {format_usd(alert.amount_usd)} spent"
    elif alert.spent_usd is not None:
        line += f" — {format_usd(alert.spent_usd)} spent"
    return f"{line} ({period_label(alert.period_start, alert.period_end)})."


def subject(alert: Alert) -> str:
    """An email subject: ``[TokenOps] Budget alpha-monthly at 80%``."""
    budget = " ".join(alert.budget.split())  # no CR/LF may reach a mail header
    if alert.kind == "system":
        return f"[TokenOps] {budget} {alert.details.get('status', 'problem')}"
    if alert.kind == "anomaly":
        return f"[TokenOps] Anomaly ({alert.details.get('severity', 'unknown')}): {budget}"
    if alert.kind == "threshold":
        at = format_percent(alert.threshold) if alert.threshold is not None else "threshold"
        return f"[TokenOps] Budget {budget} at {at}"
    if alert.kind == "forecast":
        when = exhausts_at(alert)
        return f"[TokenOps] Budget {budget} projected to run out" + (f" on {when.day} {when:%b}" if when else "")
    return f"[TokenOps] Budget {budget} blocked a call"
