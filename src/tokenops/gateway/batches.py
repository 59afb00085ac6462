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
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Protocol

import orjson

from tokenops import money
from tokenops.call import Call
from tokenops.errors import GatewayError
from tokenops.gateway import validate
from tokenops.gateway.background import _dump, _load, _write
from tokenops.gateway.client import TransportFailure, UpstreamClient, UpstreamResponse
from tokenops.gateway.http import Receive, Scope, Send, header_dict, read_body, send_bytes
from tokenops.gateway.meter import BATCH_PRICE_FACTOR, Meter
from tokenops.gateway.periodic import Periodic
from tokenops.gateway.providers.base import Adapter
from tokenops.gateway.stages.policy import PolicyStage
from tokenops.gateway.stages.router import RouterStage
from tokenops.gateway.stages.tags import TagStage
from tokenops.gateway.upstream import relayed_headers
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.ledger.spool import SpoolUnavailable
from tokenops.policy.estimate import input_bound, max_cost, output_bound, requested_output
from tokenops.pricing.catalog import PriceCatalog
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


# --- the HTTP side ------------------------------------------------------------------------------------
class Host(Protocol):
    """What the routes need of the gateway."""

    config: Any
    clock: Callable[[], datetime]
    adapters: dict[str, Adapter]
    catalog: PriceCatalog
    router: RouterStage
    engine: Any
    key_stage: Any
    stages: list[Any]
    client: UpstreamClient | None
    _timeouts: dict[str, tuple[float, float]]

    async def _authorize(self, scope: Scope, flavor: str, send: Send) -> str | None: ...
    async def _reject(self, call: Call, err: GatewayError, send: Send) -> None: ...
    async def _send_error(self, send: Send, err: GatewayError, flavor: str,
                          headers: dict[str, str] | None = None) -> None: ...  # fmt: skip


