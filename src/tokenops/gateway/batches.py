"""Batches: OpenAI's ``/v1/files`` + ``/v1/batches`` and Anthropic's ``/v1/messages/batches``, metered per result.

A batch is bounded and reserved before it is submitted, and metered once, line by line, when it ends:

* **Requests known up front.** OpenAI batches read an input file: the gateway proxies ``POST /v1/files`` and, for
  ``purpose=batch``, reads the JSONL as it passes (each line a JSON object with ``custom_id``, ``method``,
  ``url`` and ``body``; a line that is not, or whose body the gateway would refuse as a call, is a 400 naming
  the line), resolves each line's model (aliases become the upstream name, written into the file it uploads)
  and keeps a summary of every line (fsync'd under ``<spool>/batches/files``). A batch can only be made from
  a file uploaded that way, by the same key. Anthropic batches carry their requests inline.
* **Reservation.** Each request is bounded the way a single call is (:mod:`tokenops.policy.estimate`: its input
  bound, its output limit or else ``policy.default_max_output_tokens``, times its answers) and priced at the batch
  price: the catalog's ``batch`` row where it has one, else half the standard row (genai-prices has no batch rows;
  OpenAI and Anthropic both bill batches at 50%). The sum is reserved against the budgets of the call that
  creates the batch (:attr:`Call.preset_max`); a hard budget it would exceed refuses the batch with the usual 429
  ``budget_exceeded`` before the provider sees it. The file is sent as uploaded: a request without an output
  limit is reserved at the ceiling but the provider is not told to stop there.
* **Rules.** Every request meets the rules as the call it will be (:meth:`PolicyEngine.check_batch_lines`): the
  allow and deny lists and approvals of each model the batch names, input, output and cost caps of each request;
  a batched request cannot be clamped, so one over a cap refuses the batch, the error naming the request.
* **Metering.** When the batch ends (OpenAI ``completed``/``failed``/``expired``/``cancelled``, Anthropic
  ``ended``), every request becomes one spend event, priced at the batch price, attributed to the key, tags and
  end user of the call that created the batch, with route ``batches`` / ``messages.batches``, the batch id as
  ``upstream_request_id``, the request's ``custom_id`` as the tag ``custom_id`` (left off when the call already
  carries the most tags a call may), and a request id derived from (batch id, custom_id) so that metering the
  batch again after a crash cannot double it (the ledger keeps one event per request id). Whichever comes first
  meters it, never both: a check every ``gateway.background_poll`` seconds, or a client retrieving the batch
  finished, or fetching its output (OpenAI ``GET /v1/files/{id}/content``, Anthropic ``…/results``). The
  reservation is then settled to the sum of the events.
* **Results that do not match the requests are never dropped.** A request with no result in a batch that
  completed is recorded as an error (``batch_result_missing``) with its input estimated, flagged
  ``usage_estimated``; in a batch cancelled, expired or failed it was not run: recorded ``cancelled``
  (``batch_request_not_run``) at no cost. A result whose ``custom_id`` no request had (or that repeats one) is
  recorded with the usage it reports, ``error_code: batch_result_unknown``.
* **Durability.** Each batch is written (fsync'd) to ``<spool>/batches/<request id>.json`` before the client gets
  the provider's answer, marked metered once its events are in the spool, and kept: it says which key may read
  the batch and its files. A gateway that restarts picks unmetered batches up and goes on checking.
* **Access.** Retrieve, list, cancel, file metadata and content and results are passed to the provider for the key
  that created the batch or uploaded the file (the admin key: any); another key's is answered like a missing one;
  a list shows only the caller's batches. They are free.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tokenops import money
from tokenops.call import Call
from tokenops.gateway.background import _dump, _load, _write
from tokenops.gateway.client import TransportFailure, UpstreamClient
from tokenops.gateway.meter import Meter
from tokenops.gateway.periodic import Periodic
from tokenops.gateway.providers.base import Adapter
from tokenops.ledger.events import SpendEvent
from tokenops.ledger.spool import SpoolUnavailable
from tokenops.tags import MAX_TAGS
from tokenops.tokens import InputShape, estimate_input
from tokenops.usage import MalformedUsage, Usage

log = logging.getLogger("tokenops.batches")
ENDPOINTS = {"/v1/chat/completions": "chat.completions", "/v1/embeddings": "embeddings",
             "/v1/completions": "completions", "/v1/responses": "responses"}  # fmt: skip
OPENAI_ENDED = frozenset(("completed", "failed", "expired", "cancelled"))
ROUTE = {"openai": "batches", "anthropic": "messages.batches"}
CUSTOM_ID_TAG = "custom_id"
MAX_LINES = 50_000  # OpenAI's limit of requests in one batch file; Anthropic allows 100,000
MAX_CUSTOM_ID = 64


@dataclass(slots=True)
class Line:
    """One request of a batch, as the gateway read it: what bounding and estimating it needs."""

    custom_id: str
    route: str  # the single-call route it is priced like: "chat.completions", "messages", …
    model: str
    upstream_model: str
    shape: InputShape = InputShape()
    body_bytes: int = 0
    out: int | None = None  # its output limit, if it sets one
    choices: int = 1

    def dump(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "shape": dataclasses.asdict(self.shape)}

    @staticmethod
    def load(d: dict[str, Any]) -> Line:
        return Line(**{**d, "shape": InputShape(**d.get("shape") or {})})


@dataclass(slots=True)
class Batch:
    batch_id: str
    kind: str  # "openai" | "anthropic"
    call: Call
    lines: list[Line]
    path: Path
    files: list[str] = field(default_factory=list)  # output and error files the provider gave it
    metered: bool = False

    def dump(self) -> bytes:
        return orjson.dumps({"batch_id": self.batch_id, "kind": self.kind, "call": orjson.loads(_dump(self.call, self.batch_id)),
                             "lines": [ln.dump() for ln in self.lines], "files": self.files, "metered": self.metered})  # fmt: skip


@dataclass(slots=True)
class Result:
    custom_id: str
    status: str  # "ok" | "error" | "cancelled"
    body: Any = None  # the answer, for its usage and model
    error_code: str | None = None


def line_request_id(batch_id: str, custom_id: str, occurrence: int = 0) -> str:
    """The request id of one result: the same for the same batch and custom_id, run after run."""
    digest = hashlib.sha256(f"{batch_id}\n{custom_id}\n{occurrence}".encode()).hexdigest()
    return "batchreq_" + digest[:32]


class BatchBook(Periodic):
    """The batches and batch files made through this gateway: persisted, checked until they end, metered once."""

    def __init__(self, directory: Path, client: UpstreamClient, adapters: dict[str, Adapter],
                 timeouts: dict[str, tuple[float, float]], meter: Meter, interval: float,
                 settle: Callable[[Call, SpendEvent], Awaitable[None]]) -> None:  # fmt: skip
        self.directory = directory
        self.client = client
        self.adapters = adapters
        self.timeouts = timeouts
        self.meter = meter
        self.interval = interval
        self.settle_budget = settle  # the policy engine's settle: the batch's reservation, to its events' sum
        self.batches: dict[str, Batch] = {}
        self.files: dict[str, dict[str, Any]] = {}  # input file id -> {key_id, provider, endpoint, lines}
        self.file_batch: dict[str, str] = {}  # output/error file id -> batch id
        self._metering: set[str] = set()  # batch ids being metered now (a poll and a fetch must not both meter one)

    # --- lifecycle ------------------------------------------------------------------------------
    def load(self) -> int:
        """Read what earlier processes left; returns how many batches still need metering."""
        if (self.directory / "files").is_dir():
            for path in sorted((self.directory / "files").glob("*.json")):
                try:
                    rec = orjson.loads(path.read_bytes())
                    self.files[rec["file_id"]] = rec
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.error("batch file record %s is unreadable (%s); left in place", path, exc)
        if not self.directory.is_dir():
            return 0
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = orjson.loads(path.read_bytes())
                call, batch_id = _load(data["call"])
                batch = Batch(batch_id, data["kind"], call, [Line.load(d) for d in data["lines"]], path,
                              list(data.get("files") or ()), bool(data.get("metered")))  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("batch record %s is unreadable (%s); left in place", path, exc)
                continue
            if call.provider_name not in self.adapters:
                log.error(
                    "batch %s: provider %r is no longer configured; left in %s", batch_id, call.provider_name, path
                )
                continue
            self.batches[batch_id] = batch
            self.file_batch.update((f, batch_id) for f in batch.files)
        return sum(1 for b in self.batches.values() if not b.metered)

    async def check_all(self) -> None:
        for batch_id in [b.batch_id for b in self.batches.values() if not b.metered]:
            try:
                await self.check(batch_id)
            except Exception:  # a bug must not stop the checks of every other batch
                log.exception("batch %s: check failed", batch_id)

    # --- records --------------------------------------------------------------------------------
    async def keep_file(
        self, file_id: str, key_id: str | None, provider: str, endpoint: str, lines: list[Line]
    ) -> None:
        rec = {"file_id": file_id, "key_id": key_id, "provider": provider, "endpoint": endpoint,
               "lines": [ln.dump() for ln in lines]}  # fmt: skip
        path = self.directory / "files" / f"{hashlib.sha256(file_id.encode()).hexdigest()[:32]}.json"
        await asyncio.to_thread(_persist, path, orjson.dumps(rec))
        self.files[file_id] = rec

    async def track(self, call: Call, batch_id: str, kind: str, lines: list[Line]) -> Call:
        """Keep ``call`` until its batch ends; returns the copy that holds the reservation (the request handler
        must not release it)."""
        kept = dataclasses.replace(call)
        call.reservation = None
        batch = Batch(batch_id, kind, kept, lines, self.directory / f"{call.request_id}.json")
        await asyncio.to_thread(_persist, batch.path, batch.dump())
        self.batches[batch_id] = batch
        return kept

    def file_owner(self, file_id: str) -> tuple[str | None, str] | None:
        """(key id, provider) of a file this gateway uploaded or a batch of it produced."""
        rec = self.files.get(file_id)
        if rec is not None:
            return rec["key_id"], rec["provider"]
        batch = self.batches.get(self.file_batch.get(file_id, ""))
        return None if batch is None else (batch.call.key.id if batch.call.key else None, batch.call.provider_name)

    async def observe(self, batch_id: str, payload: Any) -> None:
        """A batch object the provider sent: note its output files; meter it if it ended."""
        batch = self.batches.get(batch_id)
        if batch is None or not isinstance(payload, dict):
            return
        new = [
            f
            for k in ("output_file_id", "error_file_id")
            if isinstance(f := payload.get(k), str) and f not in batch.files
        ]
        if new:
            batch.files += new
            self.file_batch.update((f, batch_id) for f in new)
            if batch.metered:
                await asyncio.to_thread(_persist, batch.path, batch.dump())
        if not batch.metered and _ended(batch.kind, payload):
            await self.meter_batch(batch, payload)

    # --- checking and metering ------------------------------------------------------------------
    async def _get(self, batch: Batch, path: str) -> tuple[int, bytes] | None:
        adapter = self.adapters[batch.call.provider_name]
        connect, read = self.timeouts[batch.call.provider_name]
        try:
            resp = await self.client.send(provider_url(adapter, path), adapter.headers({}), b"", connect=connect,
                                          read=read, method="GET")  # fmt: skip
            try:
                return resp.status, await resp.read()
            finally:
                await resp.close()
        except TransportFailure as exc:
            log.warning("batch %s: provider unreachable (%s); checked again later", batch.batch_id, exc)
            return None

    async def check(self, batch_id: str) -> None:
        """Ask the provider how a batch stands; meter it if it ended."""
        batch = self.batches.get(batch_id)
        if batch is None or batch.metered:
            return
        path = f"/v1/batches/{batch_id}" if batch.kind == "openai" else f"/v1/messages/batches/{batch_id}"
        got = await self._get(batch, path)
        if got is None or got[0] >= 400:
            if got is not None:
                log.warning("batch %s: provider answered %s; checked again later", batch_id, got[0])
            return
        with contextlib.suppress(ValueError):
            await self.observe(batch_id, orjson.loads(got[1]))

    async def _results(self, batch: Batch, payload: dict[str, Any]) -> list[Result] | None:
        """The batch's results from the provider (None: not readable now; tried again later)."""
        results: list[Result] = []
        if batch.kind == "anthropic":
            got = await self._get(batch, f"/v1/messages/batches/{batch.batch_id}/results")
            if got is None or got[0] >= 400:
                return None
            return [r for raw in got[1].splitlines() if raw.strip() and (r := _anthropic_result(raw)) is not None]
        for key in ("output_file_id", "error_file_id"):
            file_id = payload.get(key)
            if not isinstance(file_id, str):
                continue
            got = await self._get(batch, f"/v1/files/{file_id}/content")
            if got is None or got[0] >= 400:
                return None
            results += [r for raw in got[1].splitlines() if raw.strip() and (r := _openai_result(raw)) is not None]
        return results

    async def meter_batch(self, batch: Batch, payload: dict[str, Any]) -> list[SpendEvent]:
        """One event per request (and per unknown result), then the reservation settled to their sum."""
        if batch.metered or batch.batch_id in self._metering:
            return []
        self._metering.add(batch.batch_id)  # only one caller meters it
        try:
            results = await self._results(batch, payload)
            if results is None:
                return []
            events, deferred = await self._record_all(batch, payload, results)
            if deferred:  # kept for the spool; the batch stays unmetered and is metered again (same request ids)
                return events
            batch.metered = True
            await asyncio.to_thread(_persist, batch.path, batch.dump())
            return events
        finally:
            self._metering.discard(batch.batch_id)

    async def _record_all(self, batch: Batch, payload: dict[str, Any],
                          results: list[Result]) -> tuple[list[SpendEvent], bool]:  # fmt: skip
        adapter = self.adapters[batch.call.provider_name]
        completed = (payload.get("status") == "completed") if batch.kind == "openai" else True
        by_id: dict[str, list[Result]] = {}
        for r in results:
            by_id.setdefault(r.custom_id, []).append(r)
        known = {ln.custom_id for ln in batch.lines}
        events: list[SpendEvent] = []
        deferred = False

        async def record(line: Line | None, custom_id: str, n: int, **fields: Any) -> None:
            nonlocal deferred
            call = self._line_call(batch, line, custom_id, n)
            try:
                events.append(await self.meter.record(call, upstream_request_id=batch.batch_id, **fields))
            except SpoolUnavailable:
                deferred = True
                if call.recorded is not None:
                    events.append(call.recorded)

        for line in batch.lines:
            found = by_id.get(line.custom_id) or []
            if found:
                await record(line, line.custom_id, 0, **self._fields(adapter, line, found[0]))
            elif completed:
                await record(line, line.custom_id, 0, status="error", http_status=200, usage_estimated=True,
                             usage=Usage(input_tokens=estimate_input(line.shape, line.upstream_model)),
                             error_code="batch_result_missing")  # fmt: skip
            else:
                await record(line, line.custom_id, 0, status="cancelled", http_status=200,
                             error_code="batch_request_not_run")  # fmt: skip
        for custom_id, found in by_id.items():
            extra = found if custom_id not in known else found[1:]
            for n, r in enumerate(extra, 1 if custom_id in known else 0):
                fields = self._fields(adapter, None, r)
                fields["error_code"] = "batch_result_unknown"
                await record(None, custom_id, n, **fields)
        cost = money.add(*(e.cost_usd for e in events if e.cost_usd is not None))
        total = Usage(input_tokens=sum(e.usage.input_tokens for e in events),
                      output_tokens=sum(e.usage.output_tokens for e in events))  # fmt: skip
        summary = self.meter.event(batch.call, status="ok", http_status=200).with_(usage=total, cost_usd=cost)
        try:
            await self.settle_budget(batch.call, summary)
        except Exception:  # the reservation lapses by itself (its ttl)
            log.exception("batch %s: reservation not settled", batch.batch_id)
        return events, deferred

    def _line_call(self, batch: Batch, line: Line | None, custom_id: str, n: int) -> Call:
        base = batch.call
        tags = dict(base.tags)
        if CUSTOM_ID_TAG in tags or len(tags) < MAX_TAGS:
            tags[CUSTOM_ID_TAG] = custom_id[:MAX_CUSTOM_ID]
        model = line.model if line else (batch.lines[0].model if batch.lines else base.model_requested)
        upstream = (
            line.upstream_model if line else (batch.lines[0].upstream_model if batch.lines else base.upstream_model)
        )
        return dataclasses.replace(base, request_id=line_request_id(batch.batch_id, custom_id, n), tags=tags,
                                   model_requested=model, upstream_model=upstream, reservation=None, recorded=None,
                                   resumed=False,  # the batch's summary settles (or charges) the budgets, once
                                   shape=line.shape if line else InputShape(), started=time.perf_counter(),
                                   downgraded_from=None)  # fmt: skip

    @staticmethod
    def _fields(adapter: Adapter, line: Line | None, r: Result) -> dict[str, Any]:
        if r.status != "ok":
            usage = None
            with contextlib.suppress(MalformedUsage):
                usage = adapter.usage(line.route if line else "", r.body) if r.body is not None else None
            return {"status": r.status, "http_status": 200, "usage": usage, "error_code": r.error_code,
                    "model_used": adapter.response_model(r.body)}  # fmt: skip
        try:
            usage = adapter.usage(line.route if line else "", r.body)
            estimated = False
        except MalformedUsage:
            usage = Usage(input_tokens=estimate_input(line.shape, line.upstream_model)) if line else Usage()
            estimated = True
        return {"status": "ok", "http_status": 200, "usage": usage, "usage_estimated": estimated,
                "model_used": adapter.response_model(r.body),
                "error_code": "batch_usage_missing" if estimated else None}  # fmt: skip


