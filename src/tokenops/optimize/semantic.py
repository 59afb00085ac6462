"""The semantic cache's index: for each *context* (the request less its last user message, hashed by the cache),
the last user messages whose answers are kept, with their embeddings; a new message finds the most similar one
(:class:`tokenops.optimize.similarity.SimilarityScorer`: cosine of MiniLM embeddings, with the vetoes on
numbers, negations, names) and is a hit at the threshold or above. :class:`SemanticIndex` keeps them in this
process, bounded (``max_per_context`` messages a context, ``max_contexts`` contexts, least recently used first
out); :class:`RedisSemanticIndex` keeps them in Redis beside the answers, so that every gateway of a deployment
finds what any of them kept. Entries expire with their answers. The model runs in a worker thread, off the
event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenops.optimize.similarity import DEFAULT_THRESHOLD, SimilarityScorer, default_scorer


@dataclass
class _Kept:
    texts: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    expires: list[float] = field(default_factory=list)
    vectors: list[Any] = field(default_factory=list)  # unit vectors (numpy rows)
    fits: list[bool] = field(default_factory=list)


class SemanticIndex:
    def __init__(self, threshold: float | None = None, scorer: SimilarityScorer | None = None, *,
                 max_per_context: int = 1000, max_contexts: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        self._scorer = scorer
        self.max_per_context = max_per_context
        self.max_contexts = max_contexts
        self.clock = clock
        self._contexts: OrderedDict[str, _Kept] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def scorer(self) -> SimilarityScorer:
        if self._scorer is None:
            self._scorer = default_scorer()
        return self._scorer

    async def find(self, context: str, text: str) -> str | None:
        """The exact key of the kept message most similar to ``text`` in ``context``, if it reaches the threshold."""
        with self._lock:
            kept = self._contexts.get(context)
            if kept is None or not kept.texts:
                return None
        return await asyncio.to_thread(self._find, context, text)

    def _find(self, context: str, text: str) -> str | None:
        encoded = self.scorer.encode([text])
        now = self.clock()
        best: tuple[float, str] | None = None
        with self._lock:
            kept = self._contexts.get(context)
            if kept is None:
                return None
            self._contexts.move_to_end(context)
            for i in range(len(kept.texts)):
                if kept.expires[i] <= now:
                    continue
                cosine = float(kept.vectors[i] @ encoded.vectors[0])
                s = self.scorer.combine(cosine, kept.texts[i], text, fits=kept.fits[i] and encoded.fits[0])
                if s >= self.threshold and (best is None or s > best[0]):
                    best = (s, kept.keys[i])
        return None if best is None else best[1]

    async def add(self, context: str, text: str, key: str, ttl: float) -> None:
        await asyncio.to_thread(self._add, context, text, key, ttl)

    def _add(self, context: str, text: str, key: str, ttl: float) -> None:
        encoded = self.scorer.encode([text])
        now = self.clock()
        with self._lock:
            kept = self._contexts.setdefault(context, _Kept())
            self._contexts.move_to_end(context)
            live = [i for i in range(len(kept.texts)) if kept.expires[i] > now and kept.keys[i] != key]
            live = live[-(self.max_per_context - 1):] if self.max_per_context > 1 else []
            for name in ("texts", "keys", "expires", "vectors", "fits"):
                values = getattr(kept, name)
                setattr(kept, name, [values[i] for i in live])
            kept.texts.append(text)
            kept.keys.append(key)
            kept.expires.append(now + ttl)
            kept.vectors.append(encoded.vectors[0])
            kept.fits.append(encoded.fits[0])
            while len(self._contexts) > self.max_contexts:
                self._contexts.popitem(last=False)


class RedisSemanticIndex:
    """The index in Redis: one list per context (``<prefix>cache:sem:<context>``) of the kept messages (text,
    key, expiry, vector), the newest ``max_per_context`` kept, the list expiring with its newest answer. Failures
    raise :class:`tokenops.gateway.cache.CacheUnavailable` through the store's client (the call goes on
    uncached)."""

    def __init__(self, store: Any, threshold: float | None = None, scorer: SimilarityScorer | None = None, *,
                 max_per_context: int = 1000) -> None:  # fmt: skip
        self.store = store  # a RedisStore: its client, prefix and error handling
        self.local = SemanticIndex(threshold, scorer)  # for the scoring (its scorer and threshold)
        self.max_per_context = max_per_context

    @property
    def scorer(self) -> SimilarityScorer:
        return self.local.scorer

    def _key(self, context: str) -> str:
        return f"{self.store.prefix}sem:{context}"

    async def find(self, context: str, text: str) -> str | None:
        raw = await self.store.call("lrange", self._key(context), 0, -1)
        if not raw:
            return None
        return await asyncio.to_thread(self._best, raw, text)

    def _best(self, raw: list[bytes], text: str) -> str | None:
        import numpy as np
        import orjson

        encoded = self.scorer.encode([text])
        now = time.time()
        best: tuple[float, str] | None = None
        for item in raw:
            d = orjson.loads(item)
            if d["expires"] <= now:
                continue
            vector = np.frombuffer(bytes.fromhex(d["vector"]), dtype=np.float32)
            s = self.scorer.combine(float(vector @ encoded.vectors[0]), d["text"], text,
                                    fits=d["fits"] and encoded.fits[0])  # fmt: skip
            if s >= self.local.threshold and (best is None or s > best[0]):
                best = (s, d["key"])
        return None if best is None else best[1]

    async def add(self, context: str, text: str, key: str, ttl: float) -> None:
        import orjson

        encoded = await asyncio.to_thread(self.scorer.encode, [text])
        item = orjson.dumps({"text": text, "key": key, "expires": time.time() + ttl, "fits": encoded.fits[0],
                             "vector": encoded.vectors[0].astype("float32").tobytes().hex()})  # fmt: skip
        name = self._key(context)
        await self.store.call("rpush", name, item)
        await self.store.call("ltrim", name, -self.max_per_context, -1)
        await self.store.call("pexpire", name, max(1, int(ttl * 1000)))
