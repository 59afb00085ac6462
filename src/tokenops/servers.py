"""Run an ASGI app on a real loopback socket in a background thread.

End-to-end tests, the demo and the benchmark need real HTTP (the official SDKs, connection handling, dropped
connections), not an in-process transport. The socket is bound here, before uvicorn starts, so ``port=0`` gets
a free port with no race between choosing it and listening on it.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn


class BackgroundServer:
    """A uvicorn server in a daemon thread; ``url`` is valid once :meth:`start` returns.

    with BackgroundServer(app) as server:
        httpx.get(server.url + "/healthz")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, startup_timeout: float = 10.0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._requested_port = port  # kept apart from .port so a restart with port=0 picks a fresh port
        self.startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("BackgroundServer is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> BackgroundServer:
        if self._server is not None:
            raise RuntimeError("BackgroundServer is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto must be named: asyncio only sets TCP_NODELAY on sockets whose proto is IPPROTO_TCP, and without
        # it every small response waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        import uvicorn  # here, not at module level: the CLI imports this module and must start fast

        config = uvicorn.Config(
            self.app,
            loop="asyncio",
            lifespan="on",
            log_level="warning",
            ws="none",  # no websocket library import: keeps deprecation warnings out of strict test runs
            timeout_graceful_shutdown=5,
        )
        self._socket = sock
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server on {self.host}:{self.port} did not start") from self._error
            time.sleep(0.002)
        return self

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported by start() or stop(); a thread has nowhere else to raise
            self._error = exc

    def stop(self) -> None:
        """Ask uvicorn to finish in-flight responses and exit, then wait for the thread."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout=5)
        if sock is not None:
            sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
