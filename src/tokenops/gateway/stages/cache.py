"""Cache stage: the response cache. Not enabled yet, so every call says ``X-TokenOps-Cache: off``."""

from __future__ import annotations

from tokenops.call import Call


class CacheStage:
    async def __call__(self, call: Call) -> None:
        call.cache = "off"
