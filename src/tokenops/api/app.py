"""The admin REST API, mounted in the gateway under ``/v1/admin`` (OpenAPI document at ``/openapi.json``).

It needs the config's ``admin_key`` (``Authorization: Bearer …`` or ``x-api-key``); an active client key gets
403, no key or any other key 401. An address that fails to log in 10 times within 60 seconds gets 429 until
that window has passed (:class:`LoginThrottle`). Changes take effect in this gateway at once (other gateways
on the same ledger within their refresh interval). Errors use the OpenAI error shape:
``{"error": {"type", "code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import getpass
import math
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from tokenops.api.models import (
    AlertList,
    ApprovalList,
    ApprovalOut,
    ApproveIn,
    BudgetIn,
    BudgetList,
    BudgetStatus,
    ErrorOut,
    KeyCreated,
    KeyIn,
    KeyOut,
    LimitIn,
    PolicyList,
    RuleIn,
    SpendReportOut,
)
from tokenops.errors import ConflictError, LedgerBusy, LedgerError, NotFoundError, TokenOpsError, UsageError
from tokenops.gateway.stages.auth import presented_key
from tokenops.money import format_usd, usd_setting
from tokenops.policy.definitions import Kind
from tokenops.services import approvals, keys, reports
from tokenops.tags import TagError, parse_tags
from tokenops.timespec import parse_time, parse_window

if TYPE_CHECKING:
    from tokenops.gateway.app import Gateway

PREFIX = "/v1/admin"
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in ((400, "Bad input"), (401, "No or unknown key"), (403, "Not the admin key"),
                         (404, "Not found"), (409, "Conflicts with the config file"),
                         (429, "Too many failed logins from this address"), (503, "Ledger busy"))
}  # fmt: skip


class AdminError(TokenOpsError):
    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None):
        self.status, self.code, self.headers = status, code, headers
        super().__init__(message)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 409: "conflict_error", 429: "rate_limit_error"}.get(status, "api_error")  # fmt: skip
    return JSONResponse({"error": {"type": kind, "code": code, "message": message}}, status_code=status,
                        headers=headers)  # fmt: skip


class LoginThrottle:
    """Failed admin logins per client address, so that the admin key cannot be guessed at speed.

    After ``limit`` failures within ``window`` seconds an address is refused (even with the right key) until
    the oldest of them is ``window`` seconds old; refused attempts are not counted, so a blocked address is
    free again after at most ``window`` seconds. Memory is bounded: each address keeps its last ``limit``
    failure times, and past ``max_addresses`` addresses the least recently failing ones are forgotten (an
    attacker with that many addresses gets ``limit`` tries from each of them, no more per address at a time).
    ``clock`` gives seconds. Thread-safe: FastAPI runs the auth dependency in its thread pool.

        >>> t = LoginThrottle(limit=2, window=60, clock=lambda: 0.0)
        >>> t.failed("10.0.0.1"); t.failed("10.0.0.1"); t.retry_after("10.0.0.1")
        60.0
    """

    def __init__(self, *, limit: int = 10, window: float = 60.0, max_addresses: int = 10_000,
                 clock: Callable[[], float]):  # fmt: skip
        self.limit, self.window, self.max_addresses, self.clock = limit, window, max_addresses, clock
        self._failures: OrderedDict[str | None, deque[float]] = OrderedDict()  # least recently failing first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, address: str | None) -> float | None:
        """Seconds until ``address`` may try again, or None when it is not held."""
        with self._lock:
            times = self._failures.get(address)
            if times is None or len(times) < self.limit:
                return None
            wait = times[0] + self.window - self.clock()
            return wait if wait > 0 else None

    def failed(self, address: str | None) -> None:
        now = self.clock()
        with self._lock:
            times = self._failures.pop(address, None) or deque(maxlen=self.limit)
            times.append(now)
            self._failures[address] = times
            for stale, stale_times in list(self._failures.items()):  # oldest first: stop at the first recent one
                if stale_times[-1] > now - self.window:
                    break
                del self._failures[stale]
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)

    def succeeded(self, address: str | None) -> None:
        with self._lock:
            self._failures.pop(address, None)


def _admin(request: Request) -> None:
    """The admin key, compared in constant time; an active client key is told it is the wrong kind of key, a
    revoked one gets the answer of an unknown key (so it reveals nothing). Failures are counted per address."""
    gw: Gateway = request.app.state.gateway
    throttle: LoginThrottle = request.app.state.login_throttle
    address = request.client.host if request.client else None
    wait = throttle.retry_after(address)
    if wait is not None:
        raise AdminError(429, "too_many_failed_logins", f"too many failed admin logins from this address: try "
                         f"again in {math.ceil(wait)} s", headers={"Retry-After": str(math.ceil(wait))})  # fmt: skip
    presented = presented_key({k.lower(): v for k, v in request.headers.items()})
    if presented is not None and gw.is_admin_key(presented):
        throttle.succeeded(address)
        return
    throttle.failed(address)
    if presented is None:
        raise AdminError(401, "missing_api_key", "the admin API needs the admin key (Authorization: Bearer …)")
    record = gw.keys.get(presented)
    if record is not None and record.active:
        raise AdminError(403, "admin_key_required", "a client key cannot use the admin API")
    if gw.config.admin_key is None:
        raise AdminError(403, "admin_api_disabled", "the admin API is disabled: set admin_key in the config")
    raise AdminError(401, "invalid_api_key", "unknown key")


Admin = Annotated[None, Depends(_admin)]


def create_admin_api(gw: Gateway) -> FastAPI:
    api = FastAPI(
        title="TokenOps admin API",
        version="1",
        description="Keys, budgets, limits, rules, approvals, alerts and spend queries of a TokenOps gateway.",
        responses=ERRORS,
        docs_url="/v1/admin/docs",
        redoc_url=None,
    )
    api.state.gateway = gw
    api.state.login_throttle = LoginThrottle(clock=lambda: gw.clock().timestamp())

    @api.exception_handler(AdminError)
    async def _admin_error(request: Request, exc: AdminError) -> JSONResponse:
        return _error(exc.status, exc.code, str(exc), exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422, but Python's JSON parser reads NaN, Infinity and 1e400 (as inf), which the errors
        # echo as their input and JSON cannot carry: they are written as strings instead (and lone surrogates,
        # which UTF-8 cannot carry, as "?").
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @api.exception_handler(UsageError)
    async def _usage_error(request: Request, exc: UsageError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError) else 400
        return _error(status, exc.code, api_words(str(exc), _query_names(request)))

    @api.exception_handler(LedgerError)
    async def _ledger_error(request: Request, exc: LedgerError) -> JSONResponse:
        return _error(503, "ledger_busy" if isinstance(exc, LedgerBusy) else "ledger_unavailable", str(exc))

    # --- keys ------------------------------------------------------------------------------------
    @api.get(f"{PREFIX}/keys", response_model=list[KeyOut], tags=["keys"])
    def list_keys(_: Admin) -> list[dict[str, Any]]:
        return [k.public() for k in gw.ledger.list_keys()]

    @api.post(f"{PREFIX}/keys", response_model=KeyCreated, status_code=201, tags=["keys"])
    def create_key(body: KeyIn, _: Admin) -> dict[str, Any]:
        rec, key = keys.create_key(gw.ledger, body.name, body.tags, body.lock, end_user=body.end_user)
        gw.keys.put(rec)
        return {"id": rec.id, "key": key, "name": rec.name, "tags": rec.tags, "end_user": rec.end_user}

    @api.post(f"{PREFIX}/keys/{{key_id}}/revoke", response_model=KeyOut, tags=["keys"])
    def revoke_key(key_id: str, _: Admin) -> dict[str, Any]:
        rec = keys.revoke_key(gw.ledger, key_id)
        gw.keys.reload()
        return rec.public()

    # --- budgets, limits and rules ------------------------------------------------------------------
    async def statuses() -> list[dict[str, Any]]:
        config_names = set(gw.engine.config_budgets)
        return [{**s, "source": "config" if s["name"] in config_names else "api"} for s in await gw.engine.status()]

    def listed(kind: Kind) -> list[dict[str, Any]]:
        config = {r.name for r in gw.definitions.configured(kind)}
        items = gw.engine.rules if kind == "rule" else gw.engine.limiter.limits
        return [{**_public(i), "source": "config" if i.name in config else "api"} for i in items]

    async def put(kind: Kind, name: str, body: dict[str, Any]) -> None:
        await asyncio.to_thread(gw.definitions.put, kind, name, body, "admin-api")
        await gw.reload_policy()

    async def delete(kind: Kind, name: str) -> Response:
        await asyncio.to_thread(gw.definitions.delete, kind, name)
        await gw.reload_policy()
        return Response(status_code=204)

    @api.get(f"{PREFIX}/budgets", response_model=BudgetList, tags=["budgets"])
    async def list_budgets(_: Admin) -> dict[str, Any]:
        return {"budgets": await statuses()}

    @api.put(f"{PREFIX}/budgets/{{name}}", response_model=BudgetStatus, tags=["budgets"])
    async def put_budget(name: str, body: BudgetIn, _: Admin) -> dict[str, Any]:
        await put("budget", name, body.model_dump(exclude_none=True, mode="json"))
        return next(s for s in await statuses() if s["name"] == name)

    @api.delete(f"{PREFIX}/budgets/{{name}}", status_code=204, response_class=Response, tags=["budgets"])
    async def delete_budget(name: str, _: Admin) -> Response:
        return await delete("budget", name)

    @api.get(f"{PREFIX}/limits", response_model=PolicyList, tags=["policy"])
    def list_limits(_: Admin) -> dict[str, Any]:
        return {"items": listed("limit")}

    @api.put(f"{PREFIX}/limits/{{name}}", response_model=dict[str, Any], tags=["policy"])
    async def put_limit(name: str, body: LimitIn, _: Admin) -> dict[str, Any]:
        await put("limit", name, body.model_dump(exclude_none=True, mode="json"))
        return next(i for i in listed("limit") if i["name"] == name)

    @api.delete(f"{PREFIX}/limits/{{name}}", status_code=204, response_class=Response, tags=["policy"])
    async def delete_limit(name: str, _: Admin) -> Response:
        return await delete("limit", name)

    @api.get(f"{PREFIX}/rules", response_model=PolicyList, tags=["policy"])
    def list_rules(_: Admin) -> dict[str, Any]:
        return {"items": listed("rule")}

    @api.put(f"{PREFIX}/rules/{{name}}", response_model=dict[str, Any], tags=["policy"])
    async def put_rule(name: str, body: RuleIn, _: Admin) -> dict[str, Any]:
        await put("rule", name, body.model_dump(exclude_none=True, mode="json"))
        return next(i for i in listed("rule") if i["name"] == name)

    @api.delete(f"{PREFIX}/rules/{{name}}", status_code=204, response_class=Response, tags=["policy"])
    async def delete_rule(name: str, _: Admin) -> Response:
        return await delete("rule", name)

    # --- approvals and alerts --------------------------------------------------------------------
    @api.get(f"{PREFIX}/approvals", response_model=ApprovalList, tags=["approvals"])
    def list_approvals(
        _: Admin,
        status: Annotated[str | None, Query(pattern="^(pending|approved|denied|expired)$")] = None,
    ) -> dict[str, Any]:
        gw.drain_now()
        return {"approvals": [a.to_public() for a in approvals.list_approvals(gw.ledger, status)]}

    async def decide(approval_id: str, approve: bool, body: ApproveIn | None) -> dict[str, Any]:
        await asyncio.to_thread(gw.drain_now)
        cap = None
        if body is not None and body.max_usd is not None:
            try:
                cap = usd_setting(body.max_usd, what="max_usd")
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        decided = await asyncio.to_thread(
            approvals.decide, gw.ledger, approval_id, approve=approve, by=f"admin-api ({getpass.getuser()})",
            until=body.until if body is not None else None, max_usd=cap)  # fmt: skip
        await gw.reload_policy()
        return decided.to_public()

    @api.post(f"{PREFIX}/approvals/{{approval_id}}/approve", response_model=ApprovalOut, tags=["approvals"])
    async def approve(approval_id: str, _: Admin, body: ApproveIn | None = None) -> dict[str, Any]:
        return await decide(approval_id, True, body)

    @api.post(f"{PREFIX}/approvals/{{approval_id}}/deny", response_model=ApprovalOut, tags=["approvals"])
    async def deny(approval_id: str, _: Admin) -> dict[str, Any]:
        return await decide(approval_id, False, None)

    @api.get(f"{PREFIX}/alerts", response_model=AlertList, tags=["alerts"])
    def list_alerts(_: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        gw.drain_now()
        return {"alerts": gw.ledger.alerts(limit)}

    # --- spend -----------------------------------------------------------------------------------
    @api.get(f"{PREFIX}/reports/spend", response_model=SpendReportOut, tags=["reports"])
    def spend(
        _: Admin,
        by: Annotated[str, Query(description="Comma-separated: tag names, model, provider, key, user, day, week, "
                                             "month.", max_length=500)] = "",  # fmt: skip
        since: Annotated[str | None, Query(max_length=64)] = None,
        until: Annotated[str | None, Query(max_length=64)] = None,
        where: Annotated[str, Query(max_length=1000)] = "",
        timezone: Annotated[str, Query(max_length=64)] = "UTC",
    ) -> dict[str, Any]:
        try:
            filters = parse_tags(where, what="where")
        except TagError as exc:
            raise UsageError(str(exc)) from None
        start, end = parse_window(since, until)  # as the CLI's --since/--until (renamed by api_words)
        gw.drain_now()
        report = reports.spend_report(gw.ledger, by=by.split(","), since=start, until=end, where=filters,
                                      timezone=timezone)  # fmt: skip
        return report.to_json()

    # --- analytics -------------------------------------------------------------------------------
    def _scope(scope: str) -> dict[str, str]:
        try:
            return parse_tags(scope, what="scope")
        except TagError as exc:
            raise UsageError(str(exc)) from None

    @api.get(f"{PREFIX}/reports/anomalies", response_model=dict[str, Any], tags=["analytics"])
    def anomalies(
        _: Admin,
        since: Annotated[str | None, Query(max_length=64, description="Default: a day ago.")] = None,
        until: Annotated[str | None, Query(max_length=64)] = None,
        scope: Annotated[str, Query(max_length=1000)] = "",
        signal: Annotated[str | None, Query(max_length=64)] = None,
        severity: Annotated[str | None, Query(max_length=16)] = None,
    ) -> dict[str, Any]:
        """The anomalies the gateway's watch recorded (``tokenops anomalies``)."""
        from datetime import UTC, datetime, timedelta

        from tokenops.services import anomalies as svc

        start, end = parse_time(since, what="since"), parse_time(until, what="until")
        start = start or (end or datetime.now(UTC)) - timedelta(days=1)
        gw.drain_now()
        rows = svc.recorded(gw.ledger, start, end, _scope(scope), signal, severity)
        return _json_safe({"anomalies": rows, "count": len(rows)})

    @api.get(f"{PREFIX}/reports/forecast", response_model=dict[str, Any], tags=["analytics"])
    def forecast(
        _: Admin,
        horizon: Annotated[str, Query(max_length=16, description="90d, 12w, 3m, 1q or days.")] = "30d",
        scope: Annotated[str, Query(max_length=1000)] = "",
    ) -> dict[str, Any]:
        """The scope's daily spend forecast with its interval and suggested budget (``tokenops forecast``)."""
        from tokenops.services import planning

        days = planning.parse_horizon(horizon)
        gw.drain_now()
        return _json_safe(planning.forecast_scope(gw.ledger, gw.config, gw.catalog, _scope(scope), days).to_json())

    @api.get(f"{PREFIX}/reports/variance", response_model=dict[str, Any], tags=["analytics"])
    def variance(
        _: Admin,
        month: Annotated[str, Query(max_length=16, description="2026-10")],
        by: Annotated[str, Query(max_length=500)] = "team",
        timezone: Annotated[str, Query(max_length=64)] = "UTC",
    ) -> dict[str, Any]:
        """Budget vs actual vs forecast with the variance's causes (``tokenops report variance``)."""
        from tokenops.services.variance import variance as review

        gw.drain_now()
        dims = [b.strip() for b in by.split(",") if b.strip()]
        return review(gw.ledger, gw.config, month, by=dims, timezone=timezone).to_json()

    @api.get(f"{PREFIX}/reports/chargeback", response_model=dict[str, Any], tags=["analytics"])
    def chargeback(
        _: Admin,
        month: Annotated[str, Query(max_length=16, description="2026-10")],
        timezone: Annotated[str, Query(max_length=64)] = "UTC",
    ) -> dict[str, Any]:
        """Per-cost-centre statements that sum to the month's bill to the cent (``tokenops report chargeback``)."""
        from tokenops.services.chargeback import chargeback_report

        gw.drain_now()
        return chargeback_report(gw.ledger, gw.config, month, timezone).to_json()

    # --- interchange -----------------------------------------------------------------------------
    catalogs: list[Any] = []  # the FOCUS export's price catalogs (the published one loaded by its first use)

    @api.get(f"{PREFIX}/exports/focus", tags=["exports"], response_class=Response,
             responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
                              "description": "A FOCUS 1.2 file (tokenops export focus)"}})  # fmt: skip
    def focus_export(
        _: Admin,
        since: Annotated[str | None, Query(max_length=64)] = None,
        until: Annotated[str | None, Query(max_length=64)] = None,
        month: Annotated[str | None, Query(max_length=16, description="2026-11: a calendar month, UTC")] = None,
        granularity: Annotated[str, Query(pattern="^(day|hour)$")] = "day",
        format: Annotated[str, Query(pattern="^(csv|parquet)$")] = "csv",  # noqa: A002 (the query's name)
    ) -> Response:
        """The ledger's spend as a FOCUS 1.2 file (``tokenops export focus``). Unpriced calls are not in it: their
        count is in ``X-TokenOps-Unpriced-Calls``; ``X-TokenOps-Billed-Cost`` is the file's BilledCost sum."""
        from tokenops.services import focus

        start, end = focus.month_or_window(month, since, until)  # its messages name options: api_words
        gw.drain_now()
        if not catalogs:
            catalogs.append(focus.Catalogs(configured=gw.catalog))
        export = focus.focus_export(gw.ledger, since=start, until=end, granularity=granularity,
                                    providers=gw.config.providers, catalog_row=catalogs[0].row,
                                    public_row=catalogs[0].public)  # fmt: skip
        kind = "text/csv; charset=utf-8" if format == "csv" else "application/vnd.apache.parquet"
        headers = {"content-disposition": f'attachment; filename="tokenops-focus.{format}"',
                   "x-tokenops-unpriced-calls": str(export.unpriced_calls),
                   "x-tokenops-billed-cost": format_usd(export.billed)}  # fmt: skip
        return Response(focus.focus_bytes(export, format), media_type=kind, headers=headers)

    return api


