"""Governance records in the ledger: budgets defined through the CLI/API, approvals, fired alerts, and the
spend sums that seed budget counters."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.money import format_usd
from tokenops.policy.scopes import Scope

PENDING_EXPIRY = timedelta(days=7)  # an approval request nobody answered within a week is void


def new_approval_id() -> str:
    return "apr_" + secrets.token_hex(6)


def _naive(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.astimezone(UTC).replace(tzinfo=None)


def _aware(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Approval:
    id: str
    status: str  # pending | approved | denied | expired
    key_id: str | None
    reason: str  # budget:<name> | rule:<name>
    model: str | None
    message: str | None
    requested_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    until: datetime | None = None
    max_usd: Decimal | None = None

    def active(self, now: datetime) -> bool:
        return self.status == "approved" and (self.until is None or now < self.until)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "key_id": self.key_id, "reason": self.reason, "model": self.model,
            "message": self.message, "requested_at": self.requested_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None, "decided_by": self.decided_by,
            "until": self.until.isoformat() if self.until else None,
            "max_usd": None if self.max_usd is None else format_usd(self.max_usd),
        }  # fmt: skip


class GovernanceStore:
    def __init__(self, ledger: DuckDBLedger):
        self.ledger = ledger

    # --- budgets defined at run time --------------------------------------------------------------
    def put_budget(self, name: str, definition: dict[str, Any], by: str | None = None) -> None:
        with self.ledger.connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO budgets VALUES (?, ?, ?, ?)",
                [name, orjson.dumps(definition).decode(), datetime.now(UTC).replace(tzinfo=None), by],
            )

    def delete_budget(self, name: str) -> bool:
        with self.ledger.connect() as conn:
            found = conn.execute("SELECT 1 FROM budgets WHERE name = ?", [name]).fetchone()
            conn.execute("DELETE FROM budgets WHERE name = ?", [name])
        return found is not None

    def budgets(self) -> list[dict[str, Any]]:
        with self.ledger.connect() as conn:
            rows = conn.execute("SELECT definition FROM budgets ORDER BY name").fetchall()
        return [orjson.loads(r[0]) for r in rows]

    # --- limits and rules defined at run time ------------------------------------------------------
    def put_policy(self, kind: str, name: str, definition: dict[str, Any], by: str | None = None) -> None:
        with self.ledger.connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO policies VALUES (?, ?, ?, ?, ?)",
                [kind, name, orjson.dumps(definition).decode(), datetime.now(UTC).replace(tzinfo=None), by],
            )

    def delete_policy(self, kind: str, name: str) -> bool:
        with self.ledger.connect() as conn:
            found = conn.execute("SELECT 1 FROM policies WHERE kind = ? AND name = ?", [kind, name]).fetchone()
            conn.execute("DELETE FROM policies WHERE kind = ? AND name = ?", [kind, name])
        return found is not None

    def policies(self, kind: str) -> list[dict[str, Any]]:
        with self.ledger.connect() as conn:
            rows = conn.execute("SELECT definition FROM policies WHERE kind = ? ORDER BY name", [kind]).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    # --- spend sums -------------------------------------------------------------------------------
    def spent(self, scope: Scope, start: datetime, end: datetime, unit: str) -> Decimal:
        where, params = scope.sql()
        measure = "coalesce(sum(cost_usd), 0)" if unit == "usd" else "coalesce(sum(input_tokens + output_tokens), 0)"
        with self.ledger.connect() as conn:
            row = conn.execute(
                f"SELECT {measure} FROM events WHERE ts >= ? AND ts < ? AND {where}",
                [_naive(start), _naive(end), *params],
            ).fetchone()
        return Decimal(row[0]) if row else Decimal(0)

    def approval_spend(self) -> dict[str, Decimal]:
        with self.ledger.connect() as conn:
            rows = conn.execute(
                "SELECT approval_id, coalesce(sum(cost_usd), 0) FROM events WHERE approval_id IS NOT NULL GROUP BY 1"
            ).fetchall()
        return {r[0]: Decimal(r[1]) for r in rows}

    # --- alerts ----------------------------------------------------------------------------------
    def fired_alerts(self, since: datetime) -> set[tuple[str, str, str, float | None]]:
        """(kind, budget, period start ISO, threshold) of alerts fired for periods starting at/after ``since``."""
        with self.ledger.connect() as conn:
            rows = conn.execute(
                "SELECT kind, budget, period_start, threshold FROM alerts WHERE period_start >= ?", [_naive(since)]
            ).fetchall()
        return {(k, b, _aware(p).isoformat(), t) for k, b, p, t in rows}

    def alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.ledger.connect() as conn:
            rows = conn.execute(
                "SELECT id, kind, budget, period_start, threshold, message, fired_at FROM alerts "
                "ORDER BY fired_at DESC LIMIT ?", [limit],
            ).fetchall()  # fmt: skip
        return [{"id": r[0], "kind": r[1], "budget": r[2], "period_start": _aware(r[3]).isoformat(),
                 "threshold": r[4], "message": r[5], "fired_at": _aware(r[6]).isoformat()} for r in rows]  # fmt: skip

    # --- approvals -------------------------------------------------------------------------------
    def approvals(self, status: str | None = None) -> list[Approval]:
        now = datetime.now(UTC)
        with self.ledger.connect() as conn:
            rows = conn.execute(
                "SELECT id, status, key_id, reason, model, message, requested_at, decided_at, decided_by, until, "
                "max_usd FROM approvals ORDER BY requested_at DESC"
            ).fetchall()
        out = []
        for r in rows:
            a = Approval(r[0], r[1], r[2], r[3], r[4], r[5], _aware(r[6]), _aware(r[7]), r[8], _aware(r[9]),
                         None if r[10] is None else Decimal(r[10]))  # fmt: skip
            if a.status == "pending" and now - a.requested_at > PENDING_EXPIRY:
                a = Approval(**{**a.__dict__, "status": "expired"})
            elif a.status == "approved" and a.until is not None and now >= a.until:
                a = Approval(**{**a.__dict__, "status": "expired"})
            if status is None or a.status == status:
                out.append(a)
        return out

    def decide(self, approval_id: str, *, approve: bool, by: str, until: datetime | None = None,
               max_usd: Decimal | None = None) -> Approval:  # fmt: skip
        from tokenops.errors import UsageError

        found = {a.id: a for a in self.approvals()}.get(approval_id)
        if found is None:
            raise UsageError(f"no approval request {approval_id!r} (see: tokenops approvals list)")
        if found.status == "expired":
            raise UsageError(f"approval request {approval_id} has expired; the caller must ask again")
        if found.status != "pending":
            raise UsageError(f"approval request {approval_id} was already {found.status}")
        now = datetime.now(UTC)
        if until is not None and until <= now:
            raise UsageError("--until must be in the future")
        with self.ledger.connect() as conn:
            conn.execute(
                "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, until = ?, max_usd = ? WHERE id = ?",
                ["approved" if approve else "denied", _naive(now), by, _naive(until), max_usd, approval_id],
            )
        return {a.id: a for a in self.approvals()}[approval_id]
