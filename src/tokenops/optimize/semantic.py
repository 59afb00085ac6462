"""The semantic cache's index: for each *context* (the request less its last user message, hashed by the cache),
the last user messages whose answers are kept, with their embeddings; a new message finds the most similar one
(:class:`tokenops.optimize.similarity.SimilarityScorer`: cosine of MiniLM embeddings, with the vetoes on
numbers, negations, names) and is a hit at the threshold or above. Kept in this process, bounded
(``max_per_context`` messages a context, ``max_contexts`` contexts, least recently used first out); entries
expire with their answers. The model runs in a worker thread, off the event loop.
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