# a quoted value (the user's own input, echoed) first, so that an option-like text inside it stays as it was
# (a quote opens only where no letter comes just before it: the apostrophe of "can't" opens nothing)
_FLAG = re.compile(r"(?<!\w)'(?:[^'\\]|\\.)*'|(?<!\w)\"(?:[^\"\\]|\\.)*\"|(?<![\w-])--([a-z][a-z0-9-]*)")


def api_words(message: str, params: set[str]) -> str:
    """A service's message, which names CLI options (``--signal must be …``), in the API's words: an option that
    is a query parameter of the route is named as that parameter (``signal must be …``); any other (a hint such as
    ``tokenops prices list --unpriced``) is a command to run and stays as it is."""
    return _FLAG.sub(lambda m: name if m[1] and (name := m[1].replace("-", "_")) in params else m[0], message)


def _query_names(request: Request) -> set[str]:
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    return {p.alias for p in getattr(dependant, "query_params", ())}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):  # a lone surrogate (from a \\udXXX escape) cannot be written as UTF-8
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _public(model: Any) -> dict[str, Any]:
    data = model.model_dump(mode="json")
    data.update({name: format(value, "f") for name, value in model if isinstance(value, Decimal)})  # not 1E-12
    if "scope" in data:
        data["scope"] = model.scope.as_dict()
    return data
