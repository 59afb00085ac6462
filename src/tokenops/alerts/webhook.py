"""Signed JSON webhooks, and the retrying POST that the Slack channel shares.

Signature scheme (what a receiver checks; :func:`verify_signature` does it):

* The body is the alert's JSON (:meth:`Alert.to_json`), UTF-8, exactly the bytes received.
* ``X-TokenOps-Timestamp`` is the unix time in whole seconds at which this attempt was sent.
* ``X-TokenOps-Signature`` is ``sha256=`` + the lowercase hex HMAC-SHA256, keyed with the shared secret (UTF-8),
  of ``f"{timestamp}.".encode() + body``. Signing the timestamp lets a receiver refuse replays: reject a
  timestamp more than a few minutes from its own clock.
* ``X-TokenOps-Alert-Id`` is the alert id, the same on every retry, so a receiver can drop duplicates.

A receiver in a few lines::

    expected = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest("sha256=" + expected, request.headers["X-TokenOps-Signature"])

Retries: connection errors, timeouts, 429 and 5xx are retried ``retries`` times with exponential backoff
(``backoff * 2**n``, capped, times a random 1–1.5 jitter so that many gateways do not retry in step). A
``Retry-After`` header (seconds or an HTTP date) replaces the backoff, capped at ``max_retry_after``. Other 4xx
answers are the receiver saying no; they are not retried. Each attempt is re-signed with a fresh timestamp.

``httpx`` is imported inside the functions that use it: the CLI imports this package and must start fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson

from tokenops.alerts.model import Alert, AlertDeliveryError

if TYPE_CHECKING:
    import httpx

USER_AGENT = "TokenOps-Alerts/0.1"
SIGNATURE_HEADER = "X-TokenOps-Signature"
TIMESTAMP_HEADER = "X-TokenOps-Timestamp"
ALERT_ID_HEADER = "X-TokenOps-Alert-Id"


# --- signing ------------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-TokenOps-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str,
    timestamp: int | str,
    body: bytes,
    header: str,
    *,
    tolerance: float | None = None,
    now: float | None = None,
) -> bool:
    """True when ``header`` is the signature of ``body`` at ``timestamp`` (constant-time compare).

    With ``tolerance`` (seconds), a timestamp further than that from ``now`` (default: the clock) is refused too,
    which stops a captured request being replayed later.
    """
    ts = str(timestamp).strip()
    if not ts.isdigit():
        return False
    if tolerance is not None and abs((time.time() if now is None else now) - int(ts)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body).encode(), header.strip().encode())


def safe_url(url: str) -> str:
    """``scheme://host[:port]`` only: webhook paths and queries often are the credential (Slack's are)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme or '?'}://{host}{port}"


# --- retrying POST ------------------------------------------------------------------------------------------


class RetryPolicy:
    """How many times and how long to wait; one object so webhook and Slack retry the same way."""

    def __init__(self, retries: int = 3, backoff: float = 0.5, *, max_backoff: float = 30.0,
                 max_retry_after: float = 60.0) -> None:  # fmt: skip
        if retries < 0 or backoff < 0 or max_backoff < 0 or max_retry_after < 0:
            raise ValueError("retries, backoff, max_backoff and max_retry_after must not be negative")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.backoff * 2 ** (attempt - 1), self.max_backoff) * random.uniform(1.0, 1.5)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


async def post_with_retries(
    url: str,
    body: bytes,
    headers: Callable[[], Mapping[str, str]],
    *,
    channel: str,
    client: httpx.AsyncClient | None,
    timeout: float,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """POST ``body`` until a 2xx answer or the policy gives up; raises :class:`AlertDeliveryError`.

    ``headers`` is called before each attempt so time-dependent headers (the signature's timestamp) are fresh.
    Without an injected ``client`` a short-lived one is made per delivery: alerts are rare, and a client bound
    to no event loop of its own works from the CLI's ``asyncio.run`` as well as from the gateway.
    """
    import httpx

    where = safe_url(url)
    attempts = policy.retries + 1
    own = client is None
    http = client if client is not None else httpx.AsyncClient(timeout=timeout, follow_redirects=False)
    try:
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            try:
                response = await http.post(url, content=body, headers=dict(headers()), timeout=timeout)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise AlertDeliveryError(f"{channel}: cannot POST to {where}: {type(exc).__name__}",
                                         channel=channel) from None  # fmt: skip
            except httpx.TransportError as exc:  # connection refused/reset, timeouts, protocol errors
                problem = f"{type(exc).__name__}{': ' + _scrub(str(exc), url) if str(exc) else ''}"
                status = None
            else:
                status = response.status_code
                if 200 <= status <= 299:
                    return
                problem = f"HTTP {status}"
                if not _retryable_status(status):
                    raise AlertDeliveryError(f"{channel}: POST {where} answered {problem}; not retried",
                                             channel=channel, status=status)  # fmt: skip
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt == attempts:
                raise AlertDeliveryError(f"{channel}: POST {where} failed after {attempts} attempt(s): {problem}",
                                         channel=channel, status=status)  # fmt: skip
            await sleep(policy.delay(attempt, retry_after))
    finally:
        if own:
            await http.aclose()


def _scrub(text: str, url: str) -> str:
    return text.replace(url, safe_url(url))


# --- the channel --------------------------------------------------------------------------------------------


class WebhookChannel:
    """POST each alert as signed JSON to ``url``.

    channel = WebhookChannel("https://hooks.example/tokenops", secret="s3cret")
    await channel.send(alert)   # raises AlertDeliveryError after the retries are spent

    Pass ``client`` to share an ``httpx.AsyncClient`` (its owner closes it); its transport makes tests easy.
    """

    def __init__(
        self,
        url: str,
        secret: str | None,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 60.0,
        name: str = "webhook",
    ) -> None:
        self.url = url
        self._secret = secret
        self.client = client
        self.timeout = timeout
        self.policy = RetryPolicy(retries, backoff, max_retry_after=max_retry_after)
        self.name = name

    def __repr__(self) -> str:
        signed = "signed" if self._secret else "unsigned"
        return f"WebhookChannel(name={self.name!r}, url={safe_url(self.url)!r}, {signed})"

    def body(self, alert: Alert) -> bytes:
        # default=str: an odd value in ``details`` must not cost the whole alert its delivery
        return orjson.dumps(alert.to_json(), default=str)

    def headers(self, alert: Alert, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            TIMESTAMP_HEADER: timestamp,
            ALERT_ID_HEADER: alert.id,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        return headers

    async def send(self, alert: Alert) -> None:
        body = self.body(alert)
        await post_with_retries(self.url, body, lambda: self.headers(alert, body), channel=self.name,
                                client=self.client, timeout=self.timeout, policy=self.policy)  # fmt: skip
