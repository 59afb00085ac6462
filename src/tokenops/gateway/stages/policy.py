"""Policy stage: budgets, rate limits, caps and model rules decide whether a call may go on.

A policy is any object with ``async def check(call) -> None`` that raises
:class:`~tokenops.errors.GatewayError` to refuse the call. The foundation ships none enabled; governance
plugs its checks in here without touching the other stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tokenops.call import Call


class Policy(Protocol):
    async def check(self, call: Call) -> None: ...


class PolicyStage:
    def __init__(self, policies: Sequence[Policy] = ()):
        self.policies = tuple(policies)

    async def __call__(self, call: Call) -> None:
        for policy in self.policies:
            await policy.check(call)