class BatchRoutes:
    def __init__(self, host: Host, book: BatchBook):
        self.host = host
        self.book = book

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if it is a batch route; False if it is not one."""
        path, method = scope["path"], scope["method"]
        parts = path.strip("/").split("/")
        anthropic = path.startswith("/v1/messages/batches")
        flavor = "anthropic" if anthropic else "openai"
        base = 3 if anthropic else 2  # parts before the id
        if parts[:base] not in (["v1", "files"], ["v1", "batches"], ["v1", "messages", "batches"]):
            return False
        rest = parts[base:]
        if len(rest) > 2 or (rest and not rest[0]):
            return False
        resource = parts[base - 1]
        action = rest[1] if len(rest) == 2 else ""
        allowed = {("files", ""): ("POST",), ("files", "id"): ("GET", "DELETE"), ("files", "content"): ("GET",),
                   ("batches", ""): ("POST", "GET"), ("batches", "id"): ("GET",), ("batches", "cancel"): ("POST",),
                   ("batches", "results"): ("GET",) if anthropic else ()}.get(
            (resource, action or ("id" if rest else "")), ())  # fmt: skip
        if not allowed:
            return False
        if method not in allowed:
            err = GatewayError(405, "method_not_allowed", f"method {method} not allowed on {path}")
            await self.host._send_error(send, err, flavor, {"allow": ", ".join(allowed)})
            return True
        try:
            if not rest and method == "POST":
                if resource == "files":
                    await self._upload(scope, receive, send)
                else:
                    await self._create(scope, receive, send, flavor)
            elif resource == "files":
                await self._file(scope, send, rest[0], action)
            else:
                await self._batch(scope, send, flavor, rest[0] if rest else None, action)
        except GatewayError as err:
            await self.host._send_error(send, err, flavor)
        return True

    # --- upload and create ----------------------------------------------------------------------
    def _call(self, scope: Scope, route: str, flavor: str) -> Call:
        return Call(request_id=new_request_id(), route=route, flavor=flavor, started=time.perf_counter(),
                    ts=self.host.clock(), headers=header_dict(scope),
                    query=scope.get("query_string", b"").decode("latin-1"))  # fmt: skip

    def _line(self, call: Call, route: str, body: Any, custom_id: Any, where: str) -> tuple[Line, str, dict[str, Any]]:
        """A request of a batch, checked like a single call: (its summary, its provider, its upstream body)."""
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
            raise GatewayError(400, "invalid_request", f"{where}: 'custom_id' must be a string of 1 to "
                               f"{MAX_CUSTOM_ID} characters", param="custom_id")  # fmt: skip
        if not isinstance(body, dict):
            raise GatewayError(400, "invalid_request", f"{where}: the request body must be a JSON object")
        lc = Call(request_id="", route=route, flavor=call.flavor, started=0.0, ts=call.ts, headers={})
        try:
            validate.request(lc, orjson.dumps(body))
            provider, upstream = self.host.router.resolve(lc.model_requested, call.flavor, call.ts)
        except GatewayError as err:
            raise GatewayError(err.status, err.code, f"{where}: {err.message}", param=err.param) from None
        if lc.stream:
            raise GatewayError(400, "invalid_request", f"{where}: a batched request cannot stream", param="stream")
        line = Line(custom_id, route, lc.model_requested, upstream, lc.shape, lc.body_bytes, requested_output(lc),
                    lc.choices)  # fmt: skip
        return line, provider, {**body, "model": upstream}

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/files``: a batch input file, read line by line on its way to the provider."""
        call = self._call(scope, "files", "openai")
        await self.host.key_stage(call)
        raw = await read_body(receive, call.headers, self.host.config.gateway.max_body_bytes)
        fields = parse_multipart(call.headers.get("content-type", ""), raw)
        purpose, upload = fields.get("purpose"), fields.get("file")
        if purpose is None or upload is None:
            raise GatewayError(
                400, "invalid_request", "'file' and 'purpose' are required multipart fields", param="file"
            )
        if purpose[1] != b"batch":
            raise GatewayError(400, "invalid_request", "only files with purpose=batch go through this gateway",
                               param="purpose")  # fmt: skip
        lines: list[Line] = []
        out: list[bytes] = []
        providers: set[str] = set()
        endpoints: set[str] = set()
        for n, text in enumerate(upload[1].splitlines(), 1):
            if not text.strip():
                continue
            try:
                item = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise GatewayError(400, "invalid_request", f"line {n} of the batch file is not valid JSON",
                                   param="file") from None  # fmt: skip
            if not isinstance(item, dict) or item.get("method", "POST") != "POST" or item.get("url") not in ENDPOINTS:
                raise GatewayError(400, "invalid_request", f"line {n} of the batch file must be an object with method "
                                   f"POST and a url among {sorted(ENDPOINTS)}", param="file")  # fmt: skip
            line, provider, body = self._line(call, ENDPOINTS[item["url"]], item.get("body"), item.get("custom_id"),
                                              f"line {n} of the batch file")  # fmt: skip
            if any(ln.custom_id == line.custom_id for ln in lines):
                raise GatewayError(400, "invalid_request", f"line {n} of the batch file repeats custom_id "
                                   f"{line.custom_id!r}", param="file")  # fmt: skip
            lines.append(line)
            providers.add(provider)
            endpoints.add(item["url"])
            out.append(orjson.dumps({**item, "body": body}))
            if len(lines) > MAX_LINES:
                raise GatewayError(
                    400, "invalid_request", f"a batch file holds at most {MAX_LINES} requests", param="file"
                )
        if not lines:
            raise GatewayError(400, "invalid_request", "the batch file holds no requests", param="file")
        if len(providers) > 1 or len(endpoints) > 1:
            raise GatewayError(400, "invalid_request", "every request of a batch file must call the same endpoint of "
                               "the same provider", param="file")  # fmt: skip
        provider = providers.pop()
        if self.host.config.provider_kind(provider) != "openai":
            raise GatewayError(400, "invalid_request", f"provider {provider!r} does not take OpenAI batch files")
        boundary = "tokenops-" + uuid.uuid4().hex
        form = build_multipart(boundary, {"purpose": (None, b"batch"),
                                          "file": (upload[0] or "batch.jsonl", b"\n".join(out) + b"\n")})  # fmt: skip
        resp, data = await self._send(provider, "/v1/files", "POST", call.headers, form,
                                      content_type=f"multipart/form-data; boundary={boundary}")  # fmt: skip
        if resp.status == 200:
            with contextlib.suppress(ValueError):
                file_id = orjson.loads(data).get("id")
                if isinstance(file_id, str):
                    await self.book.keep_file(file_id, call.key.id if call.key else None, provider,
                                              endpoints.pop(), lines)  # fmt: skip
        await self._relay(send, resp, data, provider, call.request_id)

    async def _create(self, scope: Scope, receive: Receive, send: Send, flavor: str) -> None:
        """``POST /v1/batches`` / ``POST /v1/messages/batches``: bounded, reserved, then submitted."""
        host = self.host
        call = self._call(scope, ROUTE[flavor], flavor)
        try:
            await host.key_stage(call)
            raw = await read_body(receive, call.headers, host.config.gateway.max_body_bytes)
            body, upstream_body, lines, provider = self._batch_body(call, raw, flavor)
            call.body = body
            for stage in host.stages:
                if isinstance(stage, TagStage):
                    await stage(call)
            await host.engine.check_batch_lines([(self._where(flavor, n, line), self._as_call(call, line))
                                                 for n, line in enumerate(lines)])  # fmt: skip
            call.model_requested = lines[0].model
            call.provider_name, call.upstream_model = provider, lines[0].upstream_model
            call.price_providers = host.router.price_ids[provider]
            call.preset_max = self._bound(call, lines)
            for stage in host.stages:
                if isinstance(stage, PolicyStage):
                    await stage(call)
            resp, data = await self._send(provider, "/v1/messages/batches" if flavor == "anthropic" else "/v1/batches",
                                          "POST", call.headers, orjson.dumps(upstream_body))  # fmt: skip
        except GatewayError as err:
            await host._reject(call, err, send)
            await host.engine.release(call)
            return
        try:
            payload = orjson.loads(data) if resp.status == 200 else None
        except ValueError:
            payload = None
        batch_id = payload.get("id") if isinstance(payload, dict) else None
        if isinstance(batch_id, str):
            await self.book.track(call, batch_id, flavor, lines)
            data = self._rewrite(scope, flavor, payload) if flavor == "anthropic" else data
        else:  # refused by the provider: nothing will run, nothing is held
            with contextlib.suppress(SpoolUnavailable):
                await self.book.meter.record(call, status="upstream_error", http_status=resp.status,
                                             error_code="upstream_error")  # fmt: skip
        await host.engine.release(call)
        await self._relay(send, resp, data, provider, call.request_id, cost="pending" if batch_id else "0.00")

    def _batch_body(
        self, call: Call, raw: bytes, flavor: str
    ) -> tuple[dict[str, Any], dict[str, Any], list[Line], str]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(400, "invalid_request", "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "invalid_request", "the request body must be a JSON object")
        if flavor == "openai":
            file_id = body.get("input_file_id")
            rec = self.book.files.get(file_id) if isinstance(file_id, str) else None
            if rec is None or (call.key is not None and rec["key_id"] != call.key.id):
                raise GatewayError(404, "not_found", f"no batch file {file_id!r} was uploaded through this gateway "
                                   "with this key", param="input_file_id")  # fmt: skip
            if body.get("endpoint") != rec["endpoint"]:
                raise GatewayError(400, "invalid_request", f"'endpoint' must be {rec['endpoint']!r}, the url of the "
                                   "file's requests", param="endpoint")  # fmt: skip
            return body, body, [Line.load(d) for d in rec["lines"]], rec["provider"]
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise GatewayError(400, "invalid_request", "'requests' must be a non-empty array", param="requests")
        if len(requests) > 2 * MAX_LINES:
            raise GatewayError(400, "invalid_request", f"a batch holds at most {2 * MAX_LINES} requests")
        lines: list[Line] = []
        upstream: list[dict[str, Any]] = []
        providers: set[str] = set()
        for n, item in enumerate(requests):
            item = item if isinstance(item, dict) else {}
            line, provider, params = self._line(call, "messages", item.get("params"), item.get("custom_id"),
                                                f"requests.{n}")  # fmt: skip
            if any(ln.custom_id == line.custom_id for ln in lines):
                raise GatewayError(400, "invalid_request", f"requests.{n}: custom_id {line.custom_id!r} is repeated")
            lines.append(line)
            providers.add(provider)
            upstream.append({**item, "params": params})
        if len(providers) > 1:
            raise GatewayError(400, "invalid_request", "every request of a batch must go to the same provider")
        return body, {**body, "requests": upstream}, lines, providers.pop()

    @staticmethod
    def _where(flavor: str, n: int, line: Line) -> str:
        return f"requests.{n}" if flavor == "anthropic" else f"line {n + 1} of the batch file ({line.custom_id})"

    @staticmethod
    def _as_call(call: Call, line: Line) -> Call:
        """A request of the batch as the call it will be, for the rules: the batch's key, tags and end user."""
        return Call(request_id="", route=line.route, flavor=call.flavor, started=0.0, ts=call.ts, headers={},
                    key=call.key, tags=call.tags, end_user=call.end_user, model_requested=line.model,
                    shape=line.shape, choices=line.choices, body_bytes=line.body_bytes,
                    body={"max_tokens": line.out} if line.out else {})  # fmt: skip

    def _bound(self, call: Call, lines: list[Line]) -> tuple[int, Decimal | None]:
        """The most the batch can cost: each request bounded like a single call, priced at the batch price."""
        ceiling = self.host.config.policy.default_max_output_tokens
        tokens = 0
        costs: list[Decimal] = []
        for line in lines:
            lc = Call(request_id="", route=line.route, flavor=call.flavor, started=0.0, ts=call.ts, headers={},
                      shape=line.shape, choices=line.choices, body_bytes=line.body_bytes)  # fmt: skip
            batch_row = self.host.catalog.lookup(call.price_providers, line.upstream_model, call.ts, "batch")
            row = batch_row or self.host.catalog.lookup(call.price_providers, line.upstream_model, call.ts)
            bound = input_bound(lc, line.upstream_model, row)
            out = output_bound(lc, line.out or ceiling) if line.route != "embeddings" else 0
            tokens += bound + out
            cost = max_cost(row, bound, out)
            if cost is not None:
                costs.append(cost if batch_row is not None else money.quantize(cost * BATCH_PRICE_FACTOR))
        return tokens, money.add(*costs) if costs else None

    # --- resources ------------------------------------------------------------------------------
    async def _file(self, scope: Scope, send: Send, file_id: str, action: str) -> None:
        caller = await self.host._authorize(scope, "openai", send)
        if caller is None:
            return
        owner = self.book.file_owner(file_id)
        if owner is None or (caller != "admin" and owner[0] != caller):
            raise GatewayError(404, "not_found", f"no file {file_id!r} was uploaded or produced through this gateway "
                               "with this key")  # fmt: skip
        provider = owner[1]
        if action == "content" and (batch_id := self.book.file_batch.get(file_id)) is not None:
            await self.book.check(batch_id)  # results fetched before the poll saw the batch end: metered now
        suffix = "/content" if action else ""
        resp, data = await self._send(
            provider, f"/v1/files/{file_id}{suffix}", scope["method"], header_dict(scope), b""
        )
        await self._relay(send, resp, data, provider, None)

    async def _batch(self, scope: Scope, send: Send, flavor: str, batch_id: str | None, action: str) -> None:
        caller = await self.host._authorize(scope, flavor, send)
        if caller is None:
            return
        prefix = "/v1/messages/batches" if flavor == "anthropic" else "/v1/batches"
        query = scope.get("query_string", b"").decode("latin-1")
        if batch_id is None:  # a list: only the caller's batches
            provider = self._list_provider(flavor)
            resp, data = await self._send(
                provider, prefix + (f"?{query}" if query else ""), "GET", header_dict(scope), b""
            )
            if resp.status == 200:
                with contextlib.suppress(ValueError, AttributeError):
                    payload = orjson.loads(data)
                    payload["data"] = [self._rewrite(scope, flavor, b, as_object=True) for b in payload["data"]
                                       if isinstance(b, dict) and self._mine(caller, b.get("id"))]  # fmt: skip
                    ids = [b["id"] for b in payload["data"]]
                    payload["first_id"], payload["last_id"] = (ids[0], ids[-1]) if ids else (None, None)
                    data = orjson.dumps(payload)
            await self._relay(send, resp, data, provider, None)
            return
        batch = self.book.batches.get(batch_id)
        if batch is None or batch.kind != flavor or not self._mine(caller, batch_id):
            raise GatewayError(
                404, "not_found", f"no batch {batch_id!r} was created through this gateway with this key"
            )
        provider = batch.call.provider_name
        if action == "results" and not batch.metered:
            await self.book.check(batch_id)  # results fetched before the poll saw the batch end: metered now
        path = f"{prefix}/{batch_id}" + (f"/{action}" if action else "")
        resp, data = await self._send(provider, path, scope["method"], header_dict(scope), b"")
        if resp.status == 200 and action != "results":
            with contextlib.suppress(ValueError):
                payload = orjson.loads(data)
                await self.book.observe(batch_id, payload)
                if flavor == "anthropic":
                    data = self._rewrite(scope, flavor, payload)
        await self._relay(send, resp, data, provider, batch.call.request_id)

    def _mine(self, caller: str, batch_id: Any) -> bool:
        batch = self.book.batches.get(batch_id) if isinstance(batch_id, str) else None
        if batch is None:
            return False
        return caller == "admin" or (batch.call.key is not None and batch.call.key.id == caller)

    def _list_provider(self, flavor: str) -> str:
        for name in self.host.adapters:
            if self.host.config.provider_kind(name) == flavor:
                return name
        raise GatewayError(404, "not_found", f"no {flavor} provider is configured")

    @staticmethod
    def _rewrite(scope: Scope, flavor: str, payload: Any, *, as_object: bool = False) -> Any:
        """An Anthropic batch's ``results_url`` pointed at this gateway (the SDK fetches it as given)."""
        if flavor == "anthropic" and isinstance(payload, dict) and payload.get("results_url"):
            headers = header_dict(scope)
            base = f"{scope.get('scheme', 'http')}://{headers.get('host', 'localhost')}"
            payload = {**payload, "results_url": f"{base}/v1/messages/batches/{payload.get('id')}/results"}
        return payload if as_object else orjson.dumps(payload)

    # --- the provider ---------------------------------------------------------------------------
    async def _send(self, provider: str, path: str, method: str, client_headers: dict[str, str], body: bytes,
                    content_type: str | None = None) -> tuple[UpstreamResponse, bytes]:  # fmt: skip
        adapter = self.host.adapters[provider]
        connect, read = self.host._timeouts[provider]
        headers = adapter.headers(client_headers)
        if content_type:
            headers["content-type"] = content_type
        client = self.host.client
        assert client is not None, "Gateway.start() was not called"
        try:
            resp = await client.send(
                provider_url(adapter, path), headers, body, connect=connect, read=read, method=method
            )
            try:
                data = await resp.read()
            finally:
                await resp.close()
        except TransportFailure as exc:
            raise GatewayError(504 if exc.timeout else 502, "upstream_unreachable",
                               f"provider {provider!r} is unreachable: {exc}") from None  # fmt: skip
        return resp, data

    @staticmethod
    async def _relay(send: Send, resp: UpstreamResponse, data: bytes, provider: str, request_id: str | None,
                     cost: str = "0.00") -> None:  # fmt: skip
        out = {"content-type": resp.headers.get("content-type", "application/json"), **relayed_headers(resp),
               "x-tokenops-cost-usd": cost, "x-tokenops-provider": provider}  # fmt: skip
        if request_id:
            out["x-tokenops-request-id"] = request_id
        await send_bytes(send, resp.status, data, out)


def parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body's fields: name -> (filename, bytes)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise GatewayError(400, "invalid_request", "a file upload must be multipart/form-data")
    message = BytesParser().parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if not message.is_multipart():
        raise GatewayError(400, "invalid_request", "the multipart body could not be read")
    for part in message.get_payload():
        if isinstance(part, str):
            continue
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields


def build_multipart(boundary: str, fields: dict[str, tuple[str | None, bytes]]) -> bytes:
    parts = []
    for name, (filename, data) in fields.items():
        safe = "".join(c for c in filename or "" if c.isprintable() and c not in '"\\')
        disposition = f'form-data; name="{name}"' + (f'; filename="{safe}"' if filename else "")
        kind = "\r\nContent-Type: application/octet-stream" if filename else ""
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}{kind}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


__all__ = ["BatchBook", "BatchRoutes", "line_request_id"]
