"""The preamble every fake route runs: read, record, authenticate, read controls, wait, fail on request.

Order matters and mirrors the real providers: a request is recorded even when it is then refused (tests assert
on what the gateway sent, failures included), authentication is checked before the body is judged, and a
requested delay happens before a requested error, so a slow failure can be simulated.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .controls import ControlError, Controls, parse_controls
from .wire import Dialect, error_response

_MALFORMED = {
    "gemini": "Invalid JSON payload received.",
    "openai": "We could not parse the JSON body of your request. The API expects a JSON payload.",
    "anthropic": "There was an error parsing the body of your request: expected a JSON object.",
}


@dataclass(frozen=True, slots=True)
class Exchange:
    """A request that passed the preamble: its JSON object body, its controls and the response headers."""

    body: dict[str, Any]
    controls: Controls
    headers: dict[str, str]


def _authorized(headers: dict[str, str], api_key: str) -> bool:
    offered = headers.get("x-api-key") or headers.get("x-goog-api-key")
    if offered is None:
        authorization = headers.get("authorization", "")
        offered = authorization[7:] if authorization[:7].lower() == "bearer " else ""
    return hmac.compare_digest(offered.encode(), api_key.encode())


async def begin(request: Request, dialect: Dialect, *, needs_body: bool = True) -> Exchange | Response:
    """Run the preamble; a :class:`Response` return value is the (error) answer to send as is.

    ``needs_body=False`` is for bodiless GETs, which can still be steered by ``x-fake-*`` headers.
    """
    raw = await request.body() if needs_body else b""
    malformed = False
    body: Any = None
    if raw:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            malformed = True
    scope = request.scope
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    state = request.app.state
    state.received.append({"method": scope["method"], "path": scope["path"], "headers": headers, "body": body,
                           "query": scope.get("query_string", b"").decode("latin-1")})  # fmt: skip
    api_key = state.api_key
    query_key = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get("key", "")
    if api_key is not None and not _authorized(headers, api_key) \
            and not hmac.compare_digest(query_key.encode(), api_key.encode()):  # Gemini's ?key=
        return error_response(dialect, 401)
    if needs_body and (malformed or not isinstance(body, dict)):
        return error_response(dialect, 400, _MALFORMED[dialect.name])
    try:
        controls = parse_controls(body, headers)
    except ControlError as exc:
        return error_response(dialect, 400, str(exc), param="fake")
    if controls.delay_ms:
        await asyncio.sleep(controls.delay_ms / 1000)
    model = body.get("model") if isinstance(body, dict) else None
    only = controls.status_models
    if controls.status is not None and controls.status >= 400 and (
            only is None or model in [m.strip() for m in only.split(",")]):  # fmt: skip
        return error_response(dialect, controls.status, retry_after=controls.retry_after)
    return Exchange(body if isinstance(body, dict) else {}, controls, {dialect.request_id_header: dialect.request_id()})
