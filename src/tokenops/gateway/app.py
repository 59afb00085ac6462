"""The gateway ASGI app, assembled in one place.

    request ─► route ─► body (size limit) ─► key ─► JSON checks ─► tags ─► policy ─► cache ─► router
            ─► upstream (relay JSON or stream) ─► meter (price, spool fsync) ─► response

:class:`Gateway` takes a :class:`~tokenops.config.Config` and optional injected parts (an httpx transport
for a fake upstream, a price catalog, a ledger, the admin API's factory), so tests build exactly the gateway
they need in-process; :func:`tokenops.app.create_app` builds the whole served app (the gateway with its admin
API). Call :meth:`Gateway.start` / :meth:`Gateway.close` (the ASGI lifespan does it under uvicorn).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson

from tokenops.alerts import AlertDispatcher, build_channels
from tokenops.call import Call
from tokenops.config import Config, metrics_dir
from tokenops.errors import GatewayError, LedgerBusy, LedgerError, UpstreamError
from tokenops.gateway import call_log, health
from tokenops.gateway.anomalies import ANOMALY_STATE, AnomalyRounds
from tokenops.gateway.background import BackgroundResponses
from tokenops.gateway.batch_routes import BatchRoutes
from tokenops.gateway.batches import BatchBook
from tokenops.gateway.breaker import Breakers
from tokenops.gateway.cache import CacheStore, MemoryStore, RedisStore
from tokenops.gateway.client import UpstreamClient, make_client
from tokenops.gateway.errors import error_body, retry_headers
from tokenops.gateway.health import HealthWatch
from tokenops.gateway.http import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    encode_headers,
    header_dict,
    send_bytes,
    send_json,
    stop_task,
)
from tokenops.gateway.keycache import KeyCache
from tokenops.gateway.meter import Meter
from tokenops.gateway.metrics import GatewayMetrics
from tokenops.gateway.providers import ADAPTERS, Adapter
from tokenops.gateway.side_routes import SideRoutes
from tokenops.gateway.stages import Answer, Stage
from tokenops.gateway.stages.auth import KeyStage, presented_key
from tokenops.gateway.stages.cache import CacheStage
from tokenops.gateway.stages.policy import PolicyStage
from tokenops.gateway.stages.router import RouterStage
from tokenops.gateway.stages.tags import TagStage
from tokenops.gateway.stages.validate import ValidateStage
from tokenops.gateway.upstream import Upstream, call_headers
from tokenops.gateway.writer import LedgerWriter
from tokenops.ledger import open_ledger
from tokenops.ledger.base import Ledger
from tokenops.ledger.events import new_request_id
from tokenops.ledger.identity import identity_proof
from tokenops.ledger.spool import Spool, SpoolUnavailable
from tokenops.ledger.spool import describe as describe_spool
from tokenops.policy.alerting import BudgetAlerts
from tokenops.policy.approvals import Approvals
from tokenops.policy.config import BudgetConfig
from tokenops.policy.definitions import Definitions
from tokenops.policy.engine import PolicyEngine
from tokenops.policy.periods import Window
from tokenops.policy.state import PolicyState, StateSchemaMismatch, StateUnavailable, open_state
from tokenops.pricing.catalog import PriceCatalog, load_catalog

log = logging.getLogger("tokenops.gateway")


@dataclass(frozen=True)
class Route:
    name: str
    flavor: str
    methods: tuple[str, ...]


ROUTES: dict[str, Route] = {
    "/v1/chat/completions": Route("chat.completions", "openai", ("POST",)),
    "/v1/completions": Route("completions", "openai", ("POST",)),
    "/v1/responses": Route("responses", "openai", ("POST",)),
    "/v1/embeddings": Route("embeddings", "openai", ("POST",)),
    "/v1/messages": Route("messages", "anthropic", ("POST",)),
    "/v1/messages/count_tokens": Route("messages.count_tokens", "anthropic", ("POST",)),
    "/v1/models": Route("models", "openai", ("GET",)),
    "/healthz": Route("healthz", "openai", ("GET",)),
    "/readyz": Route("readyz", "openai", ("GET",)),
    "/metrics": Route("metrics", "openai", ("GET",)),
}
_REQUEST_PATH = re.compile(r"^/v1/tokenops/requests/([A-Za-z0-9_\-]{1,100})$")
_RESPONSE_PATH = re.compile(r"^/v1/responses/([A-Za-z0-9_\-]{1,200})(/cancel|/input_items)?$")
_MODEL_PATH = re.compile(r"^/v1/models/(.{1,256})$")
_GEMINI_PATH = re.compile(r"^/v1(?:beta)?/models/([^:]{1,256}):([A-Za-z]+)$")  # google-genai 3.x calls /v1
GEMINI_ROUTES = {"generateContent": "gemini.generate", "streamGenerateContent": "gemini.stream",
                 "countTokens": "gemini.count_tokens", "embedContent": "gemini.embed",
                 "batchEmbedContents": "gemini.batch_embed"}  # fmt: skip
METERED = ("chat.completions", "completions", "embeddings", "messages", "responses", "gemini.generate", "gemini.stream",
           "gemini.embed", "gemini.batch_embed")


def build_stages(keys: KeyCache, config: Config, engine: PolicyEngine, router: RouterStage,
                 cache: CacheStage) -> list[Stage]:  # fmt: skip
    """The pipeline before the upstream, in order (see :mod:`tokenops.gateway.stages`): the key first (nothing
    is read for an unknown caller), the body's validation, the tags, the router (so that the policy reads the
    provider, model and price it resolved), the policy, then the response cache."""
    return [
        KeyStage(keys),
        ValidateStage(config.gateway.max_body_bytes),
        TagStage(config.tagging.policy()),
        router,
        PolicyStage([engine]),
        cache,
    ]


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        catalog: PriceCatalog | None = None,
        ledger: Ledger | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
        admin: Callable[[Gateway], ASGIApp] | None = None,
        state: PolicyState | None = None,
    ):
        self.config = config
        self.clock = clock or (lambda: datetime.now(UTC))
        self.catalog = catalog or load_catalog(tuple(e.to_row(config.source) for e in config.prices))
        self.ledger = ledger or open_ledger(config.ledger, config.base_dir)
        self.definitions = Definitions.of(self.ledger, config)
        self.spool_dir = config.spool_path()
        known = {a.name for a in config.models} | {a.model for a in config.models} | {e.model for e in config.prices}
        self.metrics = GatewayMetrics(known, self._row_model, metrics_dir())
        self.keys = KeyCache(self.ledger.list_keys)
        self.router = RouterStage(config, self.catalog)
        self.breakers = Breakers(config.routing.breaker.failures, config.routing.breaker.cooldown)
        self.router.healthy = self.breakers.healthy
        self.state = state or open_state(config.state, config.state_options)
        self.engine = PolicyEngine(
            budgets=config.budgets, limits=config.limits, rules=config.rules, defaults=config.policy,
            price_of=self.router.quote, resolve=self.router.upstream_name, reroute=self.router.route,
            approvals=Approvals(state=self.state), clock=self.clock,
            state=self.state, reservation_ttl=config.state_options.reservation_ttl, seed=self._seed,
            grant_spend=self._grant_spend,
        )  # fmt: skip
        self._ticker: asyncio.Task[None] | None = None
        self.watch: HealthWatch | None = None
        self.governance_fingerprint = governance_fingerprint(config)
        self.config_mismatch: str | None = None  # another gateway's fingerprint, while they differ
        self.tick_errors: dict[str, str] = {}  # a tick step (keys, policy, …) -> its error, while it keeps failing
        self.cache = CacheStage(config.cache)  # its store opens with the gateway (start)
        self.stages = build_stages(self.keys, config, self.engine, self.router, self.cache)
        self.key_stage = next(stage for stage in self.stages if isinstance(stage, KeyStage))  # for other routes
        self.dispatcher: AlertDispatcher | None = None
        self._admin_factory = admin
        self._admin: ASGIApp | None = None  # the admin API, built on first use (FastAPI is slow to import)
        self.adapters: dict[str, Adapter] = {}
        timeouts: dict[str, tuple[float, float]] = {}
        for name, p in config.providers.items():
            adapter_cls = ADAPTERS[config.provider_kind(name)]
            self.adapters[name] = adapter_cls(p.base_url, p.api_key.get_secret_value() if p.api_key else None, dict(p.headers))
            timeouts[name] = (p.timeout.connect, p.timeout.read)
        self._transport = transport
        self._timeouts = timeouts
        self.client: UpstreamClient | None = None
        self.spool: Spool | None = None
        self.meter: Meter | None = None
        self.upstream: Upstream | None = None
        self.writer: LedgerWriter | None = None
        self.background: BackgroundResponses | None = None
        self.anomalies: AnomalyRounds | None = None  # the anomaly watch's rounds (gateway.anomalies)
        self.batches: BatchBook | None = None  # /v1/files, /v1/batches, /v1/messages/batches (gateway.batches)
        self.batch_routes: BatchRoutes | None = None
        self.side = SideRoutes(self)  # models, stored responses, token counts, a recorded call
        self.started = False

    # --- lifecycle ------------------------------------------------------------------------------
    def _row_model(self, row_id: str) -> str | None:
        row = self.catalog.get(row_id)
        return row.model if row is not None else None

    async def _seed(self, budget: BudgetConfig, w: Window) -> Decimal:
        return await asyncio.to_thread(self.ledger.spent, budget.scope, w.start, w.end, budget.unit)

    async def _grant_spend(self, approval_id: str) -> Decimal:
        return (await asyncio.to_thread(self.ledger.approval_spend)).get(approval_id, Decimal(0))

    def _read_policy(self) -> tuple[Any, ...]:
        d = self.definitions
        return d.stored("budget"), d.stored("rule"), d.stored("limit"), self.ledger.approvals(), \
            self.ledger.approval_spend()  # fmt: skip

    async def reload_policy(self) -> None:
        """Budgets, limits and rules defined at run time and approval decisions, from the ledger (every
        ``gateway.key_refresh`` s; at once after a change through this gateway's admin API)."""
        budgets, rules, limits, approvals, spend = await asyncio.to_thread(self._read_policy)
        await self.engine.set_budgets(budgets, self._seed)
        self.engine.set_rules(rules)
        self.engine.set_limits(limits)
        await self.engine.approvals.load(approvals, spend)

    async def _load_state(self) -> None:
        # What a previous process left in the spool counts towards budgets: drain it before seeding counters.
        await asyncio.to_thread(self.drain_now)
        await asyncio.to_thread(self.keys.reload)
        try:
            await self.reload_policy()
            await self.engine.seed_all(self._seed)
            await self.compare_configs()
        except StateSchemaMismatch:
            raise  # another version's keys under this prefix: never serve on them
        except StateUnavailable as exc:  # the first calls that need them seed the counters
            log.warning("starting without the shared state: %s", exc)
        earliest = min((self.engine.window(b, self.clock()).start for b in self.engine.budgets.values()), default=None)
        if earliest is not None and self.engine.alerts is not None:
            self.engine.alerts.load(await asyncio.to_thread(self.ledger.fired_alerts, earliest))

    async def compare_configs(self) -> None:
        """Gateways sharing a state should enforce the same budgets, limits and rules from their configs: they
        count on the same counters. Each claims the name ``config`` with its config's fingerprint for a few
        ticks; a gateway that finds another fingerprint there says so (log, /readyz warning) until they agree.
        A rolling deploy shows the warning while old and new configs both run."""
        ttl = max(10.0, 3 * self.config.gateway.key_refresh)
        holder = await self.state.claim("config", self.governance_fingerprint, ttl)
        other = None if holder == self.governance_fingerprint else holder
        if other is not None and other != self.config_mismatch:
            log.warning("another gateway sharing this state runs other budgets, limits or rules in its config "
                        "(fingerprint %s, this one %s)", other, self.governance_fingerprint)  # fmt: skip
        self.config_mismatch = other

    def drain_now(self) -> int:
        """Move the spool into the ledger now (so a read sees calls answered a moment ago); blocking."""
        return self.ledger.drain(self.spool_dir, self.catalog.get)

    def is_admin_key(self, key: str | None) -> bool:
        admin = self.config.admin_key
        return bool(key and admin and hmac.compare_digest(key.encode(), admin.get_secret_value().encode()))

    def _tick_io(self) -> None:
        if self.spool is not None:
            self.spool.heal()  # a deleted spool folder is made again within a tick, traffic or not
        self.keys.reload()

    async def _tick_forever(self) -> None:
        """Every ``gateway.key_refresh`` s: heal the spool, reload keys and policy, prune memory, watch health.
        Each step on its own: one that fails (a bug too) neither stops the others nor the next tick; while it keeps
        failing, ``/readyz`` warns about it and the log has its traceback once (again when the error changes)."""
        while True:
            await asyncio.sleep(self.config.gateway.key_refresh)
            await self._tick_step("health", self._watch_health)  # first: a part that went down is alerted at once
            failed = await self._tick_step("keys", lambda: asyncio.to_thread(self._tick_io))
            if not isinstance(failed, LedgerError):  # an unreachable ledger: one connect timeout a tick is enough
                await self._tick_step("policy", self.reload_policy)
            await self._tick_step("prune", self._prune)
            await self._tick_step("configs", self.compare_configs)

    async def _prune(self) -> None:
        self.engine.prune()

    async def _watch_health(self) -> None:
        if self.watch is not None:
            await self.watch.update(await health.check(self.spool, self.spool_dir, self.state, self.writer,
                                                       self.ledger))  # fmt: skip

    async def _tick_step(self, name: str, step: Callable[[], Awaitable[Any]]) -> Exception | None:
        """Run one step of the tick; the error it failed with, if it did."""
        try:
            await step()
        except LedgerBusy as exc:
            return exc  # another process has the ledger's turn: next tick
        except Exception as exc:  # LedgerError, StateUnavailable (expected while a part is down), or a bug
            said = f"{type(exc).__name__}: {exc}"
            if self.tick_errors.get(name) != said:
                if isinstance(exc, (LedgerError, StateUnavailable)):
                    log.warning("gateway tick (%s): %s", name, exc)
                else:
                    log.exception("gateway tick (%s) failed", name)
            self.tick_errors[name] = said
            return exc
        if self.tick_errors.pop(name, None) is not None:
            log.warning("gateway tick (%s): working again", name)
        return None

    async def start(self) -> None:
        if self.started:
            return
        self.dispatcher = AlertDispatcher(build_channels(self.config.alerts), recorder=_log_delivery,
                                          queue_size=self.config.alerts.queue_size)  # fmt: skip
        self.engine.alerts = BudgetAlerts(self.dispatcher.submit, None, self.state)
        self.watch = HealthWatch(self.dispatcher.submit, self.state, self.clock)
        await self._load_state()
        self.client = make_client(self._transport)  # aiohttp, unless a test injected an httpx transport
        self.spool = Spool(self.spool_dir, fsync=self.config.gateway.durability == "fsync")
        self.engine.alerts.record = self.spool.append_record
        self.engine.approvals.record = self.spool.append_record
        self.cache.store, self.cache.semantic = open_cache(self.config)
        self.dispatcher.start()
        self.meter = Meter(self.spool, self.catalog, self.metrics)
        self.meter.listeners.append(self.engine.settle)
        if self.config.gateway.call_log:
            call_log.enable()
            self.meter.listeners.append(call_log.log_call)
        self.upstream = Upstream(self.client, self.adapters, self._timeouts, self.meter)
        self.upstream.breakers, self.upstream.router = self.breakers, self.router
        self.upstream.backoff = self.config.routing.backoff
        self.background = BackgroundResponses(self.spool_dir / "background", self.client, self.adapters,
                                              self._timeouts, self.meter, self.config.gateway.background_poll)  # fmt: skip
        self.upstream.background = self.background
        resumed = await asyncio.to_thread(self.background.load)
        if resumed:
            log.info("checking %d background responses left running by an earlier process", resumed)
        self.background.start()
        self.batches = BatchBook(self.spool_dir / "batches", self.client, self.adapters, self._timeouts, self.meter,
                                 self.config.gateway.background_poll, self.engine.settle)  # fmt: skip
        self.batch_routes = BatchRoutes(self, self.batches)
        if resumed := await asyncio.to_thread(self.batches.load):
            log.info("checking %d batches left running by an earlier process", resumed)
        self.batches.start()
        if self.config.anomalies.enabled:
            self.anomalies = AnomalyRounds(
                self.ledger, self.config.anomalies, self.state, self.dispatcher.submit, self.spool.append_record,
                self.clock, count=lambda a: self.metrics.anomalies.labels(a.signal, a.severity).inc(),
                state_file=self.spool_dir / ANOMALY_STATE)
            self.anomalies.start()
        self.writer = LedgerWriter(
            self.ledger,
            self.spool_dir,
            price_rows=self.catalog.get,
            interval=self.config.gateway.writer_interval,
            mode=self.config.gateway.writer,
        )
        self.writer.start()
        self._ticker = asyncio.create_task(self._tick_forever(), name="tokenops-tick")
        self.started = True

    async def close(self) -> None:
        if not self.started:
            return
        self.started = False
        assert self.client and self.spool and self.writer
        if self._ticker is not None:
            ticker, self._ticker = self._ticker, None
            await stop_task(ticker)
        if self.background is not None:
            await self.background.close()
        if self.batches is not None:
            await self.batches.close()
        if self.anomalies is not None:
            await self.anomalies.close()
        await self.client.aclose()
        if self.dispatcher is not None:
            await self.dispatcher.close()
        self.spool.close()  # first, so the final drain sees the segment as finished and can remove it
        await asyncio.to_thread(self.writer.stop)
        await self.state.close()
        if self.cache.store is not None:
            await self.cache.store.close()
        await asyncio.to_thread(self.ledger.close)  # a database's connection pool (opened again if used later)

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
                except (LedgerError, StateSchemaMismatch) as exc:
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
        if method == "HEAD":  # as GET without the body (RFC 9110): health checks and uptime monitors send it
            scope, send = {**scope, "method": "GET"}, _headless(send)
            method = "GET"
        if path.startswith("/v1/admin") or path == "/openapi.json":
            await self.admin_api(scope, receive, send)
            return
        route = ROUTES.get(path)
        flavor = "anthropic" if path.startswith("/v1/messages") else "openai"
        if route is None and (path.startswith("/v1beta/") or (":" in path and _GEMINI_PATH.match(path))):
            if method == "GET" and path == "/v1beta/models":
                await self.side.models(scope, send)
            elif method == "GET" and path.startswith("/v1beta/models/") and ":" not in path:
                await self.side.model(scope, send, path[len("/v1beta/models/"):])
            else:
                await self._gemini(scope, receive, send)
            return
        if route is None:
            if self.batch_routes is not None and await self.batch_routes(scope, receive, send):
                return
            r = _RESPONSE_PATH.match(path)
            if r:
                await self.side.response_resource(scope, send, r.group(1), r.group(2) or "")
                return
            mp = _MODEL_PATH.match(path)
            if mp and method == "GET":
                await self.side.model(scope, send, mp.group(1))
                return
            m = _REQUEST_PATH.match(path)
            if m and method == "GET":
                await self.side.get_request(scope, m.group(1), send)
                return
            status, code = (405, "method_not_allowed") if m else (404, "not_found")
            err = GatewayError(status, code, f"{'method ' + method + ' not allowed on' if m else 'no route'} {path}")
            await self._send_error(send, err, flavor, {"allow": "GET"} if m else {})
            return
        if method not in route.methods:
            err = GatewayError(405, "method_not_allowed", f"method {method} not allowed on {path}")
            await self._send_error(send, err, route.flavor, {"allow": ", ".join(route.methods)})
            return
        if route.name in METERED:
            await self._handle_call(scope, receive, send, route)
        elif route.name == "messages.count_tokens":
            await self.side.count_tokens(scope, receive, send, "anthropic", route.name)
        elif route.name == "models":
            await self.side.models(scope, send)
        elif route.name == "healthz":
            await send_json(send, 200, {"status": "ok"})
        elif route.name == "readyz":
            await self._readyz(scope, send)
        elif route.name == "metrics":
            await self._metrics(scope, send)

    async def _metrics(self, scope: Scope, send: Send) -> None:
        """Prometheus metrics; with ``gateway.metrics_key`` set, only for that key (or the admin key)."""
        required = self.config.gateway.metrics_key
        if required is not None:
            key = presented_key(header_dict(scope))
            if not (key and (hmac.compare_digest(key.encode(), required.get_secret_value().encode())
                             or self.is_admin_key(key))):  # fmt: skip
                err = GatewayError(401, "invalid_api_key", "/metrics needs the metrics key (Authorization: Bearer …)")
                await self._send_error(send, err, "openai", {"www-authenticate": "Bearer"})
                return
        if self.spool is not None:
            self.metrics.spool_healthy.set(1 if self.spool.healthy else 0)
            self.metrics.spool_deferred.set(self.spool.deferred)
        if self.writer is not None:
            self.metrics.writer_restarts.set(self.writer.restarts)
        await send_bytes(send, 200, self.metrics.render(), {}, "text/plain; version=0.0.4; charset=utf-8")

    async def admin_api(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The admin API under /v1/admin (and its /openapi.json), when this gateway was given one."""
        if self._admin is None and self._admin_factory is not None:
            self._admin = self._admin_factory(self)
        if self._admin is None:
            await self._send_error(send, GatewayError(404, "not_found", f"no route {scope['path']}"), "openai")
            return
        await self._admin(scope, receive, send)

    async def _send_error(
        self, send: Send, err: GatewayError, flavor: str, headers: dict[str, str] | None = None
    ) -> None:
        await send_bytes(send, err.status, error_body(err, flavor),
                         {**retry_headers(err), **err.headers, **(headers or {})})  # fmt: skip

    async def _gemini(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/v1beta/models/{model}:{method}`` (and ``/v1/…``, which google-genai 3.x calls): Gemini's routes, the
        model in the path. Either goes upstream as ``/v1beta``, which takes every ``v1`` request."""
        g = _GEMINI_PATH.match(scope["path"])
        name = GEMINI_ROUTES.get(g.group(2)) if g else None
        if g is None or name is None:
            await self._send_error(send, GatewayError(404, "not_found", f"no route {scope['path']}"), "gemini")
            return
        if scope["method"] != "POST":
            err = GatewayError(405, "method_not_allowed", f"method {scope['method']} not allowed on {scope['path']}")
            await self._send_error(send, err, "gemini", {"allow": "POST"})
            return
        from urllib.parse import unquote

        model = unquote(g.group(1))
        if name == "gemini.count_tokens":
            await self.side.count_tokens(scope, receive, send, "gemini", name, model)
        else:
            await self._handle_call(scope, receive, send, Route(name, "gemini", ("POST",)), model)

    async def _handle_call(self, scope: Scope, receive: Receive, send: Send, route: Route,
                           path_model: str | None = None) -> None:  # fmt: skip
        call = Call(
            request_id=new_request_id(),
            route=route.name,
            flavor=route.flavor,
            started=time.perf_counter(),
            ts=self.clock(),
            headers=header_dict(scope),
            query=scope.get("query_string", b"").decode("latin-1"),
            receive=receive,
            path_model=path_model,
        )
        response_started = False
        kept: dict[str, Any] = {"status": 0, "type": "", "body": [], "size": 0}  # what a cache miss may keep

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal response_started
            response_started = True
            if call.cache_keys is not None:
                if message["type"] == "http.response.start":
                    kept["status"] = message["status"]
                    kept["type"] = next((v.decode("latin-1") for k, v in message.get("headers", ())
                                         if k.lower() == b"content-type"), "application/json")  # fmt: skip
                elif kept["size"] <= self.config.cache.max_entry_bytes:
                    chunk = message.get("body", b"")
                    kept["body"].append(chunk)
                    kept["size"] += len(chunk)
            await send(message)

        try:
            for stage in self.stages:
                answer = await stage(call)
                if answer is not None:
                    await self._answer(call, answer, tracking_send)
                    return
            assert self.upstream is not None, "Gateway.start() was not called"
            await self.upstream.forward(call, receive, tracking_send)
            if call.cache_keys is not None:
                await self.cache.keep(call, call.recorded, kept["status"], kept["type"], b"".join(kept["body"]))
        except ConnectionAbortedError:
            return
        except StateUnavailable as exc:  # the shared state (Redis) is down and this call needs it (fail_closed)
            down = GatewayError(503, "state_unavailable", f"TokenOps cannot check this call's budgets and limits "
                                f"right now ({exc}); try again shortly", headers={"retry-after": "5"})  # fmt: skip
            if not response_started:
                await self._reject(call, down, send)
        except GatewayError as err:
            if response_started:
                log.error("call %s failed after its response started: %s", call.request_id, err)
                return
            await self._reject(call, err, send)
        except Exception:  # a bug: log it with its traceback, answer 500 in the route's shape, never a traceback
            log.exception("internal error in call %s", call.request_id)
            if not response_started:
                bug = GatewayError(500, "internal_error", f"internal gateway error (request {call.request_id})")
                await self._reject(call, bug, send)
        finally:
            try:
                await self.engine.release(call)  # a no-op when the meter settled the call, as it normally does
            except StateUnavailable as exc:  # the reservation lapses by itself (state_options.reservation_ttl)
                log.warning("call %s: reservation not released: %s", call.request_id, exc)

    async def _answer(self, call: Call, answer: Answer, send: Send) -> None:
        """Send a stage's answer (a cache hit) in place of the provider's, recorded once as its outcome."""
        assert self.meter is not None, "Gateway.start() was not called"
        event = await self.meter.record(call, status=answer.outcome, http_status=answer.status, **answer.fields)
        headers = {**answer.headers, "content-length": str(len(answer.body)), **call_headers(call, event)}
        await send({"type": "http.response.start", "status": answer.status, "headers": encode_headers(headers)})
        await send({"type": "http.response.body", "body": answer.body})

    async def _reject(self, call: Call, err: GatewayError, send: Send) -> None:
        """Answer a call with an error in its route's shape, recording it once (a call refused before any
        provider saw it costs nothing; one that failed after carries the cost it was recorded with)."""
        event = call.recorded
        if event is None and call.key is not None and self.meter is not None and not isinstance(err, SpoolUnavailable):
            status = "error" if isinstance(err, UpstreamError) or err.status >= 500 else "rejected"
            try:
                event = await self.meter.record(call, status=status, http_status=err.status, error_code=err.code)
            except SpoolUnavailable:
                event = call.recorded  # kept for the spool to write later; the client still gets this error
        self.metrics.rejected.labels(err.code).inc()
        headers = call_headers(call, event)
        if event is None:
            headers["x-tokenops-cost-usd"] = "0.00"  # refused before any provider saw it
            if self.config.gateway.call_log:
                call_log.log_refused(call, err.status, err.code)
        await self._send_error(send, err, call.flavor, headers)

    async def _authorize(self, scope: Scope, flavor: str, send: Send) -> str | None:
        """The caller's key id ("admin" for the admin key), or None after answering 401."""
        headers = header_dict(scope)
        key = presented_key(headers, scope.get("query_string", b"").decode("latin-1"))
        if self.is_admin_key(key):
            return "admin"
        record = await self.keys.lookup(key) if key else None
        if record is None or not record.active:
            await self._send_error(send, GatewayError(401, "invalid_api_key", "a valid TokenOps key is required"), flavor)
            return None
        return record.id

    async def _readyz(self, scope: Scope, send: Send) -> None:
        """Ready when every answered call can be recorded and will reach the ledger: the spool takes writes (and
        owes none), the writer drains (its process alive, its last round successful and recent), and the ledger
        opens (one busy with another process's turn is reachable: the spool holds events until it is free).

        ``?challenge=NONCE`` adds ``identity``: an HMAC of the nonce under this ledger's secret, so that a CLI
        that shares the ledger can check it talks to this ledger's gateway before it sends the admin key."""
        report = await health.check(self.spool, self.spool_dir, self.state, self.writer, self.ledger)
        problems = (["gateway not started"] if not self.started else []) + report.flat()
        warnings = report.warnings
        warnings += [f"gateway tick ({step}) failing: {said}" for step, said in self.tick_errors.items()]
        if self.config_mismatch is not None:
            warnings.append(f"another gateway sharing this state runs different budgets, limits or rules in its "
                            f"config (fingerprint {self.config_mismatch}; this one {self.governance_fingerprint}): "
                            "each enforces its own on the shared counters")  # fmt: skip
        body: dict[str, Any] = {
            "status": "ready" if not problems else "unavailable", "problems": problems, "warnings": warnings,
            "spool": describe_spool(self.spool, self.spool_dir),
            "writer": {"mode": self.config.gateway.writer, "restarts": self.writer.restarts if self.writer else 0},
        }  # fmt: skip
        challenge = _query(scope).get("challenge")
        if challenge and len(challenge) <= 200:
            try:
                secret = await asyncio.to_thread(self.ledger.identity_secret)
            except LedgerError:
                secret = None
            if secret is not None:
                body["identity"] = identity_proof(secret, challenge)
        await send_bytes(send, 200 if not problems else 503, orjson.dumps(body), {})



def open_cache(config: Config) -> tuple[CacheStore | None, Any]:
    """The response cache's store (None: off) and, in semantic mode, its similarity index."""
    c = config.cache
    if c.mode == "off":
        return None, None
    store: CacheStore
    if c.store == "redis" or (c.store == "auto" and config.state != "memory"):
        store = RedisStore(config.state, prefix=config.state_options.prefix + ":", timeout=config.state_options.timeout)
    else:
        store = MemoryStore(c.max_entries)
    semantic: Any = None
    if c.mode == "semantic":
        from tokenops.optimize.semantic import RedisSemanticIndex, SemanticIndex

        semantic = RedisSemanticIndex(store, c.threshold) if isinstance(store, RedisStore) \
            else SemanticIndex(threshold=c.threshold)  # fmt: skip
        semantic.scorer.embedder.load()  # the model now: a missing extra or a bad model file is an error at start
    return store, semantic


def governance_fingerprint(config: Config) -> str:
    """What gateways sharing a state must agree on: the budgets, limits and rules of their config files."""
    what = [[m.model_dump(mode="json") for m in part] for part in (config.budgets, config.limits, config.rules)]
    return hashlib.sha256(orjson.dumps(what, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def _query(scope: Scope) -> dict[str, str]:
    from urllib.parse import parse_qsl

    raw = scope.get("query_string", b"")
    return dict(parse_qsl(raw.decode("latin-1"))) if raw else {}


def _log_delivery(alert: Any, channel: str, error: str | None) -> None:
    if error:
        log.warning("alert %s (%s) not delivered to %s: %s", alert.id, alert.budget, channel, error)


__all__ = ["Gateway", "encode_headers"]


def _headless(send: Send) -> Send:
    """``send`` for a HEAD request: the GET answer's status and headers (its content-length too), no body."""

    async def headless(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return headless