def _persist(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, data)


def _ended(kind: str, payload: dict[str, Any]) -> bool:
    if kind == "openai":
        return payload.get("status") in OPENAI_ENDED
    return payload.get("processing_status") == "ended"


def _code(error: Any, default: str) -> str:
    if isinstance(error, dict):
        inner: dict[str, Any] = error["error"] if isinstance(error.get("error"), dict) else error
        for name in ("code", "type"):
            if isinstance(inner.get(name), str) and inner[name]:
                return str(inner[name])[:64]
    return default


def _result_item(raw: bytes) -> dict[str, Any] | None:
    """A result line as an object with a ``custom_id``, or None (its request then counts as without a result)."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("a batch result line is not JSON; skipped: %r", raw[:200])
        return None
    return item if isinstance(item, dict) and isinstance(item.get("custom_id"), str) else None


def _openai_result(raw: bytes) -> Result | None:
    item = _result_item(raw)
    if item is None:
        return None
    response: dict[str, Any] = item["response"] if isinstance(item.get("response"), dict) else {}
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and item.get("error") is None:
        return Result(item["custom_id"], "ok", body)
    return Result(item["custom_id"], "error", body, _code(item.get("error") or body, f"http_{status}"))


def _anthropic_result(raw: bytes) -> Result | None:
    item = _result_item(raw)
    if item is None:
        return None
    result: dict[str, Any] = item["result"] if isinstance(item.get("result"), dict) else {}
    kind = result.get("type")
    if kind == "succeeded":
        return Result(item["custom_id"], "ok", result.get("message"))
    if kind in ("canceled", "expired"):
        return Result(item["custom_id"], "cancelled", None, f"batch_request_{kind}")
    return Result(item["custom_id"], "error", None, _code(result.get("error"), "errored"))


def provider_url(adapter: Adapter, path: str) -> str:
    """``path`` (``/v1/…``) at the provider: under an OpenAI base URL that ends in ``/v1``, or an Anthropic root."""
    base = adapter.base_url.rstrip("/")
    return (base[:-3] if base.endswith("/v1") else base) + path
