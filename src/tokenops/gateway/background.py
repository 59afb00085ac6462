"""Background Responses (``POST /v1/responses`` with ``background: true``): metered once, when they end.

The provider answers such a call at once with ``status: "queued"`` and no usage; the tokens are spent later.
The gateway keeps the call (its key, tags, model, price and its budget reservation, which stays held so a hard
budget remains an upper bound while the response runs) until the response reaches a terminal status
(``completed``, ``incomplete``, ``failed``, ``cancelled``), then records it like any call, priced from the usage
of the final response. Whichever comes first meters it, never both: a check every ``gateway.background_poll``
seconds, or a client fetching (or cancelling) it through the gateway and getting it back finished.

Nothing answered is lost: each pending response is written (fsync'd) to ``<spool>/background/<request id>.json``
before the client gets its ``queued`` answer, and removed once the call is in the spool. A gateway that
restarts picks the files up and goes on checking; a call recorded just before a crash and picked up again is
not recorded twice (the ledger keeps one event per request id). A response the provider no longer knows (404:
deleted before it finished) is recorded with its input estimated, flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from tokenops.call import Call
from tokenops.gateway.client import TransportFailure, UpstreamClient
from tokenops.gateway.meter import Meter
from tokenops.gateway.periodic import Periodic
from tokenops.gateway.providers.base import Adapter
from tokenops.keys import KeyRecord
from tokenops.ledger.events import SpendEvent
from tokenops.ledger.spool import SpoolUnavailable
from tokenops.tokens import InputShape, estimate_input
from tokenops.usage import MalformedUsage, Usage

log = logging.getLogger("tokenops.background")
TERMINAL = frozenset(("completed", "incomplete", "failed", "cancelled"))
RUNNING = frozenset(("queued", "in_progress"))


@dataclass(slots=True)
class Pending:
    call: Call
    response_id: str
    path: Path


def _dump(call: Call, response_id: str) -> bytes:
    return orjson.dumps({
        "response_id": response_id, "request_id": call.request_id, "route": call.route, "flavor": call.flavor,
        "ts": call.ts.isoformat(), "key_id": call.key.id if call.key else None, "tags": call.tags,
        "missing_tags": list(call.missing_tags), "end_user": call.end_user, "model_requested": call.model_requested,
        "provider": call.provider_name, "upstream_model": call.upstream_model,
        "price_providers": list(call.price_providers), "approval_id": call.approval_id,
        "downgraded_from": call.downgraded_from, "shape": dataclasses.asdict(call.shape),
        "client_model": call.client_model, "route_reason": call.route_reason,
    })  # fmt: skip


def _load(data: dict[str, Any]) -> tuple[Call, str]:
    key_id = data.get("key_id")
    call = Call(
        request_id=data["request_id"], route=data["route"], flavor=data["flavor"], started=time.perf_counter(),
        ts=datetime.fromisoformat(data["ts"]), headers={},
        key=KeyRecord(id=key_id, name="", key_hash="", key_prefix="") if key_id else None,
        tags=dict(data.get("tags") or {}), missing_tags=tuple(data.get("missing_tags") or ()),
        end_user=data.get("end_user"), model_requested=data["model_requested"], provider_name=data["provider"],
        upstream_model=data["upstream_model"], price_providers=tuple(data.get("price_providers") or ()),
        approval_id=data.get("approval_id"), downgraded_from=data.get("downgraded_from"),
        shape=InputShape(**data.get("shape") or {}), client_model=data.get("client_model"),
        route_reason=data.get("route_reason"), resumed=True,
    )  # fmt: skip
    return call, data["response_id"]


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BackgroundResponses(Periodic):
    def __init__(self, directory: Path, client: UpstreamClient, adapters: dict[str, Adapter],
                 timeouts: dict[str, tuple[float, float]], meter: Meter, interval: float):  # fmt: skip
        self.directory = directory
        self.client = client
        self.adapters = adapters
        self.timeouts = timeouts
        self.meter = meter
        self.interval = interval
        self.pending: dict[str, Pending] = {}  # response id -> the call that created it
        self._metering: set[str] = set()  # responses being metered now (still pending until recorded)

    # --- lifecycle ------------------------------------------------------------------------------
    def load(self) -> int:
        """Pick up what an earlier process left running; returns how many."""
        if not self.directory.is_dir():
            return 0
        for path in sorted(self.directory.glob("*.json")):
            try:
                call, response_id = _load(orjson.loads(path.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("background response file %s is unreadable (%s); left in place", path, exc)
                continue
            if call.provider_name in self.adapters:
                self.pending[response_id] = Pending(call, response_id, path)
            else:
                log.error("background response %s: provider %r is no longer configured; left in %s",
                          response_id, call.provider_name, path)  # fmt: skip
        return len(self.pending)

    # --- tracking -------------------------------------------------------------------------------
    async def track(self, call: Call, response_id: str) -> Call:
        """Keep ``call`` until its response ends; returns the copy that will be metered (it holds the budget
        reservation, which the request handler must then not release)."""
        kept = dataclasses.replace(call)
        call.reservation = None
        path = self.directory / f"{call.request_id}.json"
        await asyncio.to_thread(self._persist, path, _dump(kept, response_id))
        self.pending[response_id] = Pending(kept, response_id, path)
        return kept

    def _persist(self, path: Path, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _write(path, data)

    def owner(self, response_id: str) -> Call | None:
        p = self.pending.get(response_id)
        return p.call if p else None

    async def check_all(self) -> None:
        for response_id in list(self.pending):
            await self.check(response_id)

    async def check(self, response_id: str) -> None:
        """Ask the provider how a pending response stands; meter it if it ended."""
        p = self.pending.get(response_id)
        if p is None:
            return
        adapter = self.adapters[p.call.provider_name]
        connect, read = self.timeouts[p.call.provider_name]
        try:
            resp = await self.client.send(f"{adapter.url('responses')}/{response_id}", adapter.headers({}), b"",
                                          connect=connect, read=read, method="GET")  # fmt: skip
            try:
                body = await resp.read()
            finally:
                await resp.close()
        except TransportFailure as exc:
            log.warning("background response %s: provider unreachable (%s); checked again later", response_id, exc)
            return
        if resp.status == 404:
            await self.settle(response_id, None, lost=True)
            return
        if resp.status >= 400:
            log.warning("background response %s: provider answered %s; checked again later", response_id, resp.status)
            return
        with contextlib.suppress(ValueError):
            await self.settle(response_id, orjson.loads(body))

    async def settle(self, response_id: str, payload: Any, *, lost: bool = False) -> SpendEvent | None:
        """Meter the response if ``payload`` shows it ended (or it is ``lost``); a no-op for one already metered,
        unknown, or still running. Returns the call's event when this metered it."""
        status = str(payload.get("status")) if isinstance(payload, dict) else None
        if not lost and status not in TERMINAL:
            return None
        p = self.pending.get(response_id)
        if p is None or response_id in self._metering:  # checked and marked before any await: one caller meters it
            return None
        self._metering.add(response_id)
        try:  # it stays pending (its owner known to a retrieve) until its event is recorded
            return await self._meter(p, response_id, payload, status, lost)
        finally:
            self._metering.discard(response_id)
            self.pending.pop(response_id, None)

    async def _meter(self, p: Pending, response_id: str, payload: Any, status: str | None,
                     lost: bool) -> SpendEvent | None:  # fmt: skip
        call, adapter = p.call, self.adapters[p.call.provider_name]
        problem: str | None = None
        try:
            usage = adapter.usage("responses", payload)
        except MalformedUsage as exc:  # cancelled or failed before the provider said: may still have been billed
            problem = "background_lost" if lost else exc.code
            usage = Usage(input_tokens=estimate_input(call.shape, call.upstream_model))
        outcome = {"failed": "error", "cancelled": "cancelled"}.get(str(status), "ok")
        error = obj_error(payload) if outcome == "error" else None
        try:
            event = await self.meter.record(
                call, status="error" if lost else outcome, http_status=200, usage=usage,
                model_used=adapter.response_model(payload), usage_estimated=problem is not None,
                error_code=problem or error or (f"response_{status}" if outcome != "ok" else None),
                upstream_request_id=response_id, service_tier=adapter.service_tier("responses", payload),
            )  # fmt: skip
        except SpoolUnavailable:  # kept for the spool to write later; the file stays until the event is on disk
            return call.recorded
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(p.path.unlink)
        return event


def obj_error(payload: Any) -> str | None:
    err = payload.get("error") if isinstance(payload, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    return str(code)[:64] if code else None


__all__ = ["BackgroundResponses", "RUNNING", "TERMINAL"]
