"""Shared fixtures: the smallest gateway a test needs, in-process, over a DuckDB file in tmp_path.

``make_gateway`` builds a gateway whose providers are the project's fake provider, reached in-process through
``httpx.ASGITransport`` (no socket) unless a test passes a ``transport`` or a real URL.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import harness
from harness import FAKE_URL, PROVIDER_KEY, GatewayHarness, create_key, write_config
from tokenops.app import create_app
from tokenops.fakeprovider import create_fake_provider
from tokenops.gateway.app import Gateway
from tokenops.ledger.duckdb import DuckDBLedger


@pytest.fixture(autouse=True, scope="session")
def _every_test_stack_removed() -> Iterator[None]:
    yield
    for made in harness.MADE:
        made.close()


@pytest.fixture(autouse=True)
def _test_stack() -> Iterator[harness.Stack]:
    """The ledger and state this test's gateways use (harness.STACK); what it made is removed afterwards. A
    module-scoped fixture that writes a config gets a stack of its own, removed at the end of the session."""
    harness.CURRENT = harness.Stack()
    yield harness.CURRENT
    harness.CURRENT.close()
    harness.CURRENT = harness.Stack()


def pytest_report_header() -> str:
    return f"gateway tests on: {harness.STACK} (TOKENOPS_TEST_STACK)"


@pytest.fixture
def fake_app() -> Any:
    return create_fake_provider(api_key=PROVIDER_KEY)


@pytest.fixture
async def make_gateway(tmp_path: Path, fake_app: Any) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[Gateway, httpx.AsyncClient]] = []

    async def make(extra: str = "", *, transport: httpx.AsyncBaseTransport | None = None,
                   key_tags: dict[str, str] | None = None, locked: tuple[str, ...] = (),
                   upstream: str = FAKE_URL, clock: Callable[[], Any] | None = None,
                   providers: str = "") -> GatewayHarness:  # fmt: skip
        cfg = write_config(tmp_path, extra, upstream=upstream, providers=providers)
        gw = create_app(cfg, transport=transport or httpx.ASGITransport(app=fake_app), clock=clock)
        rec, key = create_key(gw.ledger, tags=key_tags, locked=locked)
        await gw.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://gateway.test")
        made.append((gw, client))
        return GatewayHarness(gw, client, key, rec)

    yield make
    for gw, client in made:
        await client.aclose()
        await closed_within(gw, 60)  # a no-op for a gateway the test closed itself


async def closed_within(gw: Gateway, seconds: float) -> None:
    """Close ``gw``; if that hangs, fail with every task's stack (pytest-timeout shows only the threads')."""
    closing = asyncio.ensure_future(gw.close())
    done, _ = await asyncio.wait({closing}, timeout=seconds)
    if not done:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            print(f"--- {task!r}", file=stacks)
            task.print_stack(file=stacks)
        closing.cancel()
        pytest.fail(f"the gateway did not close within {seconds:g} s; its tasks:\n{stacks.getvalue()}")
    closing.result()


@pytest.fixture
async def gw(make_gateway: Callable[..., Any]) -> GatewayHarness:
    return await make_gateway(key_tags={"team": "search", "env": "prod"})


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[DuckDBLedger]:
    yield DuckDBLedger(tmp_path / "ledger.duckdb")
