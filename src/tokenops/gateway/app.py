"""The gateway ASGI app, assembled in one place.

    request ─► route ─► body (size limit) ─► key ─► JSON checks ─► tags ─► policy ─► cache ─► router
            ─► upstream (relay JSON or stream) ─► meter (price, spool fsync) ─► response

:func:`create_app` takes a :class:`~tokenops.config.Config` and optional injected parts (an httpx transport
for a fake upstream, a price catalog, a ledger), so tests build exactly the gateway they need in-process.
Call :meth:`Gateway.start` / :meth:`Gateway.close` (the ASGI lifespan does it under uvicorn).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from tokenops.config import Config
from tokenops.errors import GatewayError, LedgerError, UpstreamError
from tokenops.gateway import validate
from tokenops.gateway.call import Call
from tokenops.gateway.errors import error_body
from tokenops.gateway.http import Receive, Scope, Send, encode_headers, header_dict, read_body, send_bytes, send_json
from tokenops.gateway.keycache import KeyCache
from tokenops.gateway.meter import Meter
from tokenops.gateway.metrics import GatewayMetrics
from tokenops.gateway.providers import ADAPTERS, Adapter
from tokenops.gateway.stages.auth import KeyStage, presented_key
from tokenops.gateway.stages.cache import CacheStage
from tokenops.gateway.stages.policy import PolicyStage
from tokenops.gateway.stages.router import RouterStage
from tokenops.gateway.stages.tags import TagStage
from tokenops.gateway.upstream import Upstream
from tokenops.gateway.writer import LedgerWriter
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.events import new_request_id
from tokenops.ledger.spool import Spool
from tokenops.pricing.catalog import PriceCatalog, load_catalog

log = logging.getLogger("tokenops.gateway")


@dataclass(frozen=True)
class Route:
    name: str
    flavor: str
    methods: tuple[str, ...]


ROUTES: dict[str, Route] = {
    "/v1/chat/completions": Route("chat.completions", "openai", ("POST",)),
    "/v1/embeddings": Route("embeddings", "openai", ("POST",)),
    "/v1/messages": Route("messages", "anthropic", ("POST",)),
    "/v1/models": Route("models", "openai", ("GET",)),
    "/healthz": Route("healthz", "openai", ("GET",)),
    "/readyz": Route("readyz", "openai", ("GET",)),
    "/metrics": Route("metrics", "openai", ("GET",)),
}
_REQUEST_PATH = re.compile(r"^/v1/tokenops/requests/([A-Za-z0-9_\-]{1,100})$")


def build_stages(keys: KeyCache, config: Config, router: RouterStage) -> tuple[KeyStage, list[Any]]:
    """The pipeline before the upstream: key first (nothing is parsed for an unknown caller), then the rest."""
    return KeyStage(keys), [TagStage(config.tagging.policy()), PolicyStage(), CacheStage(), router]


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        catalog: PriceCatalog | None = None,
        ledger: DuckDBLedger | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.config = config
        self.catalog = catalog or load_catalog(tuple(e.to_row(config.source) for e in config.prices))
        self.ledger = ledger or DuckDBLedger(config.ledger_path())
        self.spool_dir = config.spool_path()
        self.metrics = GatewayMetrics()
        self.keys = KeyCache(self.ledger.list_keys)
        self.router = RouterStage(config, self.catalog)
        self.key_stage, self.stages = build_stages(self.keys, config, self.router)
        self.adapters: dict[str, Adapter] = {}
        timeouts: dict[str, httpx.Timeout] = {}
        for name, p in config.providers.items():
            adapter_cls = ADAPTERS[config.provider_kind(name)]
            self.adapters[name] = adapter_cls(p.base_url, p.api_key.get_secret_value() if p.api_key else None, dict(p.headers))
            timeouts[name] = httpx.Timeout(p.timeout.read, connect=p.timeout.connect)
        self._transport = transport
        self._timeouts = timeouts
        self.client: httpx.AsyncClient | None = None
        self.spool: Spool | None = None
        self.meter: Meter | None = None
        self.upstream: Upstream | None = None
        self.writer: LedgerWriter | None = None
        self.started = False

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.started:
            return
        await asyncio.to_thread(self.keys.reload)
        self.client = httpx.AsyncClient(
            transport=self._transport,
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=500, keepalive_expiry=30),
            follow_redirects=False,
        )
        self.spool = Spool(self.spool_dir)
        self.meter = Meter(self.spool, self.catalog, self.metrics)
        self.upstream = Upstream(self.client, self.adapters, self._timeouts, self.meter)
        self.writer = LedgerWriter(
            self.ledger,
            self.spool_dir,
            price_rows=self.catalog.get,
            interval=self.config.gateway.writer_interval,
            on_tick=self.keys.reload,
            tick_every=self.config.gateway.key_refresh,
        )
        self.writer.start()
        self.started = True

    async def close(self) -> None:
        if not self.started:
            return
        self.started = False
        assert self.client and self.spool and self.writer
        await self.client.aclose()
        self.spool.close()  # first, so the final drain sees the segment as finished and can remove it
        await asyncio.to_thread(self.writer.stop)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except LedgerError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- ASGI -----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        route = ROUTES.get(path)
        flavor = "anthropic" if path.startswith("/v1/messages") else "openai"
        if route is None:
            m = _REQUEST_PATH.match(path)
            if m and method == "GET":
                await self._get_request(scope, m.group(1), send)
                return
            status, code = (405, "method_not_allowed") if m else (404, "not_found")
            err = GatewayError(status, code, f"{'method ' + method + ' not allowed on' if m else 'no route'} {path}")
            await self._send_error(send, err, flavor, {"allow": "GET"} if m else {})
            return
        if method not in route.methods:
            err = GatewayError(405, "method_not_allowed", f"method {method} not allowed on {path}")
            await self._send_error(send, err, route.flavor, {"allow": ", ".join(route.methods)})
            return
        if route.name in ("chat.completions", "embeddings", "messages"):
            await self._handle_call(scope, receive, send, route)
        elif route.name == "models":
            await self._models(scope, send)
        elif route.name == "healthz":
            await send_json(send, 200, {"status": "ok"})
        elif route.name == "readyz":
            await self._readyz(send)
        elif route.name == "metrics":
            await send_bytes(send, 200, self.metrics.render(), {}, "text/plain; version=0.0.4; charset=utf-8")

    async def _send_error(
        self, send: Send, err: GatewayError, flavor: str, headers: dict[str, str] | None = None
    ) -> None:
        await send_bytes(send, err.status, error_body(err, flavor), {**err.headers, **(headers or {})})

    async def _handle_call(self, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
        call = Call(
            request_id=new_request_id(),
            route=route.name,
            flavor=route.flavor,
            started=time.perf_counter(),
            ts=datetime.now(UTC),
            headers=header_dict(scope),
        )
        response_started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal response_started
            response_started = True
            await send(message)

        try:
            raw = await read_body(receive, call.headers, self.config.gateway.max_body_bytes)
            await self.key_stage(call)
            validate.request(call, raw)
            for stage in self.stages:
                await stage(call)
            assert self.upstream is not None, "Gateway.start() was not called"
            await self.upstream.forward(call, receive, tracking_send)
        except ConnectionAbortedError:
            return
        except GatewayError as err:
            if response_started:
                log.error("call %s failed after its response started: %s", call.request_id, err)
                return
            await self._reject(call, err, send)
        except Exception:  # a bug: log it with its traceback, answer 500 in the route's shape, never a traceback
            log.exception("internal error in call %s", call.request_id)
            if not response_started:
                err = GatewayError(500, "internal_error", f"internal gateway error (request {call.request_id})")
                await self._reject(call, err, send)

    async def _reject(self, call: Call, err: GatewayError, send: Send) -> None:
        event = None
        if call.key is not None and self.meter is not None:
            status = "error" if isinstance(err, UpstreamError) or err.status >= 500 else "rejected"
            event = await self.meter.record(call, status=status, http_status=err.status, error_code=err.code)
        headers = {
            "x-tokenops-request-id": call.request_id,
            "x-tokenops-model": call.upstream_model or call.model_requested or "",
            "x-tokenops-cache": call.cache,
            "x-tokenops-cost-usd": "0.00" if event is not None else "0.00",
            **call.response_headers,
        }
        await self._send_error(send, err, call.flavor, headers)

    async def _authorize(self, scope: Scope, flavor: str, send: Send) -> bool:
        headers = header_dict(scope)
        key = presented_key(headers)
        admin = self.config.admin_key
        if key and admin and key == admin.get_secret_value():
            return True
        record = await self.keys.lookup(key) if key else None
        if record is None or not record.active:
            await self._send_error(send, GatewayError(401, "invalid_api_key", "a valid TokenOps key is required"), flavor)
            return False
        return True

    async def _models(self, scope: Scope, send: Send) -> None:
        if not await self._authorize(scope, "openai", send):
            return
        data = [{"id": a.name, "object": "model", "created": 0, "owned_by": a.provider} for a in self.config.models]
        seen = {a.name for a in self.config.models}
        for name in self.config.providers:
            for model in self.catalog.models(self.router.price_ids[name]):
                if model not in seen:
                    seen.add(model)
                    data.append({"id": model, "object": "model", "created": 0, "owned_by": name})
        await send_json(send, 200, {"object": "list", "data": data})

    async def _get_request(self, scope: Scope, request_id: str, send: Send) -> None:
        if not await self._authorize(scope, "openai", send):
            return
        event = self.meter.lookup_recent(request_id) if self.meter else None
        if event is None:
            try:
                event = await asyncio.to_thread(self.ledger.get_event, request_id)
            except LedgerError as exc:
                await self._send_error(send, GatewayError(503, "ledger_unavailable", str(exc)), "openai")
                return
        if event is None:
            await self._send_error(send, GatewayError(404, "not_found", f"no recorded call {request_id}"), "openai")
            return
        await send_json(send, 200, event.to_public())

    async def _readyz(self, send: Send) -> None:
        problems = []
        if not self.started:
            problems.append("gateway not started")
        if self.writer is not None and self.writer.last_error:
            problems.append(f"ledger: {self.writer.last_error}")
        body = {"status": "ready" if not problems else "unavailable", "problems": problems}
        await send_bytes(send, 200 if not problems else 503, orjson.dumps(body), {})


def create_app(config: Config, **parts: Any) -> Gateway:
    return Gateway(config, **parts)


__all__ = ["Gateway", "create_app", "encode_headers"]
