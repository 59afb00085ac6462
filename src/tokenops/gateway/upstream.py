"""Upstream stage and metering of the answer: forward the call, relay the answer, record it.

JSON answers are read whole (they are small), priced, made durable, then sent with their cost in
``X-TokenOps-Cost-USD``. Streams are relayed event by event as they arrive, never buffered; the event that
ends the stream is held back until the call is recorded, so an answered stream is never lost. A client that
goes away mid-stream ends the upstream call, and the call is recorded as ``cancelled`` with the usage known
so far (estimated where the provider had not said yet, and flagged so).

A provider's answer is read defensively: whatever it sends, every call that reached it is recorded once, and
usage that is missing or cannot be trusted is estimated from what the request held (text and images,
:mod:`tokenops.tokens`) and what came back, flagged ``usage_estimated`` with the reason in ``error_code``
(``usage_missing``, ``usage_malformed``, ``usage_implausible``). Stream specifics: a final event seen twice is
recorded once; usage that arrives after the final event is waited for briefly (:data:`TRAILING_WAIT`) when the
final event came without it; a last event without its blank line still counts.

Before a provider is called, the spool must be able to take the call's record (else 503
``spool_unavailable``, and the provider is never called). Upstream failures: unreachable → 502, timed out →
504, garbage → 502, each in the route's error shape and recorded (estimated when the provider may have billed
the call); upstream HTTP errors are relayed with their status and body.

Fallbacks (``routing.fallbacks``): when the provider answers 429 or 5xx, times out or cannot be reached, and
the call has a fallback model whose provider's breaker is not open, that model is tried instead (after
``routing.backoff`` seconds, doubled each time), before anything reaches the client: a stream falls back only
on its status, never after its first byte. The answer is priced for the model that gave it, and the event says
why (``route_reason``). When every model failed: 502 ``fallbacks_exhausted`` listing what was tried. A failed
attempt is not recorded as an event of its own (providers do not bill a 429 or a 5xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tokenops.call import Call
from tokenops.errors import GatewayError, UpstreamError
from tokenops.gateway import translate
from tokenops.gateway.background import RUNNING, BackgroundResponses
from tokenops.gateway.breaker import Breakers
from tokenops.gateway.client import TransportFailure, UpstreamClient, UpstreamResponse
from tokenops.gateway.errors import error_body
from tokenops.gateway.http import Receive, Send, encode_headers
from tokenops.gateway.meter import Meter
from tokenops.gateway.providers.base import Adapter, StreamMeter
from tokenops.gateway.sse import SSEBuffer, SSEEvent
from tokenops.ledger.events import SpendEvent
from tokenops.ledger.spool import SpoolUnavailable
from tokenops.money import format_usd
from tokenops.policy.estimate import EMBEDDING_ROUTES
from tokenops.routing import FALLBACK_ON
from tokenops.tokens import estimate_input
from tokenops.usage import MalformedUsage, MissingUsage, Usage

log = logging.getLogger("tokenops.upstream")

# Upstream response headers worth passing on: request ids and rate-limit state help clients and their SDKs.
_RELAY_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "openai-")
_RELAY_NAMES = ("retry-after", "x-request-id", "request-id", "retry-after-ms", "x-should-retry")
TRAILING_WAIT = 2.0  # seconds to wait for usage sent after the final event, when the final event had none


def relayed_headers(resp: UpstreamResponse) -> dict[str, str]:
    return {n: v for n, v in resp.headers.items() if n in _RELAY_NAMES or n.startswith(_RELAY_PREFIXES)}


_CACHE_HEADER = {"bypass": "off", "error": "miss"}


def call_headers(call: Call, event: SpendEvent | None) -> dict[str, str]:
    h = {"x-tokenops-request-id": call.request_id}
    model = (event.model_used if event else None) or call.upstream_model or call.model_requested
    if model:  # none before the body was read (a call refused for its key)
        h["x-tokenops-model"] = model
    # the header's contract is hit / miss / off; the event keeps why a call was not cached (bypass, error)
    h["x-tokenops-cache"] = _CACHE_HEADER.get(call.cache, call.cache)
    h["x-tokenops-cost-usd"] = format_usd(event.cost_usd) if event else "pending"
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
        self.background: BackgroundResponses | None = None  # set by the gateway: background Responses, metered later
        self.breakers = Breakers(5, 30.0)  # the gateway's, from routing.breaker
        self.router: Any = None  # the gateway's RouterStage: where a fallback model is routed
        self.backoff = 0.2  # routing.backoff

    def input_estimate(self, call: Call) -> int:
        return estimate_input(call.shape, call.upstream_model or call.model_requested)

    async def forward(self, call: Call, receive: Receive, send: Send) -> None:
        problem = self.meter.spool.problem()
        if problem is not None:  # the answer could not be recorded: do not call the provider at all
            raise SpoolUnavailable(f"TokenOps cannot record calls right now ({problem}); try again shortly")
        tried: list[str] = []
        while True:
            if not self.breakers.healthy(call.provider_name) and await self._fall_back(call, tried, "breaker open"):
                continue
            adapter = self.adapters[call.provider_name]
            route = call.upstream_route or call.route
            given = call.body
            if route != call.route:  # the provider speaks another format: translate (tokenops.gateway.translate)
                given = translate.request(call.route, route, call.body, call.upstream_model,
                                          adapter.output_limit_field(route, call.upstream_model), call.stream)  # fmt: skip
            body, wants_usage = adapter.prepare(route, given, call.upstream_model, call.output_limit)
            connect, read = self.timeouts[call.provider_name]
            try:
                resp = await self.client.send(adapter.request_url(route, call.query, call.upstream_model),
                                              adapter.headers(call.headers),
                                              orjson.dumps(body), connect=connect, read=read)  # fmt: skip
            except TransportFailure as exc:
                self.breakers.failed(call.provider_name)
                if await self._fall_back(call, tried, "timeout" if exc.timeout else "unreachable"):
                    continue
                if tried:
                    raise await self._exhausted(call, tried, "timeout" if exc.timeout else "unreachable") from None
                raise await self._failed(call, exc, "is unreachable") from None
            if resp.status in FALLBACK_ON:
                if resp.status != 429:  # a rate limit is the model's quota, not the provider's health
                    self.breakers.failed(call.provider_name)
                if self._next(call) is not None or tried:
                    await resp.close()
                    if await self._fall_back(call, tried, str(resp.status)):
                        continue
                    raise await self._exhausted(call, tried, str(resp.status))
            elif resp.status < 400:
                self.breakers.succeeded(call.provider_name)
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
            return

    def _next(self, call: Call) -> str | None:
        """The first of the call's remaining fallbacks whose provider may take calls (its breaker not open)."""
        if self.router is None:
            return None
        for model in call.fallbacks:
            provider = self.router.provider_of(call, model)
            if provider is not None and self.breakers.healthy(provider):
                return model
        return None

    async def _fall_back(self, call: Call, tried: list[str], reason: str) -> bool:
        """Move the call to its next fallback model (False: none left); ``reason``: why the current one failed."""
        model = self._next(call)
        if model is None:
            return False
        tried.append(f"{call.model_requested} ({reason})")
        self.meter.metrics.fallbacks.labels(call.provider_name, reason).inc()
        log.info("call %s: %s failed (%s); trying %s", call.request_id, call.model_requested, reason, model)
        rest = call.fallbacks[call.fallbacks.index(model) + 1:]
        call.fallback_rows = call.fallback_rows[len(call.fallbacks) - len(rest):]
        call.fallbacks = rest
        if reason != "breaker open" and self.backoff:
            await asyncio.sleep(self.backoff * 2 ** (len(tried) - 1))
        self.router.fall_back(call, model, f"fallback: {'; '.join(tried)} failed")
        return True

    async def _exhausted(self, call: Call, tried: list[str], reason: str) -> UpstreamError:
        """Every model of the call's chain failed: recorded, and the 502 to raise."""
        tried = [*tried, f"{call.model_requested} ({reason})"]
        err = UpstreamError(502, "fallbacks_exhausted", f"every model tried failed: {', '.join(tried)}")
        call.route_reason = f"fallback: {'; '.join(tried)} failed"
        await self.meter.record(call, status="error", http_status=err.status, error_code=err.code)
        return err

    async def _failed(self, call: Call, exc: TransportFailure, what: str) -> UpstreamError:
        """Record a transport failure; returns the error to raise. When the request may have reached the provider
        (it was sent), the provider may bill it: the input is estimated, flagged, rather than recorded as $0."""
        err = _unreachable(call, exc, what)
        usage = Usage(input_tokens=self.input_estimate(call)) if exc.sent else None
        await self.meter.record(call, status="error", http_status=err.status, usage=usage,
                                usage_estimated=usage is not None, error_code=err.code)  # fmt: skip
        return err

    async def _read(self, call: Call, resp: UpstreamResponse) -> bytes:
        try:
            return await resp.read()
        except TransportFailure as exc:
            raise await self._failed(call, exc, "broke off") from None

    async def _relay_error(self, call: Call, resp: UpstreamResponse, send: Send) -> None:
        body = await self._read(call, resp)
        event = await self.meter.record(
            call, status="upstream_error", http_status=resp.status, error_code=_error_code(body)
        )
        if (call.upstream_route or call.route) != call.route:  # translated: the error in the client's own shape
            try:
                code, message = translate.error(orjson.loads(body))
            except orjson.JSONDecodeError:
                code, message = "upstream_error", body.decode("utf-8", "replace")[:500]
            body = error_body(GatewayError(resp.status, code, message), call.flavor)
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
            # a 200 the provider may have billed: record what was sent, estimated
            await self.meter.record(call, status="error", http_status=502, usage_estimated=True,
                                    usage=Usage(input_tokens=self.input_estimate(call)),
                                    error_code="upstream_invalid_response")  # fmt: skip
            raise UpstreamError(
                502, "upstream_invalid_response", f"provider {call.provider_name!r} answered with invalid JSON"
            ) from None
        if call.route == "responses" and str(payload.get("status")) in RUNNING \
                and isinstance(payload.get("id"), str) and self.background is not None:  # fmt: skip
            await self._track_background(call, adapter, payload["id"], resp, body, send)
            return
        problem = None
        try:
            usage = adapter.usage(call.upstream_route or call.route, payload, call.upstream_model)
        except MalformedUsage as exc:
            # Some OpenAI-compatible servers omit usage, some report nonsense: estimate rather than record nothing
            # (or trillions), and say so.
            problem = exc.code
            embedding = call.route in EMBEDDING_ROUTES  # no output; Gemini's never report usage: expected, not news
            log.log(logging.DEBUG if embedding and isinstance(exc, MissingUsage) else logging.WARNING,
                    "call %s: provider %s usage not used (%s); estimated", call.request_id, call.provider_name, exc)
            usage = Usage(input_tokens=self.input_estimate(call), output_tokens=0 if embedding else (len(body) + 3) // 16)
        event = await self.meter.record(
            call,
            status="ok",
            http_status=resp.status,
            usage=usage,
            model_used=adapter.response_model(payload),
            usage_estimated=problem is not None,
            error_code=problem,
            upstream_request_id=adapter.upstream_request_id(payload),
            service_tier=adapter.service_tier(call.upstream_route or call.route, payload),
        )
        if (call.upstream_route or call.route) != call.route:  # answered in the provider's format: the client's
            try:
                body = orjson.dumps(translate.response(call.route, call.upstream_route, payload))
            except (TypeError, ValueError, AttributeError) as exc:  # recorded already; the client gets a 502
                raise UpstreamError(502, "upstream_invalid_response", f"provider {call.provider_name!r} answered "
                                    f"in a shape that cannot be translated ({exc})") from None  # fmt: skip
        headers = {"content-type": resp.headers.get("content-type", "application/json"),
                   "content-length": str(len(body)), **relayed_headers(resp), **call_headers(call, event)}  # fmt: skip
        await send({"type": "http.response.start", "status": resp.status, "headers": encode_headers(headers)})
        await send({"type": "http.response.body", "body": body})

    async def _track_background(self, call: Call, adapter: Adapter, response_id: str, resp: UpstreamResponse,
                                body: bytes, send: Send) -> None:  # fmt: skip
        """A background response, queued: metered when it ends (:mod:`tokenops.gateway.background`)."""
        assert self.background is not None
        try:
            await self.background.track(call, response_id)
            event = None
        except OSError as exc:  # it cannot be kept: record it now rather than never, estimated and flagged
            log.error("call %s: background response %s cannot be tracked (%s); recorded now, estimated",
                      call.request_id, response_id, exc)  # fmt: skip
            event = await self.meter.record(call, status="ok", http_status=resp.status, usage_estimated=True,
                                            usage=Usage(input_tokens=self.input_estimate(call)),
                                            error_code="background_untracked", upstream_request_id=response_id)  # fmt: skip
        headers = {"content-type": resp.headers.get("content-type", "application/json"),
                   "content-length": str(len(body)), **relayed_headers(resp), **call_headers(call, event)}  # fmt: skip
        await send({"type": "http.response.start", "status": resp.status, "headers": encode_headers(headers)})
        await send({"type": "http.response.body", "body": body})

    async def _relay_stream(
        self, call: Call, adapter: Adapter, resp: UpstreamResponse, wants_usage: bool, receive: Receive, send: Send
    ) -> None:
        route = call.upstream_route or call.route
        relay = _StreamRelay(self, call, adapter.stream_meter(wants_usage, route, call.upstream_model), call.flavor, send)
        if route != call.route:
            relay.converter = translate.stream(call.route, route, call.body)
        elif route == "gemini.stream" and "alt=sse" not in call.query:  # the client reads Gemini's JSON array
            relay.converter = translate.GeminiArrayStream()
        headers = {"content-type": getattr(relay.converter, "content_type", None) or resp.headers.get(
                       "content-type", "text/event-stream"), "cache-control": "no-cache",
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
        try:
            await relay.run(resp.chunks())
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not disconnected:
                raise
            if not relay.recorded:
                usage, _ = relay.meter.partial_usage(self.input_estimate(call))
                await self.meter.record(
                    call, status="cancelled", http_status=499, usage=usage, model_used=relay.meter.model,
                    usage_estimated=True, ttft=relay.ttft, error_code="client_disconnected",
                    upstream_request_id=relay.meter.upstream_id, service_tier=relay.meter.service_tier,
                )  # fmt: skip
        except TransportFailure as exc:
            if not relay.recorded:
                await relay.incomplete("upstream_timeout" if exc.timeout else "upstream_stream_broken")
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _event_data(ev: SSEEvent) -> Any:
    """An event's JSON payload, ``"[DONE]"``, or None."""
    if ev.data is None:
        return None
    if ev.data.strip() == b"[DONE]":
        return "[DONE]"
    try:
        return orjson.loads(ev.data)
    except orjson.JSONDecodeError:
        return None


class _StreamRelay:
    """One stream's relay: events in, bytes out, the call recorded exactly once before its final event."""

    def __init__(self, upstream: Upstream, call: Call, meter: StreamMeter, flavor: str, send: Send):
        self.upstream = upstream
        self.call = call
        self.meter = meter
        self.flavor = flavor
        self.send = send
        self.sse = SSEBuffer()
        self.ttft: float | None = None
        self.recorded = False
        self.held: bytes | None = None  # the final event, held until the call is recorded
        self.done = False  # the final event was sent (or replaced by an error): relay nothing more
        self.converter: Any = None  # a translated call: the provider's events into the client's format

    async def run(self, chunks: AsyncIterator[bytes]) -> None:
        it = chunks.__aiter__()
        deadline = 0.0
        while True:
            try:
                if self.held is None:
                    chunk = await it.__anext__()
                else:  # the final event came without usage: usage may still follow it, briefly
                    deadline = deadline or time.monotonic() + TRAILING_WAIT
                    chunk = await asyncio.wait_for(it.__anext__(), max(0.0, deadline - time.monotonic()))
            except (StopAsyncIteration, TimeoutError):
                break
            for ev in self.sse.feed(chunk):
                await self.event(ev)
        last = self.sse.flush()
        if last is not None:
            await self.event(last)
        if self.held is not None:
            await self.finish()
        elif not self.recorded:
            await self.incomplete("upstream_stream_incomplete")

    async def event(self, ev: SSEEvent) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter()
        try:
            out = self.meter.relay(ev)
            final = self.meter.is_final(ev)
            if self.converter is not None:
                out = self.converter.convert(ev.event, _event_data(ev))
        except Exception:  # an adapter bug on a malformed event must not cut the client's stream
            log.exception("call %s: provider event not understood; relayed as is", self.call.request_id)
            self.meter.usage_problem = "usage_malformed"
            out, final = ev.raw, False
        if self.done or (final and (self.held is not None or self.recorded)):
            return  # after the end, and a second final event: nothing more for the client, nothing recorded
        if final:
            self.held = out
            if self.meter.usage is not None and self.meter.usage_problem is None:
                await self.finish()  # the usual case: usage came before the final event
            return
        if out:
            await self.send({"type": "http.response.body", "body": out, "more_body": True})

    async def finish(self) -> None:
        """Record the call, then send the held final event (or an in-band error if it cannot be recorded)."""
        usage, estimated = self.meter.final_usage(self.upstream.input_estimate(self.call))
        problem = (self.meter.usage_problem or "usage_missing") if estimated else None
        self.recorded = True  # set first: a disconnect from here on must not record the call a second time
        try:
            await asyncio.shield(self.upstream.meter.record(
                self.call, status="ok", http_status=200, usage=usage, model_used=self.meter.model,
                usage_estimated=estimated, error_code=problem, ttft=self.ttft, upstream_request_id=self.meter.upstream_id,
                service_tier=self.meter.service_tier,
            ))  # fmt: skip
        except SpoolUnavailable as exc:
            await self.error_event(exc)
        else:
            if self.held:
                await self.send({"type": "http.response.body", "body": self.held, "more_body": True})
        self.held = None
        self.done = True

    async def incomplete(self, code: str) -> None:
        """The upstream stream ended without its final event: record what we know, tell the client in-band."""
        usage, _ = self.meter.partial_usage(self.upstream.input_estimate(self.call))
        self.recorded = True
        try:
            await self.upstream.meter.record(
                self.call, status="error", http_status=502, usage=usage, model_used=self.meter.model,
                usage_estimated=True, ttft=self.ttft, error_code=code, upstream_request_id=self.meter.upstream_id,
                service_tier=self.meter.service_tier,
            )  # fmt: skip
        except SpoolUnavailable:
            pass  # deferred by the meter; the client is told the stream ended early either way
        await self.error_event(GatewayError(502, code, f"the provider's stream ended early ({code})"))
        self.done = True

    async def error_event(self, err: GatewayError) -> None:
        if self.call.route == "responses":  # the Responses API's own error event
            body = b"event: error\ndata: " + orjson.dumps(
                {"type": "error", "code": err.code, "message": err.message, "param": None, "sequence_number": 0}
            ) + b"\n\n"
        elif self.flavor == "gemini":
            body = b"data: " + error_body(err, "gemini") + b"\n\n"
        elif self.flavor == "anthropic":
            body = b"event: error\ndata: " + orjson.dumps(
                {"type": "error", "error": {"type": "api_error", "message": err.message}}
            ) + b"\n\n"
        else:
            body = b"data: " + orjson.dumps({"error": {"type": "api_error", "code": err.code, "message": err.message}}) + b"\n\n"
        await self.send({"type": "http.response.body", "body": body, "more_body": True})


__all__ = ["Upstream", "call_headers"]
