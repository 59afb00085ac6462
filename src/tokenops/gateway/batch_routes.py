"""The HTTP side of batches (:mod:`tokenops.gateway.batches` keeps and meters them): OpenAI's ``/v1/files`` and
``/v1/batches``, Anthropic's ``/v1/messages/batches``; uploads read line by line, batches bounded, checked against
the rules and reserved before they are submitted, resources answered only for the key that made them."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from email.parser import BytesParser
from typing import Any, Protocol

import orjson

from tokenops import money
from tokenops.call import Call
from tokenops.errors import GatewayError
from tokenops.gateway import validate
from tokenops.gateway.batches import (
    ENDPOINTS,
    MAX_CUSTOM_ID,
    MAX_LINES,
    ROUTE,
    BatchBook,
    Line,
    line_request_id,
    provider_url,
)
from tokenops.gateway.client import TransportFailure, UpstreamClient, UpstreamResponse
from tokenops.gateway.http import Receive, Scope, Send, header_dict, read_body, send_bytes
from tokenops.gateway.meter import BATCH_PRICE_FACTOR
from tokenops.gateway.providers.base import Adapter
from tokenops.gateway.stages.policy import PolicyStage
from tokenops.gateway.stages.router import RouterStage
from tokenops.gateway.stages.tags import TagStage
from tokenops.gateway.upstream import relayed_headers
from tokenops.ledger.events import new_request_id
from tokenops.ledger.spool import SpoolUnavailable
from tokenops.policy.estimate import input_bound, max_cost, output_bound, requested_output
from tokenops.pricing.catalog import PriceCatalog

log = logging.getLogger("tokenops.batches")

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
