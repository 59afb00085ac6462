"""Upstream stage and metering of the answer: forward the call, relay the answer, record it.

JSON answers are read whole (they are small), priced, made durable, then sent with their cost in
``X-TokenOps-Cost-USD``. Streams are relayed event by event as they arrive, never buffered; the event that
ends the stream is held back until the call is recorded, so an answered stream is never lost. A client that
goes away mid-stream ends the upstream call, and the call is recorded as ``cancelled`` with the usage known
so far (estimated where the provider had not said yet, and flagged so).

Upstream failures: unreachable → 502, timed out → 504, garbage → 502, each in the route's error shape and
recorded; upstream HTTP errors are relayed with their status and body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson

from tokenops.errors import UpstreamError
from tokenops.gateway.call import Call
from tokenops.gateway.client import TransportFailure, UpstreamClient, UpstreamResponse
from tokenops.gateway.http import Receive, Send, encode_headers
from tokenops.gateway.meter import Meter
from tokenops.gateway.providers.base import Adapter
from tokenops.gateway.sse import SSEBuffer
from tokenops.ledger.events import SpendEvent
from tokenops.money import format_usd

log = logging.getLogger("tokenops.upstream")

# Upstream response headers worth passing on: request ids and rate-limit state help clients and their SDKs.
_RELAY_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "openai-")
_RELAY_NAMES = ("retry-after", "x-request-id", "request-id", "retry-after-ms")


def relayed_headers(resp: UpstreamResponse) -> dict[str, str]:
    return {n: v for n, v in resp.headers.items() if n in _RELAY_NAMES or n.startswith(_RELAY_PREFIXES)}


def call_headers(call: Call, event: SpendEvent | None) -> dict[str, str]:
    h = {
        "x-tokenops-request-id": call.request_id,
        "x-tokenops-model": (event.model_used if event else None) or call.upstream_model or call.model_requested,
        "x-tokenops-cache": call.cache,
        "x-tokenops-cost-usd": format_usd(event.cost_usd) if event else "pending",
    }
    h.update(call.response_headers)
    return h


def _unreachable(call: Call, exc: TransportFailure, what: str) -> UpstreamError:
    """The one translation of transport failures: a timeout is 504, anything else 502."""
    if exc.timeout:
        return UpstreamError(504, "upstream_timeout", f"provider {call.provider_name!r} did not answer in time")
    return UpstreamError(502, "upstream_unreachable", f"provider {call.provider_name!r} {what} ({exc})")


def _error_code(body: bytes) -> str | None:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type")
        return str(code) if code else None
    return None


class Upstream:
    def __init__(self, client: UpstreamClient, adapters: dict[str, Adapter],
                 timeouts: dict[str, tuple[float, float]], meter: Meter):  # fmt: skip
        self.client = client
        self.adapters = adapters
        self.timeouts = timeouts
        self.meter = meter

    async def forward(self, call: Call, receive: Receive, send: Send) -> None:
        adapter = self.adapters[call.provider_name]
        body, wants_usage = adapter.prepare(call.route, call.body, call.upstream_model)
        connect, read = self.timeouts[call.provider_name]
        try:
            resp = await self.client.send(adapter.url(call.route), adapter.headers(call.headers), orjson.dumps(body),
                                          connect=connect, read=read)  # fmt: skip
        except TransportFailure as exc:
            raise _unreachable(call, exc, "is unreachable") from None
        try:
            ctype = resp.headers.get("content-type", "")
            if resp.status >= 400:
                await self._relay_error(call, resp, send)
            elif call.stream and ctype.startswith("text/event-stream"):
                await self._relay_stream(call, adapter, resp, wants_usage, receive, send)
            else:
                await self._relay_json(call, adapter, resp, send)
        finally:
            await resp.close()

    async def _read(self, call: Call, resp: UpstreamResponse) -> bytes:
        try:
            return await resp.read()
        except TransportFailure as exc:
            raise _unreachable(call, exc, "broke off") from None

    async def _relay_error(self, call: Call, resp: UpstreamResponse, send: Send) -> None:
        body = await self._read(call, resp)
        event = await self.meter.record(
            call, status="upstream_error", http_status=resp.status, error_code=_error_code(body)
        )
        headers = {"content-type": resp.headers.get("content-type", "application/json"),
                   "content-length": str(len(body)), **relayed_headers(resp), **call_headers(call, event)}  # fmt: skip
        await send({"type": "http.response.start", "status": resp.status, "headers": encode_headers(headers)})
        await send({"type": "http.response.body", "body": body})

    async def _relay_json(self, call: Call, adapter: Adapter, resp: UpstreamResponse, send: Send) -> None:
        body = await self._read(call, resp)
        try:
            payload = orjson.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            raise UpstreamError(
                502, "upstream_invalid_response", f"provider {call.provider_name!r} answered with invalid JSON"
            ) from None
        estimated = False
        try:
            usage = adapter.usage(call.route, payload)
        except ValueError:
            # Some OpenAI-compatible servers omit usage: estimate it rather than record nothing, and say so.
            from tokenops.usage import Usage

            usage = Usage(input_tokens=(call.prompt_chars + 3) // 4, output_tokens=(len(body) + 3) // 16)
            estimated = True
        event = await self.meter.record(
            call,
            status="ok",
            http_status=resp.status,
            usage=usage,
            model_used=adapter.response_model(payload),
            usage_estimated=estimated,
            upstream_request_id=adapter.upstream_request_id(payload),
        )
        headers = {"content-type": resp.headers.get("content-type", "application/json"),
                   "content-length": str(len(body)), **relayed_headers(resp), **call_headers(call, event)}  # fmt: skip
        await send({"type": "http.response.start", "status": resp.status, "headers": encode_headers(headers)})
        await send({"type": "http.response.body", "body": body})

    async def _relay_stream(
        self, call: Call, adapter: Adapter, resp: UpstreamResponse, wants_usage: bool, receive: Receive, send: Send
    ) -> None:
        meter = adapter.stream_meter(wants_usage)
        sse = SSEBuffer()
        headers = {"content-type": resp.headers.get("content-type", "text/event-stream"), "cache-control": "no-cache",
                   **relayed_headers(resp), **call_headers(call, None)}  # fmt: skip
        await send({"type": "http.response.start", "status": resp.status, "headers": encode_headers(headers)})
        relay_task = asyncio.current_task()
        disconnected = False

        async def watch() -> None:
            nonlocal disconnected
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    if relay_task is not None:
                        relay_task.cancel()
                    return

        watcher = asyncio.create_task(watch())
        ttft: float | None = None
        finished = False
        try:
            async for chunk in resp.chunks():
                for ev in sse.feed(chunk):
                    if ttft is None:
                        ttft = time.perf_counter()
                    out = meter.relay(ev)
                    if meter.is_final(ev):
                        usage, estimated = meter.final_usage(call.prompt_chars)
                        finished = True  # set first: a disconnect now must not record the call a second time
                        await asyncio.shield(self.meter.record(
                            call, status="ok", http_status=200, usage=usage, model_used=meter.model,
                            usage_estimated=estimated, ttft=ttft, upstream_request_id=meter.upstream_id,
                        ))  # fmt: skip
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
            if not finished:
                await self._stream_incomplete(call, adapter, meter, ttft, "upstream_stream_incomplete", send)
                finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not disconnected:
                raise
            if not finished:
                usage, _ = meter.partial_usage(call.prompt_chars)
                await self.meter.record(
                    call, status="cancelled", http_status=499, usage=usage, model_used=meter.model,
                    usage_estimated=True, ttft=ttft, error_code="client_disconnected",
                    upstream_request_id=meter.upstream_id,
                )  # fmt: skip
        except TransportFailure as exc:
            if not finished:
                code = "upstream_timeout" if exc.timeout else "upstream_stream_broken"
                await self._stream_incomplete(call, adapter, meter, ttft, code, send)
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _stream_incomplete(
        self, call: Call, adapter: Adapter, meter: Any, ttft: float | None, code: str, send: Send
    ) -> None:
        """The upstream stream ended without its final event: record what we know, tell the client in-band."""
        usage, _ = meter.partial_usage(call.prompt_chars)
        await self.meter.record(
            call, status="error", http_status=502, usage=usage, model_used=meter.model, usage_estimated=True,
            ttft=ttft, error_code=code, upstream_request_id=meter.upstream_id,
        )  # fmt: skip
        message = f"the provider's stream ended early ({code})"
        if adapter.flavor == "anthropic":
            body = b"event: error\ndata: " + orjson.dumps(
                {"type": "error", "error": {"type": "api_error", "message": message}}
            ) + b"\n\n"
        else:
            body = b"data: " + orjson.dumps({"error": {"type": "api_error", "code": code, "message": message}}) + b"\n\n"
        await send({"type": "http.response.body", "body": body, "more_body": True})


__all__ = ["Upstream", "call_headers"]
