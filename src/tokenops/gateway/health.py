"""The gateway's health, part by part, and the alerts sent when a part goes down or comes back.

    spool   the append-only file every answered call is written to first (disk full, folder gone, …)
    writer  the process that drains the spool into the ledger (dead, failing, stalled)
    ledger  the database (unreachable, refusing); a DuckDB file busy with another process's turn is fine
    state   the shared state (Redis) several gateways count budgets and limits in

``/readyz`` answers from :func:`check`; every ``gateway.key_refresh`` seconds the gateway also checks and hands
the result to :class:`HealthWatch`, which sends one ``system`` alert through the alert channels when a part goes
down and one when it is back. Several gateways sharing a state send each alert once (a claim in the state
decides which); when the state itself is what is down, each gateway sends its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tokenops.alerts import Alert, new_alert_id
from tokenops.errors import LedgerBusy, LedgerError
from tokenops.ledger.base import Ledger
from tokenops.ledger.spool import REJECTED, Spool
from tokenops.policy.state import PolicyState, StateUnavailable

if TYPE_CHECKING:
    from tokenops.gateway.writer import LedgerWriter

log = logging.getLogger("tokenops.health")
PARTS = ("spool", "writer", "ledger", "state")
ONCE_FOR = 300.0  # seconds during which one gateway's alert about a part stands for every gateway's


@dataclass
class Health:
    problems: dict[str, list[str]] = field(default_factory=lambda: {p: [] for p in PARTS})
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def flat(self) -> list[str]:
        return [p for part in PARTS for p in self.problems[part]]


async def check(spool: Spool | None, spool_dir: Path, state: PolicyState, writer: LedgerWriter | None,
                ledger: Ledger) -> Health:  # fmt: skip
    h = Health()
    if spool is not None:
        await asyncio.to_thread(spool.heal)
        problem = spool.problem()
        if problem:
            h.problems["spool"].append(problem)
        if spool.deferred:
            h.problems["spool"].append(f"{spool.deferred} answered calls wait for the spool's disk")
    if not os.access(spool_dir, os.W_OK):
        h.problems["spool"].append(f"spool folder {spool_dir} is missing or not writable")
    if (spool_dir / REJECTED).exists():
        h.warnings.append(f"lines the ledger could not take are kept in {spool_dir / REJECTED}")
    if writer is not None:
        h.problems["writer"] += writer.problems()
    try:
        await asyncio.to_thread(ledger.ping)
    except LedgerBusy:
        pass  # another process's turn: the spool holds events until it is free
    except LedgerError as exc:
        h.problems["ledger"].append(f"ledger: {exc}")
    problem, warning = await state.health()
    if problem:
        h.problems["state"].append(problem)
    if warning:
        h.warnings.append(warning)  # fail_open: serving with local counters is degraded, not unready
    return h


class HealthWatch:
    """Turns health checks into ``system`` alerts on each change (down, recovered)."""

    def __init__(self, submit: Callable[[Alert], None], state: PolicyState,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):  # fmt: skip
        self.submit = submit
        self.state = state
        self.clock = clock
        self.down: dict[str, str] = {}

    async def update(self, health: Health) -> None:
        for part in PARTS:
            problems = health.problems[part]
            was = self.down.get(part)
            if problems and was is None:
                self.down[part] = problems[0]
                await self._send(part, "down", problems[0])
            elif not problems and was is not None:
                del self.down[part]
                await self._send(part, "recovered", f"{part} is working again (it was: {was})")

    async def _send(self, part: str, status: str, message: str) -> None:
        me = new_alert_id()
        try:
            if await self.state.claim(f"system:{part}:{status}", me, ONCE_FOR) != me:
                return  # another gateway has told the channels already
        except StateUnavailable:
            pass  # the state is (also) down: every gateway tells
        now = self.clock()
        log.error("%s %s: %s", part, status, message) if status == "down" else log.warning("%s %s", part, message)
        self.submit(Alert(id=me, kind="system", budget=part, scope={}, period_start=now, period_end=now, threshold=None,
                          spent_usd=None, amount_usd=None, message=message, fired_at=now,
                          details={"status": status}))  # fmt: skip
