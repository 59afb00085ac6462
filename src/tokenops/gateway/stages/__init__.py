"""The gateway's stages, in order: key → validate → tags → router → policy → cache (then upstream → meter).

A stage is any object with ``async def __call__(self, call) -> Answer | None`` (:class:`Stage`): it reads and
fills the :class:`~tokenops.call.Call` and returns None to let it go on, returns an :class:`Answer` to answer the
call itself (a cache hit: the upstream is not called), or raises :class:`~tokenops.errors.GatewayError` to refuse
it with an error in the client's shape. Each answered or refused call is recorded once by the meter. The list is
assembled in one place, :func:`tokenops.gateway.app.build_stages`: adding a stage is one line there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenops.call import Call
from tokenops.ledger.events import Status


@dataclass(slots=True)
class Answer:
    """A response a stage gives in place of the provider's, and how the meter records the call.

    ``body`` is the whole response; ``status`` and ``headers`` are sent as they are (the gateway adds its own
    ``X-TokenOps-*`` headers). The call is recorded at no cost (no provider was paid), with ``outcome`` as its
    event's ``status`` and ``fields`` as more of the meter's event fields (``model_used``, ``error_code``, …)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    outcome: Status = "ok"
    fields: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    async def __call__(self, call: Call) -> Answer | None: ...
