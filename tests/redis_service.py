"""Redis for the tests (load with ``pytest_plugins = ("redis_service",)``).

- ``redis_url``: the shared server on 127.0.0.1:6379, started if it is down (no persistence); a test whose
  Redis cannot be reached errors with a message saying so, never skips.
- ``redis_prefix``: a fresh key prefix per test; its keys are deleted afterwards.
- ``private_redis``: a server of the test's own on a free port, which a fault test may kill, pause and restart
  (the shared one is never touched).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from harness import free_port

SHARED_PORT = 6379
SHARED_URL = f"redis://127.0.0.1:{SHARED_PORT}/0"


def answers(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait_until(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def ensure_shared() -> str:
    if answers(SHARED_PORT):
        return SHARED_URL
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(f"no Redis answers on 127.0.0.1:{SHARED_PORT} and redis-server is not on PATH: "
                           "install Redis 7 (these tests need it; they do not skip)")  # fmt: skip
    subprocess.run([binary, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(SHARED_PORT),
                    "--save", "", "--appendonly", "no"], check=False, capture_output=True)  # fmt: skip
    if not _wait_until(lambda: answers(SHARED_PORT), 5):
        raise RuntimeError(f"Redis on 127.0.0.1:{SHARED_PORT} cannot be reached, and starting it with "
                           f"`{binary} --daemonize yes --port {SHARED_PORT}` did not help")  # fmt: skip
    return SHARED_URL


def delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(names), 500):
            client.delete(*names[i:i + 500])
    finally:
        client.close()


def keys_under(url: str, prefix: str) -> dict[str, int]:
    """Every key under the prefix and its TTL in ms (-1: none)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return {k.decode(): client.pttl(k) for k in client.scan_iter(match=f"{prefix}:*", count=1000)}
    finally:
        client.close()


class PrivateRedis:
    """A redis-server of one test: ``kill()`` (SIGKILL), ``pause()``/``resume()`` (SIGSTOP/SIGCONT),
    ``start()`` again on the same port (empty: no persistence)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH: install Redis 7 (these tests need it)")
        log = (self.folder / f"redis-{self.port}.log").open("ab")
        with log:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.folder)], stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        if not _wait_until(lambda: answers(self.port), 10):
            self.kill()
            raise RuntimeError(f"private redis-server on port {self.port} did not start: see {self.folder}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused server dies only once it runs
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture
def redis_url() -> str:
    return ensure_shared()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path).start()
    yield server
    server.kill()


# --- a reserving process (for the cross-process tests; spawned, so importable from here) -------------
def reserve_from_process(url: str, prefix: str, key: tuple[str, str], amounts: list[str], limit: str,
                         start_at: float) -> list[str]:  # fmt: skip
    """Reserve each amount against ``limit`` at once from this process (its own RedisState); the amounts
    admitted."""
    from tokenops.config import StateOptions
    from tokenops.policy.redis_state import RedisState
    from tokenops.policy.state import Claim

    async def run() -> list[str]:
        state = RedisState(url, StateOptions(prefix=prefix, timeout=10))
        await state.ping()  # connected before the start, so both processes race from the same instant
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def one(i: int, amount: str) -> str | None:
            full = await state.reserve(f"p{os.getpid()}-{i}", [Claim(key, Decimal(amount), Decimal(limit))], 60)
            return amount if full is None else None

        try:
            done = await asyncio.gather(*(one(i, a) for i, a in enumerate(amounts)))
        finally:
            await state.close()
        return [a for a in done if a is not None]

    return asyncio.run(run())
