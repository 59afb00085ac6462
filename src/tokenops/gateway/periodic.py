"""A check that runs every few seconds inside the gateway (background responses, batches): started and stopped
with the gateway, one failure logged without stopping the next round."""

from __future__ import annotations

import asyncio
import logging

from tokenops.gateway.http import stop_task

log = logging.getLogger("tokenops.gateway")


class Periodic:
    interval: float  # seconds between rounds
    first_delay: float | None = None  # seconds before the first round (default: ``interval``)
    _task: asyncio.Task[None] | None = None

    async def check_all(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"tokenops-{type(self).__name__}")

    async def close(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await stop_task(task)

    async def _run(self) -> None:
        delay = self.interval if self.first_delay is None else self.first_delay
        while True:
            await asyncio.sleep(delay)
            delay = self.interval
            try:
                await self.check_all()
            except Exception:  # a bug must not stop the next round
                log.exception("%s: check failed", type(self).__name__)
