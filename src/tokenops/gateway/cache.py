"""The response cache's entries, keys and stores (the stage is :mod:`tokenops.gateway.stages.cache`).

**What is cached.** A call the provider answered 200 with trusted usage (on Gemini's embedding routes, where
Google reports none, the estimate the call was billed at), on the chat, messages, legacy completions, Gemini
generateContent and embeddings routes; by default only *deterministic* requests: every
embedding, and a generation whose ``temperature`` is explicitly 0 (a request without one samples at the
provider's default, 1: two calls would not get one answer). ``cache.nondeterministic: true`` caches those too.
A client can skip the cache for one call with ``X-TokenOps-Cache: bypass``.

**The key** is the isolation scope (``cache.scope``: the key by default, or a tag whose calls share entries, such
as ``team``), the route, the provider and upstream model the router chose, whether the call streams, and the
request body in canonical form (sorted keys) without the fields that do not change the answer (``stream``,
``stream_options``, ``user``, ``metadata``, ``safety_identifier``): its SHA-256. A call from another scope never
reaches another scope's entries. For the semantic cache the *context* (the same, less the text of the last
user message) must match exactly and the last user message be similar (:mod:`tokenops.optimize.similarity`).

**An entry** is the answer as the client got it (JSON, or the stream's bytes: a streamed call's hit replays its
events), its content type, the usage and the model that served it. A hit is recorded with no cost and
``cost_avoided_usd``: the entry's usage priced at the model's price now.

**Stores.** In the process (an LRU of ``cache.max_entries``, each entry at most ``cache.max_entry_bytes``), or
Redis (``cache.store: redis``, or ``auto`` with a Redis state): several gateways share it, the semantic index
too; entries expire after ``cache.ttl`` seconds in both. A store that fails (:class:`CacheUnavailable`) leaves calls uncached, never refused.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tokenops.usage import Usage

log = logging.getLogger("tokenops.cache")

CACHED_ROUTES = frozenset(("chat.completions", "messages", "completions", "gemini.generate", "gemini.stream",
                           "embeddings", "gemini.embed", "gemini.batch_embed"))  # fmt: skip
EMBEDDINGS = frozenset(("embeddings", "gemini.embed", "gemini.batch_embed"))
# routes whose provider reports no usage at all (Gemini's embedContent): the gateway's estimate is what their calls
# are billed at, so an answer with it is kept (an estimate anywhere else means an answer that may not be whole)
ESTIMATED_ROUTES = frozenset(("gemini.embed", "gemini.batch_embed"))


def whole_embeddings(route: str, request: Any, body: bytes) -> bool:
    """Whether a Gemini embedding answer holds what was asked: a vector for ``embedContent``, one per request for
    ``batchEmbedContents``. With no usage to check, this is what tells a whole answer from a broken one."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(answer, dict):
        return False

    def vector(e: Any) -> bool:
        return isinstance(e, dict) and isinstance(e.get("values"), list) and len(e["values"]) > 0

    if route == "gemini.embed":
        return vector(answer.get("embedding"))
    asked = request.get("requests") if isinstance(request, dict) else None
    got = answer.get("embeddings")
    return isinstance(asked, list) and isinstance(got, list) and len(got) == len(asked) and all(map(vector, got))
IGNORED_FIELDS = frozenset(("stream", "stream_options", "user", "metadata", "safety_identifier"))


class CacheUnavailable(Exception):
    """The store could not be read or written: the call goes on uncached."""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    body: bytes
    content_type: str
    usage: Usage
    model_used: str

    def dumps(self) -> bytes:
        return orjson.dumps({"body": self.body.decode("latin-1"), "content_type": self.content_type,
                             "usage": self.usage.to_dict(), "model_used": self.model_used})  # fmt: skip

    @classmethod
    def loads(cls, raw: bytes) -> CacheEntry:
        d = orjson.loads(raw)
        return cls(d["body"].encode("latin-1"), d["content_type"], Usage.from_dict(d["usage"]), d["model_used"])


def deterministic(route: str, body: dict[str, Any]) -> bool:
    """Whether one answer stands for every call with this body: an embedding, or an explicit temperature 0."""
    if route in EMBEDDINGS:
        return True
    temperature = body.get("temperature")
    if temperature is None and isinstance(body.get("generationConfig"), dict):
        temperature = body["generationConfig"].get("temperature")
    return isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature == 0


def last_user_text(route: str, body: dict[str, Any]) -> str | None:
    """The text of the last user message (what the semantic cache compares), or None when it has none."""
    if route in ("chat.completions", "messages"):
        messages = body.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
                and messages[-1].get("role") == "user":  # fmt: skip
            content = messages[-1].get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"
                         and isinstance(p.get("text"), str)]  # fmt: skip
                if texts and len(texts) == len(content):
                    return "\n".join(texts)
    return None


def keys(scope: str, route: str, provider: str, model: str, stream: bool, body: dict[str, Any]) -> tuple[str, str]:
    """(the exact key, the semantic context key: the same without the last user message's text)."""
    kept = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    head = orjson.dumps([scope, route, provider, model, stream])
    exact = hashlib.sha256(head + orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)).hexdigest()
    context = exact
    if last_user_text(route, body) is not None:
        trimmed = dict(kept)
        trimmed["messages"] = [*kept["messages"][:-1], {"role": "user", "content": None}]
        context = hashlib.sha256(b"ctx" + head + orjson.dumps(trimmed, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return exact, context


class CacheStore(Protocol):
    async def get(self, key: str) -> CacheEntry | None: ...
    async def put(self, key: str, entry: CacheEntry, ttl: float) -> None: ...
    async def close(self) -> None: ...


class MemoryStore:
    """An LRU of at most ``max_entries`` entries, each until its expiry (this process only)."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.clock = clock
        self._items: OrderedDict[str, tuple[float, CacheEntry]] = OrderedDict()

    async def get(self, key: str) -> CacheEntry | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self.clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    async def put(self, key: str, entry: CacheEntry, ttl: float) -> None:
        self._items[key] = (self.clock() + ttl, entry)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    async def close(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class RedisStore:
    """Entries in Redis (``SET … EX``), shared by every gateway using it, under ``<prefix>cache:``."""

    def __init__(self, url: str, prefix: str = "tokenops:", timeout: float = 0.25):
        self.url = url
        self.prefix = prefix + "cache:"
        self.timeout = timeout
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            from redis.asyncio import Redis

            self._client = Redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        return self._client

    async def get(self, key: str) -> CacheEntry | None:
        try:
            raw = await self._redis().get(self.prefix + key)
        except Exception as exc:  # any failure of the store: the call goes on uncached
            raise CacheUnavailable(str(exc)) from exc
        return None if raw is None else CacheEntry.loads(raw)

    async def put(self, key: str, entry: CacheEntry, ttl: float) -> None:
        try:
            await self._redis().set(self.prefix + key, entry.dumps(), px=max(1, int(ttl * 1000)))
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def call(self, command: str, *args: Any) -> Any:
        """Another Redis command on this store's client (the semantic index's lists); failures as for get/put."""
        try:
            return await getattr(self._redis(), command)(*args)
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except Exception:  # closing a client whose server is gone
                log.debug("cache: closing the Redis client failed", exc_info=True)
