"""Approval requests: list them, decide them (grant with an end and a spend cap, or deny)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from tokenops.errors import NotFoundError, UsageError
from tokenops.ledger.base import Ledger
from tokenops.ledger.records import Approval

STATUSES = ("pending", "approved", "denied", "expired")


def list_approvals(ledger: Ledger, status: str | None = None, now: datetime | None = None) -> list[Approval]:
    """Newest first, each as it stands now (a week-old pending request, a grant past its end: expired)."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"status must be one of {', '.join(STATUSES)}")
    now = now or datetime.now(UTC)
    found = [a.as_of(now) for a in ledger.approvals()]
    return [a for a in found if status is None or a.status == status]


def decide(ledger: Ledger, approval_id: str, *, approve: bool, by: str, until: datetime | None = None,
           max_usd: Decimal | None = None, now: datetime | None = None) -> Approval:  # fmt: skip
    now = now or datetime.now(UTC)
    if until is not None:
        try:
            until = (until if until.tzinfo else until.replace(tzinfo=UTC)).astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-14:00 is after the year 9999 in UTC
            raise UsageError("until is outside the years 1 to 9999 in UTC") from None
        if until <= now:
            raise UsageError("until must be in the future")
    if max_usd is not None and max_usd <= 0:
        raise UsageError("max_usd must be greater than 0")
    found = {a.id: a for a in list_approvals(ledger, now=now)}.get(approval_id)
    if found is None:
        raise NotFoundError(f"no approval request {approval_id!r} (see: tokenops approvals list)")
    if found.status == "expired":
        raise UsageError(f"approval request {approval_id} has expired; the caller must ask again")
    if found.status != "pending":
        raise UsageError(f"approval request {approval_id} was already {found.status}")
    ledger.decide_approval(approval_id, "approved" if approve else "denied", by=by, at=now, until=until,
                           max_usd=max_usd)  # fmt: skip
    return {a.id: a for a in list_approvals(ledger, now=now)}[approval_id]
