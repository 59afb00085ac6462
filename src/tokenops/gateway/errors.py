"""Gateway errors in the route's provider shape (DESIGN.md 4.1).

OpenAI routes: ``{"error": {"type", "code", "message", "param"}}``.
Anthropic routes: ``{"type": "error", "error": {"type", "message", "code"}}`` with Anthropic's type names.
Gemini routes: ``{"error": {"code", "message", "status", "details"}}`` (Google's shape; ``details`` carries TokenOps'
reason as a ``google.rpc.ErrorInfo``).
"""

from __future__ import annotations

import orjson

from tokenops.errors import GatewayError

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


# answers that the same request, sent again, cannot change: the OpenAI and Anthropic SDKs (and Claude Code,
# which otherwise retries a 401 for minutes) obey ``x-should-retry: false`` and fail at once
_FINAL = frozenset((400, 401, 403, 404, 405, 413, 422))
RETRY_WAIT_LIMIT = 60  # seconds: a 429 asking to wait longer (a budget exhausted for its period) is final too


def retry_headers(err: GatewayError) -> dict[str, str]:
    """``x-should-retry: false`` for an error a retry cannot change, unless ``err`` already says."""
    if "x-should-retry" in err.headers:
        return {}
    if err.status in _FINAL:
        return {"x-should-retry": "false"}
    wait = err.headers.get("retry-after", "")
    if err.status == 429 and wait.isdigit() and int(wait) > RETRY_WAIT_LIMIT:
        return {"x-should-retry": "false"}
    return {}


def error_body(err: GatewayError, flavor: str) -> bytes:
    if flavor == "gemini":  # Google's shape: the HTTP code, the gRPC status name, TokenOps' reason in the details
        return orjson.dumps({"error": {
            "code": err.status, "message": err.message, "status": _GOOGLE_STATUS.get(err.status, "UNKNOWN"),
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": err.code,
                         "domain": "tokenops", "metadata": {"param": err.param} if err.param else {}}],
        }})  # fmt: skip
    if flavor == "anthropic":
        return orjson.dumps(
            {
                "type": "error",
                "error": {
                    "type": _ANTHROPIC_TYPES.get(err.status, "api_error"),
                    "message": err.message,
                    "code": err.code,  # TokenOps' reason (e.g. budget_exceeded); SDKs ignore extra fields
                },
            }
        )
    return orjson.dumps({"error": {"type": err.kind, "code": err.code, "message": err.message, "param": err.param}})
