"""The gateway's free routes beside the metered calls: the model listings (``/v1/models``, ``/v1beta/models``, one
model), OpenAI's stored responses (``/v1/responses/{id}``, cancel, input items), token counting (Anthropic's
``/v1/messages/count_tokens``, Gemini's ``:countTokens``) and a recorded call (``/v1/tokenops/requests/{id}``).
None of them is spend: they are answered for a valid key and never held against a budget or limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

import orjson

from tokenops.config import Config
from tokenops.errors import GatewayError, LedgerError
from tokenops.gateway import validate
from tokenops.gateway.background import BackgroundResponses
from tokenops.gateway.client import TransportFailure, UpstreamClient
from tokenops.gateway.http import Receive, Scope, Send, encode_headers, header_dict, read_body, send_bytes, send_json
from tokenops.gateway.meter import Meter
from tokenops.gateway.metrics import OTHER, GatewayMetrics
from tokenops.gateway.providers import Adapter
from tokenops.gateway.stages.router import RouterStage
from tokenops.gateway.upstream import relayed_headers
from tokenops.ledger.base import Ledger
from tokenops.pricing.catalog import PriceCatalog

RESPONSE_METHODS = {"": ("GET", "DELETE"), "/cancel": ("POST",), "/input_items": ("GET",)}


class Host(Protocol):
    """What the routes need of the gateway."""

    config: Config
    clock: Callable[[], datetime]
    adapters: dict[str, Adapter]
    catalog: PriceCatalog
    router: RouterStage
    client: UpstreamClient | None
    background: BackgroundResponses | None
    meter: Meter | None
    ledger: Ledger
    metrics: GatewayMetrics
    _timeouts: dict[str, tuple[float, float]]

    async def _authorize(self, scope: Scope, flavor: str, send: Send) -> str | None: ...
    async def _send_error(self, send: Send, err: GatewayError, flavor: str,
                          headers: dict[str, str] | None = None) -> None: ...  # fmt: skip


def _int(query: dict[str, list[str]], name: str, default: int, most: int, *, clamp: bool = False) -> int:
    """A page size; ``clamp``: Google's reading (0 is the default, a larger one is the most), else Anthropic's (1 to
    ``most``, anything else refused)."""
    text = query.get(name, [str(default)])[-1]
    if not (text.isascii() and text.isdigit()) or (not clamp and not 1 <= int(text) <= most):
        raise ValueError(f"{name} must be a whole number from 1 to {most}, not {text[:20]!r}")
    return (min(int(text), most) or default) if clamp else int(text)


def list_page(models: list[str], shape: str, query: dict[str, list[str]]) -> tuple[list[str], str | None]:
    """One page of a model listing, as the client's API pages it, and what the next page needs (None at the end).

    Anthropic: ``limit`` (1 to 1000, default 20) models after ``after_id`` or before ``before_id``. Gemini:
    ``pageSize`` (default 50, at most 1000) from ``pageToken`` (the next page's offset, opaque to clients). OpenAI
    lists every model at once. An id or token that is not in the listing is a ValueError."""
    if shape == "anthropic":
        limit = _int(query, "limit", 20, 1000)
        after, before = query.get("after_id", [None])[-1], query.get("before_id", [None])[-1]
        if after is not None and before is not None:
            raise ValueError("give after_id or before_id, not both")
        for given in (after, before):
            if given is not None and given not in models:
                raise ValueError(f"no model {given[:100]!r} in this listing")
        if before is not None:
            end = models.index(before)
            page = models[max(0, end - limit):end]
            return page, (page[0] if end - limit > 0 else None)
        start = models.index(after) + 1 if after is not None else 0
        page = models[start:start + limit]
        return page, (page[-1] if start + limit < len(models) else None)
    if shape == "gemini":
        size = _int(query, "pageSize", 50, 1000, clamp=True)
        token = query.get("pageToken", ["0"])[-1] or "0"
        if not (token.isascii() and token.isdigit()) or int(token) > len(models):
            raise ValueError(f"pageToken {token[:20]!r} is not one this listing gave")
        start = int(token)
        return models[start:start + size], (str(start + size) if start + size < len(models) else None)
    return models, None


class SideRoutes:
    def __init__(self, host: Host) -> None:
        self.host = host

    @staticmethod
    def client_shape(scope: Scope) -> str:
        """Which API's model listing the client reads: Anthropic's SDKs send ``anthropic-version``, Google's send
        ``x-goog-api-key`` (or ``?key=``) or call ``/v1beta``; anything else reads OpenAI's."""
        headers = header_dict(scope)
        if "anthropic-version" in headers:
            return "anthropic"
        if "x-goog-api-key" in headers or scope["path"].startswith("/v1beta/") \
                or b"key=" in scope.get("query_string", b""):  # fmt: skip
            return "gemini"
        return "openai"

    def model_names(self, shape: str) -> dict[str, str]:
        """model -> provider: the config's aliases, then each provider's catalog models (for an Anthropic or
        Gemini client, only those it can call in its own format)."""
        def callable_(provider: str) -> bool:
            return shape == "openai" or self.host.config.provider_kind(provider) == shape

        names: dict[str, str] = {}
        for a in self.host.config.models:
            if callable_(a.provider):
                names.setdefault(a.name, a.provider)
        for name in self.host.config.providers:
            if callable_(name):
                for model in self.host.catalog.models(self.host.router.price_ids[name]):
                    names.setdefault(model, name)
        return names

    @staticmethod
    def model_object(model: str, provider: str, shape: str) -> dict[str, Any]:
        if shape == "anthropic":
            return {"type": "model", "id": model, "display_name": model, "created_at": "1970-01-01T00:00:00Z"}
        if shape == "gemini":
            methods = ["embedContent", "batchEmbedContents"] if "embedding" in model else \
                ["generateContent", "streamGenerateContent", "countTokens"]  # fmt: skip
            return {"name": f"models/{model}", "baseModelId": model, "version": "001", "displayName": model,
                    "supportedGenerationMethods": methods}  # fmt: skip
        return {"id": model, "object": "model", "created": 0, "owned_by": provider}

    async def models(self, scope: Scope, send: Send) -> None:
        """The models a caller can name, in its API's shape (:meth:`_client_shape`): an Anthropic or Gemini client
        gets only the models it can call in its own format; an OpenAI one, all."""
        shape = self.client_shape(scope)
        if not await self.host._authorize(scope, shape, send):
            return
        names = list(self.model_names(shape).items())
        try:
            page, more = list_page([m for m, _ in names], shape, parse_qs(scope.get("query_string", b"").decode("utf-8", "replace")))
        except ValueError as exc:
            await self.host._send_error(send, GatewayError(400, "invalid_request", str(exc)), shape)
            return
        providers = dict(names)
        data = [self.model_object(m, providers[m], shape) for m in page]
        if shape == "anthropic":
            await send_json(send, 200, {"data": data, "has_more": more is not None,
                                        "first_id": page[0] if page else None,
                                        "last_id": page[-1] if page else None})  # fmt: skip
        elif shape == "gemini":
            await send_json(send, 200, {"models": data, **({"nextPageToken": more} if more else {})})
        else:
            await send_json(send, 200, {"object": "list", "data": data})

    async def model(self, scope: Scope, send: Send, model: str) -> None:
        """``GET /v1/models/{id}``: one model of :meth:`_models`, in the client's shape; 404 for one it cannot call."""
        shape = self.client_shape(scope)
        if not await self.host._authorize(scope, shape, send):
            return
        model = unquote(model).removeprefix("models/")
        provider = self.model_names(shape).get(model)
        if provider is None:
            await self.host._send_error(send, GatewayError(404, "model_not_found", f"the model {model!r} does not exist "
                                                      "or is not configured on this gateway", param="model"), shape)  # fmt: skip
            return
        await send_json(send, 200, self.model_object(model, provider, shape))

    async def response_owner(self, response_id: str) -> tuple[str, str | None, str] | None:
        """(provider, key id, request id) of the call that created an OpenAI response through this gateway."""
        if self.host.background is not None and (call := self.host.background.owner(response_id)) is not None:
            return call.provider_name, call.key.id if call.key else None, call.request_id
        event = self.host.meter.lookup_upstream(response_id) if self.host.meter else None
        if event is None:
            event = await asyncio.to_thread(self.host.ledger.event_by_upstream_id, response_id, "responses")
        return None if event is None else (event.provider, event.key_id, event.request_id)

    async def response_resource(self, scope: Scope, send: Send, response_id: str, action: str) -> None:
        """``GET``/``DELETE /v1/responses/{id}``, ``POST …/cancel``, ``GET …/input_items``: passed to the provider
        that created the response, for the key that created it (or the admin key); another key's response is
        answered like a missing one. Free: never recorded as spend. A background response fetched or cancelled
        finished is metered now, if the gateway's own check has not metered it yet."""
        method = scope["method"]
        allowed = RESPONSE_METHODS[action]
        if method not in allowed:
            err = GatewayError(405, "method_not_allowed", f"method {method} not allowed on {scope['path']}")
            await self.host._send_error(send, err, "openai", {"allow": ", ".join(allowed)})
            return
        caller = await self.host._authorize(scope, "openai", send)
        if caller is None:
            return
        try:
            owner = await self.response_owner(response_id)
        except LedgerError as exc:
            await self.host._send_error(send, GatewayError(503, "ledger_unavailable", str(exc)), "openai")
            return
        if owner is None or (caller != "admin" and owner[1] != caller):
            await self.host._send_error(send, GatewayError(404, "not_found", f"no response {response_id!r} was created "
                                                      "through this gateway with this key"), "openai")  # fmt: skip
            return
        provider, _, request_id = owner
        adapter = self.host.adapters[provider]
        connect, read = self.host._timeouts[provider]
        url = adapter.request_url("responses", scope.get("query_string", b"").decode("latin-1"))
        url = url.replace("/responses", f"/responses/{response_id}{action}", 1)
        assert self.host.client is not None, "Gateway.start() was not called"
        try:
            resp = await self.host.client.send(url, adapter.headers(header_dict(scope)), b"", connect=connect, read=read,
                                          method=method)  # fmt: skip
        except TransportFailure as exc:
            await self.host._send_error(send, GatewayError(504 if exc.timeout else 502, "upstream_unreachable",
                                                      f"provider {provider!r} is unreachable: {exc}"), "openai")  # fmt: skip
            return
        out = {"content-type": resp.headers.get("content-type", "application/json"), **relayed_headers(resp),
               "x-tokenops-cost-usd": "0.00", "x-tokenops-provider": provider,
               "x-tokenops-request-id": request_id}  # fmt: skip
        try:
            if out["content-type"].startswith("text/event-stream"):  # ?stream=true: relayed as it comes
                await send({"type": "http.response.start", "status": resp.status, "headers": encode_headers(out)})
                async for chunk in resp.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            data = await resp.read()
        except TransportFailure as exc:
            await self.host._send_error(send, GatewayError(502, "upstream_unreachable", f"provider {provider!r} broke "
                                                      f"off: {exc}"), "openai")  # fmt: skip
            return
        finally:
            await resp.close()
        if resp.status == 200 and action != "/input_items" and method != "DELETE" and self.host.background is not None:
            with contextlib.suppress(ValueError):
                await self.host.background.settle(response_id, orjson.loads(data))
        await send_bytes(send, resp.status, data, out)

    async def count_tokens(self, scope: Scope, receive: Receive, send: Send, flavor: str, route: str,
                            path_model: str | None = None) -> None:  # fmt: skip
        """``POST /v1/messages/count_tokens`` and Gemini's ``:countTokens``: passed to the model's provider, for
        any valid key; free at the providers, so never recorded as spend and never held against a budget or limit
        (it shows in ``tokenops_requests{route=…}``). Claude Code asks it for ``/context``: without it, it falls
        back to paid ``max_tokens=1`` calls."""
        headers = header_dict(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            if not await self.host._authorize(scope, flavor, send):
                return
            raw = await read_body(receive, headers, self.host.config.gateway.max_body_bytes)
            if path_model is None:
                body, model = validate.body_and_model(raw)  # the checks every route makes of a body and its model
            else:
                body, model = validate.json_object(raw), validate.model_name(path_model)
            provider, upstream_model = self.host.router.resolve(model, flavor, self.host.clock())
        except GatewayError as err:
            self.host.metrics.rejected.labels(err.code).inc()
            await self.host._send_error(send, err, flavor)
            return
        adapter = self.host.adapters[provider]
        connect, read = self.host._timeouts[provider]
        url = adapter.request_url(route, query, upstream_model)
        sent = body if path_model is not None else {**body, "model": upstream_model}
        assert self.host.client is not None, "Gateway.start() was not called"
        try:
            resp = await self.host.client.send(url, adapter.headers(headers), orjson.dumps(sent), connect=connect,
                                          read=read)  # fmt: skip
        except TransportFailure as exc:
            failed = GatewayError(504 if exc.timeout else 502, "upstream_unreachable",
                                  f"provider {provider!r} is unreachable: {exc}")  # fmt: skip
            self.host.metrics.requests.labels(route, provider, OTHER, "error").inc()
            await self.host._send_error(send, failed, flavor)
            return
        try:
            data = await resp.read()
        except TransportFailure as exc:
            await self.host._send_error(send, GatewayError(502, "upstream_unreachable", f"provider {provider!r} broke "
                                                      f"off: {exc}"), flavor)  # fmt: skip
            return
        finally:
            await resp.close()
        label = upstream_model if upstream_model in self.host.metrics.known_models or self.host.catalog.lookup(
            self.host.router.price_ids[provider], upstream_model, self.host.clock()) else OTHER  # fmt: skip
        status = "ok" if resp.status < 400 else "upstream_error"
        self.host.metrics.requests.labels(route, provider, label, status).inc()
        out = {"content-type": resp.headers.get("content-type", "application/json"), **relayed_headers(resp),
               "x-tokenops-cost-usd": "0.00", "x-tokenops-provider": provider}  # fmt: skip
        await send_bytes(send, resp.status, data, out)

    async def get_request(self, scope: Scope, request_id: str, send: Send) -> None:
        caller = await self.host._authorize(scope, "openai", send)
        if caller is None:
            return
        event = self.host.meter.lookup_recent(request_id) if self.host.meter else None
        if event is None:
            try:
                event = await asyncio.to_thread(self.host.ledger.get_event, request_id)
            except LedgerError as exc:
                await self.host._send_error(send, GatewayError(503, "ledger_unavailable", str(exc)), "openai")
                return
        if event is None or (caller != "admin" and event.key_id != caller):
            # another key's call is answered like a missing one: its existence is not for this caller to know
            await self.host._send_error(send, GatewayError(404, "not_found", f"no recorded call {request_id}"), "openai")
            return
        await send_json(send, 200, event.to_public())


__all__ = ["Host", "SideRoutes"]
