"""The gateway's in-memory view of the virtual keys.

The request path checks keys against memory only. The cache is reloaded from the ledger every
``refresh`` seconds (so a key revoked from another process stops working within that time) and, at most
every ``miss_interval`` seconds, when an unknown key shows up (so a key created a moment ago works at once,
while a flood of bad keys cannot hammer the ledger).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable

from tokenops.errors import LedgerError
from tokenops.keys import KeyRecord, hash_key

log = logging.getLogger("tokenops.keys")


class KeyCache:
    def __init__(
        self,
        loader: Callable[[], Iterable[KeyRecord]],
        *,
        miss_interval: float = 0.5,
    ):
        self._loader = loader
        self._by_hash: dict[str, KeyRecord] = {}
        self._lock = threading.Lock()
        self._miss_interval = miss_interval
        self._last_load = 0.0
        self._miss_lock = asyncio.Lock()
        self.loaded = False

    def reload(self) -> None:
        records = list(self._loader())
        with self._lock:
            self._by_hash = {r.key_hash: r for r in records}
            self._last_load = time.monotonic()
            self.loaded = True

    def put(self, record: KeyRecord) -> None:
        with self._lock:
            self._by_hash[record.key_hash] = record

    def get(self, key: str) -> KeyRecord | None:
        return self._by_hash.get(hash_key(key))

    async def lookup(self, key: str) -> KeyRecord | None:
        h = hash_key(key)
        rec = self._by_hash.get(h)
        if rec is not None:
            return rec
        # An unknown key: reload, at most once per miss_interval however many bad keys arrive. A miss that
        # comes just after a reload waits for the next one, so a key created a moment ago still works.
        asked = time.monotonic()
        async with self._miss_lock:
            if self._last_load >= asked:
                return self._by_hash.get(h)  # someone reloaded while we waited
            wait = self._miss_interval - (time.monotonic() - self._last_load)
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await asyncio.to_thread(self.reload)
            except LedgerError as exc:
                log.warning("could not reload keys: %s", exc)
                self._last_load = time.monotonic()
        return self._by_hash.get(h)
