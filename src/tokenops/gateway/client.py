"""The upstream HTTP client, behind a small interface so the gateway's hot path is not tied to one library.

Production uses :class:`AiohttpClient`: measured in ``bench/`` (docs/benchmarks.md), httpx/httpcore spend
most of a busy gateway's CPU scanning their connection pool (encode/httpcore#1035), while aiohttp costs about a
third of a millisecond per call. Tests inject any ``httpx`` transport (an ASGI app in-process, a
``MockTransport``) through :class:`HttpxClient`, so they drive the same code without sockets.

A response exposes ``status``, lower-cased ``headers``, ``read()``, ``chunks()`` and ``close()``. Transport
failures raise :class:`TransportFailure` (``timeout`` tells a 504 from a 502).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp
import httpx


class TransportFailure(Exception):
    """The upstream could not be reached or broke off. ``timeout`` tells a 504 from a 502; ``sent`` is False only
    when the request surely never reached the provider (no connection), so it cannot have been billed."""

    def __init__(self, message: str, *, timeout: bool, sent: bool = True):
        self.timeout = timeout
        self.sent = sent
        super().__init__(message)


class UpstreamResponse(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class UpstreamClient(Protocol):
    async def send(self, url: str, headers: dict[str, str], body: bytes, *, connect: float,
                   read: float, method: str = "POST") -> UpstreamResponse: ...  # fmt: skip

    async def aclose(self) -> None: ...


# --- aiohttp (production) --------------------------------------------------------------------------------
class _AiohttpResponse:
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse):
        self._resp = resp
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.headers.items()}

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportFailure(str(exc) or "read timed out", timeout=True) from None
        except aiohttp.ClientError as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}", timeout=False) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportFailure(str(exc) or "read timed out", timeout=True) from None
        except aiohttp.ClientError as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}", timeout=False) from None

    async def close(self) -> None:
        self._resp.release()


class AiohttpClient:
    """One ``aiohttp.ClientSession`` per gateway, created inside the running loop on first use."""

    def __init__(self, *, limit: int = 2000):
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Idle connections are dropped before servers drop them: uvicorn-based upstreams (vLLM and the
                # like) close idle keep-alive connections after 5 s, and reusing one at that moment fails the call.
                connector=aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, keepalive_timeout=4),
                auto_decompress=False,  # we ask for identity encoding and relay bytes as they are
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def send(self, url: str, headers: dict[str, str], body: bytes, *, connect: float,
                   read: float, method: str = "POST") -> UpstreamResponse:  # fmt: skip
        session = self._open()
        try:
            resp = await session.request(method, url, headers=headers, data=body or None, allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(sock_connect=connect, sock_read=read))  # fmt: skip
        except aiohttp.ConnectionTimeoutError as exc:
            raise TransportFailure(str(exc) or "connect timed out", timeout=True, sent=False) from None
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportFailure(str(exc) or "timed out", timeout=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}", timeout=False, sent=False) from None
        except aiohttp.ClientError as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}", timeout=False) from None
        return _AiohttpResponse(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --- httpx (tests: an ASGI app in-process, a MockTransport) ---------------------------------------------
class _HttpxResponse:
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: httpx.Response):
        self._resp = resp
        self.status = resp.status_code
        self.headers = {k.lower(): v for k, v in resp.headers.items()}

    async def read(self) -> bytes:
        try:
            return await self._resp.aread()
        except httpx.TransportError as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}", timeout=isinstance(exc, httpx.TimeoutException)) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_bytes():
                yield chunk
        except httpx.TransportError as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}", timeout=isinstance(exc, httpx.TimeoutException)) from None

    async def close(self) -> None:
        await self._resp.aclose()


class HttpxClient:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None):
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False,
                                         limits=httpx.Limits(max_connections=2000, max_keepalive_connections=500))  # fmt: skip

    async def send(self, url: str, headers: dict[str, str], body: bytes, *, connect: float,
                   read: float, method: str = "POST") -> UpstreamResponse:  # fmt: skip
        request = self._client.build_request(method, url, headers=headers, content=body or None,
                                             timeout=httpx.Timeout(read, connect=connect))  # fmt: skip
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}", timeout=isinstance(exc, httpx.TimeoutException),
                                   sent=not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)) from None  # fmt: skip
        return _HttpxResponse(resp)

    async def aclose(self) -> None:
        await self._client.aclose()


def make_client(transport: Any = None) -> UpstreamClient:
    return HttpxClient(transport) if transport is not None else AiohttpClient()


__all__ = ["AiohttpClient", "HttpxClient", "TransportFailure", "UpstreamClient", "make_client"]
