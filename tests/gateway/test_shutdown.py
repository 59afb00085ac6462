"""Closing the gateway never hangs on a background task (its tick, the periodic checks): stop_task."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tokenops.gateway.http import stop_task


async def test_a_swallowed_cancellation_is_sent_again() -> None:
    cancels = 0

    async def swallows_once() -> None:  # as a library that catches CancelledError once (or a timeout race)
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancels += 1
                if cancels > 1:
                    raise

    task = asyncio.create_task(swallows_once())
    await asyncio.sleep(0)
    await stop_task(task, grace=5)
    assert task.cancelled() and cancels == 2


async def test_a_task_that_never_stops_is_left_behind_with_its_stack(caplog: pytest.LogCaptureFixture) -> None:
    done = asyncio.Event()

    async def stubborn() -> None:
        while not done.is_set():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(stubborn(), name="stubborn-tick")
    await asyncio.sleep(0)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, "tokenops.gateway"):
        await stop_task(task, grace=0.3)
    assert time.monotonic() - started < 5 and not task.done()
    said = caplog.text
    assert "stubborn-tick did not stop within 0.3 s" in said and "in stubborn" in said  # the stack names where
    done.set()  # the test's own cleanup: the next cancel ends it
    task.cancel()
    await asyncio.wait({task}, timeout=5)


async def test_a_task_that_failed_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("tick bug")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, "tokenops.gateway"):
        await stop_task(task)
    assert "had failed: tick bug" in caplog.text


async def test_a_gateway_closes_when_its_tick_swallows_the_cancel(make_gateway, monkeypatch) -> None:  # noqa: ANN001
    h = await make_gateway()
    gateway = h.gateway
    real = gateway._ticker
    assert real is not None
    real.cancel()

    async def tick() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(30)  # a second cancel ends it

    gateway._ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    await asyncio.wait_for(gateway.close(), 20)
    assert not gateway.started and gateway._ticker is None


async def test_no_grace_still_cancels_once() -> None:
    task = asyncio.create_task(asyncio.sleep(30))
    await asyncio.sleep(0)
    await stop_task(task, grace=0)
    await asyncio.sleep(0)
    assert task.cancelled()
