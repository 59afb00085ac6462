"""The one exception tree of TokenOps.

    TokenOpsError
    ├── ConfigError            the config file or environment is wrong (file, key path, what was expected)
    ├── UsageError             a CLI argument or API input is wrong (message names the argument); ``code``
    │   ├── NotFoundError      what it names does not exist (the API answers 404)
    │   └── ConflictError      it conflicts with the config file (the API answers 409)
    ├── LedgerError            the ledger cannot be opened, migrated or written
    │   └── LedgerBusy         another process holds the DuckDB file's write lock longer than we waited
    └── GatewayError           an error a gateway call answers with (status, code, message), rendered in the
        │                      route's provider error shape by :mod:`tokenops.gateway.errors`
        └── UpstreamError      the provider could not be reached, timed out or answered garbage (502/504)

Provider HTTP errors are not exceptions here: the gateway relays them with their status and body.
"""

from __future__ import annotations


class TokenOpsError(Exception):
    """Base of every error TokenOps raises on purpose."""


class ConfigError(TokenOpsError):
    def __init__(self, message: str, *, file: str | None = None, path: str | None = None, line: int | None = None):
        self.file = file
        self.path = path
        self.line = line
        where = file or "config"
        if line is not None:
            where += f":{line}"
        if path:
            where += f": {path}"
        super().__init__(f"{where}: {message}")


class UsageError(TokenOpsError):
    """Bad input from a user of the CLI or API; the message is shown as is. ``code`` is the machine-readable
    reason the admin API answers with (``invalid_request`` unless a service says more)."""

    default_code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None):
        self.code = code or self.default_code
        super().__init__(message)


class NotFoundError(UsageError):
    default_code = "not_found"


class ConflictError(UsageError):
    default_code = "defined_in_config"


class LedgerError(TokenOpsError):
    pass


class LedgerBusy(LedgerError):
    pass


class GatewayError(TokenOpsError):
    """An error answered to a gateway client.

    ``kind`` is the OpenAI-style ``type`` (``invalid_request_error``, ``authentication_error``, …);
    the Anthropic rendering maps it to Anthropic's names.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ):
        self.status = status
        self.code = code
        self.kind = kind or _default_kind(status)
        self.headers = headers or {}
        self.param = param
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self)


class UpstreamError(GatewayError):
    pass


def _default_kind(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        405: "invalid_request_error",
        413: "request_too_large",
        429: "rate_limit_error",
        502: "api_error",
        504: "timeout_error",
    }.get(status, "api_error")
