"""Policy state in Redis (``state: redis://host:port/db``): every gateway on that Redis sees the same counters,
buckets and claims, and every admission decision is one Lua script, atomic across processes.

    RedisState       the PolicyState; one redis.asyncio client (a connection pool) per event loop
    ResilientState   what open_state returns: RedisState plus the configured behaviour while Redis is down

Keys (``P`` is ``state_options.prefix``; ``:`` and ``%`` in a counter or limit name are written ``%3A``/``%25``
so a key has one reading):

    P:schema                  the layout version below; a Redis holding another version is refused
    P:c:{name}:{period}       hash of one counter: sh, sl (spent), rh, rl (reserved), e (explicit expiry, ms)
    P:d:{name}:{period}       sorted set of the reservations on that counter: "rid hi lo", scored by deadline (ms)
    P:b:{limit}:{subject}:{measure}   hash of one rate bucket: cap, per, lvl, at
    P:k:{name}                a claim (an alert fired, an open approval request): a string with a TTL

**Money is two integers.** Redis adds 64-bit integers exactly (HINCRBY), Lua numbers are doubles; so an
amount is ``hi`` whole units (dollars or tokens) and ``lo`` pico-units in [0, 10^12), each added by HINCRBY.
Lua only carries ``lo`` into ``hi`` (|lo| < 2·10^12, exact in a double) and compares a counter with a limit;
a counter whose ``hi`` passes 2^52 (4.5·10^15 units, beyond MAX_USD) is treated as full, never misread.
Amounts with more than 12 decimal places are rounded: reservations up, spends half-even (the ledger's rule),
limits down, so rounding can only refuse a little early.

**Reservations lapse by the server's clock.** A reservation is a member of each of its counters' sorted sets,
scored by its deadline (``TIME`` + ttl); every script that reads or writes a counter first sweeps the members
whose deadline passed and subtracts their amounts. A settle removes its members (ZREM says whether they were
still there), so a lapsed or doubly settled reservation changes nothing.

**Everything expires.** A counter expires at the ``expires_at`` its seed gave (the engine: a day after the
period ends) or, without one, :data:`DEFAULT_COUNTER_TTL` after its last write; its sorted set with it. A
bucket expires once it would be full again (at least one period after its last change). A claim at its ttl.

Rate buckets refill by the Redis server's clock, so every gateway sees the same level. Their levels are Lua
doubles: a bucket is a real-valued function of time (the in-memory state also refills with a float), exact
for request and token counts, within about 1e-15 relative for USD.
"""

from __future__ import annotations

import asyncio
import decimal
import logging
import math
import secrets
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tokenops.policy.state import (
    BucketKey,
    BucketView,
    BucketWant,
    Claim,
    Counter,
    CounterKey,
    CountersMissing,
    InMemoryState,
    PolicyState,
    StateSchemaMismatch,
    StateUnavailable,
)

log = logging.getLogger("tokenops.state")

SCHEMA = "tokenops-state/1"  # the key layout and encoding above; another value under the prefix is refused
DEFAULT_COUNTER_TTL = 400 * 86_400.0  # seconds a counter without an explicit expiry outlives its last write
MAX_CONNECTIONS = 64  # Redis runs one script at a time: more connections would only queue there
RETRY_EVERY = 1.0  # seconds between tries of a Redis that failed
_UNIT = 10**12  # pico-units per unit
_CTX = decimal.Context(prec=80)  # wide enough that splitting an amount never rounds anything but the 13th place


# --- Lua ----------------------------------------------------------------------------------------
# Every script: KEYS[1] is P:schema, ARGV[1] the SCHEMA it expects (written when absent).
_PRELUDE = """
local E = 1000000000000
local BIG = 4503599627370496
local held = redis.call('GET', KEYS[1])
if not held then redis.call('SET', KEYS[1], ARGV[1])
elseif held ~= ARGV[1] then return redis.error_reply('TOKENOPS_SCHEMA ' .. held) end
local function neg(s)
  if s == '0' then return '0' elseif string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end
  return '-' .. s
end
-- add hi units and lo pico-units (decimal strings, |lo| < E) to fields fh/fl, keeping fl in [0, E)
local function add(c, fh, fl, hi, lo)
  if hi ~= '0' then redis.call('HINCRBY', c, fh, hi) end
  if lo ~= '0' then
    local v = redis.call('HINCRBY', c, fl, lo)
    if v >= E then redis.call('HINCRBY', c, fl, '-1000000000000'); redis.call('HINCRBY', c, fh, '1')
    elseif v < 0 then redis.call('HINCRBY', c, fl, '1000000000000'); redis.call('HINCRBY', c, fh, '-1') end
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- drop the reservations on counter c whose deadline passed
local function sweep(c, d, now)
  local gone = redis.call('ZRANGEBYSCORE', d, '-inf', string.format('%d', now))
  if #gone == 0 then return end
  if redis.call('EXISTS', c) == 1 then
    for _, m in ipairs(gone) do
      local hi, lo = string.match(m, ' (%-?%d+) (%d+)$')
      add(c, 'rh', 'rl', neg(hi), neg(lo))
    end
  end
  redis.call('ZREMRANGEBYSCORE', d, '-inf', string.format('%d', now))
end
-- after a write: the counter's expiry (explicit, else sliding), and its reservations' set expires with it
local function keep(c, d, dflt)
  local at = redis.call('HGET', c, 'e')
  if at then
    if redis.call('EXISTS', d) == 1 then redis.call('PEXPIREAT', d, at) end
  else
    redis.call('PEXPIRE', c, dflt)
    if redis.call('EXISTS', d) == 1 then redis.call('PEXPIRE', d, dflt) end
  end
end
"""

# ARGV: schema, rid, ttl ms, require '1'|'0', default ttl ms, then per counter: hi, lo, limit hi|'', limit lo
_RESERVE = _PRELUDE + """
local n = (#KEYS - 1) / 2
local now = now_ms()
for i = 1, n do sweep(KEYS[2 * i], KEYS[2 * i + 1], now) end
if ARGV[4] == '1' then
  local missing = {}
  for i = 1, n do
    if redis.call('EXISTS', KEYS[2 * i]) == 0 then missing[#missing + 1] = i end
  end
  if #missing > 0 then return {'missing', missing} end
end
for i = 1, n do
  local a = 6 + (i - 1) * 4
  if ARGV[a + 2] ~= '' then
    local v = redis.call('HMGET', KEYS[2 * i], 'sh', 'sl', 'rh', 'rl')
    local sh, rh = tonumber(v[1] or '0'), tonumber(v[3] or '0')
    local hi, lo = sh + rh, tonumber(v[2] or '0') + tonumber(v[4] or '0')
    if lo >= E then hi = hi + 1; lo = lo - E end
    local lh, ll = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    if math.abs(sh) >= BIG or math.abs(rh) >= BIG or hi > lh or (hi == lh and lo >= ll) then
      return {'full', i}
    end
  end
end
local deadline = string.format('%d', now + tonumber(ARGV[3]))
for i = 1, n do
  local a = 6 + (i - 1) * 4
  local c, d = KEYS[2 * i], KEYS[2 * i + 1]
  add(c, 'rh', 'rl', ARGV[a], ARGV[a + 1])
  redis.call('ZADD', d, deadline, ARGV[2] .. ' ' .. ARGV[a] .. ' ' .. ARGV[a + 1])
  keep(c, d, ARGV[5])
end
return {'ok'}
"""

# ARGV: schema, rid, default ttl ms, then per counter: reserved hi, lo, actual hi, lo
_SETTLE = _PRELUDE + """
local n = (#KEYS - 1) / 2
local now = now_ms()
for i = 1, n do sweep(KEYS[2 * i], KEYS[2 * i + 1], now) end
for i = 1, n do
  local a = 4 + (i - 1) * 4
  local c, d = KEYS[2 * i], KEYS[2 * i + 1]
  if redis.call('ZREM', d, ARGV[2] .. ' ' .. ARGV[a] .. ' ' .. ARGV[a + 1]) == 1 then
    add(c, 'rh', 'rl', neg(ARGV[a]), neg(ARGV[a + 1]))
    add(c, 'sh', 'sl', ARGV[a + 2], ARGV[a + 3])
    keep(c, d, ARGV[3])
  end
end
return 1
"""

_COUNTERS = _PRELUDE + """
local n = (#KEYS - 1) / 2
local now = now_ms()
local out = {}
for i = 1, n do
  sweep(KEYS[2 * i], KEYS[2 * i + 1], now)
  local v = redis.call('HMGET', KEYS[2 * i], 'sh', 'sl', 'rh', 'rl')
  for j = 1, 4 do out[#out + 1] = v[j] or '0' end
end
return out
"""

# ARGV: schema, hi, lo, expire at ms|'', default ttl ms
_SEED = _PRELUDE + """
local c, d = KEYS[2], KEYS[3]
if redis.call('EXISTS', c) == 0 then redis.call('HSET', c, 'sh', ARGV[2], 'sl', ARGV[3]) end
if ARGV[4] ~= '' then
  redis.call('HSET', c, 'e', ARGV[4])
  redis.call('PEXPIREAT', c, ARGV[4])
end
keep(c, d, ARGV[5])
return 1
"""

# ARGV: schema, hi, lo, default ttl ms (spent only grows: integers compared as digit strings, any size)
_RAISE = _PRELUDE + """
local c, d = KEYS[2], KEYS[3]
local function less(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return na end
  if na then return less(string.sub(b, 2), string.sub(a, 2)) end
  if #a ~= #b then return #a < #b end
  return a < b
end
local v = redis.call('HMGET', c, 'sh', 'sl')
local sh, sl = v[1] or '0', v[2] or '0'
if less(sh, ARGV[2]) or (sh == ARGV[2] and tonumber(sl) < tonumber(ARGV[3])) then
  redis.call('HSET', c, 'sh', ARGV[2], 'sl', ARGV[3])
end
keep(c, d, ARGV[4])
return 1
"""

_BUCKET = """
local function refill(v, now)
  local cap, per = tonumber(v[1]), tonumber(v[2])
  return math.min(cap, tonumber(v[3]) + cap * math.max(0, now - tonumber(v[4])) / per)
end
local function store(b, capstr, cap, per, level, now)
  redis.call('HSET', b, 'cap', capstr, 'per', string.format('%.17g', per), 'lvl', string.format('%.17g', level),
             'at', string.format('%.17g', now))
  local full_in = per
  if cap > 0 and level < cap then full_in = math.max(per, (cap - level) / cap * per) end
  redis.call('PEXPIRE', b, string.format('%d', math.ceil(full_in * 1000) + 1))
end
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# ARGV: schema, then per bucket: amount, capacity, period s
_TAKE = _PRELUDE + _BUCKET + """
local n = #KEYS - 1
local now = now_s()
local levels, periods, wait = {}, {}, 0
for i = 1, n do
  local a = 2 + (i - 1) * 3
  local amount, cap, per = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local v = redis.call('HMGET', KEYS[i + 1], 'cap', 'per', 'lvl', 'at')
  local level = cap
  if v[1] == ARGV[a + 1] then per = tonumber(v[2]); level = refill(v, now) end
  levels[i], periods[i] = level, per
  local need = math.min(amount, cap)
  if level < need then wait = math.max(wait, (need - level) / cap * per) end
end
local out = {wait <= 0 and 1 or 0, string.format('%.17g', wait)}
for i = 1, n do
  local a = 2 + (i - 1) * 3
  if wait <= 0 then levels[i] = levels[i] - tonumber(ARGV[a]) end
  store(KEYS[i + 1], ARGV[a + 1], tonumber(ARGV[a + 1]), periods[i], levels[i], now)
  out[#out + 1] = string.format('%.17g', levels[i])
  out[#out + 1] = string.format('%.17g', periods[i])
end
return out
"""

# ARGV: schema, delta
_ADJUST = _PRELUDE + _BUCKET + """
local b = KEYS[2]
local v = redis.call('HMGET', b, 'cap', 'per', 'lvl', 'at')
if not v[1] then return 0 end
local now = now_s()
local cap = tonumber(v[1])
store(b, v[1], cap, tonumber(v[2]), math.min(cap, refill(v, now) + tonumber(ARGV[2])), now)
return 1
"""

# ARGV: schema, value, ttl ms
_CLAIM = _PRELUDE + """
local v = redis.call('GET', KEYS[2])
if v then return v end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return ARGV[2]
"""

_CHECK = _PRELUDE + "return 1\n"

_SCRIPTS = {"reserve": _RESERVE, "settle": _SETTLE, "counters": _COUNTERS, "seed": _SEED, "raise": _RAISE,
            "take": _TAKE, "adjust": _ADJUST, "claim": _CLAIM, "check": _CHECK}  # fmt: skip


# --- encoding ------------------------------------------------------------------------------------
def split(amount: Decimal, rounding: str = decimal.ROUND_HALF_EVEN) -> tuple[int, int]:
    """An amount as (whole units, pico-units in [0, 10^12)); more than 12 places are rounded by ``rounding``."""
    scaled = int(amount.scaleb(12, context=_CTX).to_integral_value(rounding=rounding, context=_CTX))
    return divmod(scaled, _UNIT)


def join(hi: int, lo: int) -> Decimal:
    """The Decimal of (whole units, pico-units), without trailing zeros after the point (1.5, not 1.500…)."""
    whole, frac = divmod(abs(hi * _UNIT + lo), _UNIT)
    sign = "-" if hi * _UNIT + lo < 0 else ""
    digits = f"{frac:012d}".rstrip("0")
    return Decimal(f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}")


def _part(name: str) -> str:
    return name.replace("%", "%25").replace(":", "%3A")


def mask(url: str) -> str:
    """The URL with its password (in the authority or a ``password=`` query) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = netloc.rpartition("@")[2]
        netloc = f"{user}:***@{host}"
    query = parts.query
    if "password" in query:
        query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _ms(seconds: float) -> str:
    return str(max(1, math.ceil(seconds * 1000)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Held:
    """What this process must send to settle one of its reservations: per counter, the amounts reserved and
    how many claims of the reservation name it."""

    __slots__ = ("counters", "deadline")

    def __init__(self, counters: list[tuple[CounterKey, int, int, int]], deadline: float):
        self.counters = counters
        self.deadline = deadline  # time.monotonic(): past it (plus slack) the entry is forgotten by prune


class RedisState:
    """The policy state of every gateway that shares one Redis (see the module docstring).

    Example::

        state = RedisState("redis://127.0.0.1:6379/0", config.state_options)
        full = await state.reserve("call-1", [Claim(("team@ab12", "2026-03-01T00:00:00+00:00"), cost, limit)], 3600)

    Reservation ids only need to be unique within this object: each RedisState prefixes them with a random
    token of its own. Errors and timeouts (``options.timeout`` per operation) raise :class:`StateUnavailable`.
    """

    def __init__(self, url: str, options: Any = None):
        self.url = url
        self.name = mask(url)
        self.prefix = getattr(options, "prefix", "tokenops")
        self.timeout = float(getattr(options, "timeout", 1.0))
        self._schema_key = f"{self.prefix}:schema"
        self._token = secrets.token_hex(6)
        self._held: dict[str, _Held] = {}
        # one client per event loop: a redis.asyncio connection belongs to the loop that opened it
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, dict[str, Any]]] = (
            weakref.WeakKeyDictionary())  # fmt: skip

    # --- plumbing ------------------------------------------------------------------------------
    def counter_key(self, key: CounterKey) -> str:
        return f"{self.prefix}:c:{_part(key[0])}:{key[1]}"

    def _reservations_key(self, key: CounterKey) -> str:
        return f"{self.prefix}:d:{_part(key[0])}:{key[1]}"

    def bucket_key(self, key: BucketKey) -> str:
        return f"{self.prefix}:b:{_part(key[0])}:{_part(key[1])}:{key[2]}"

    def claim_key(self, name: str) -> str:
        return f"{self.prefix}:k:{name}"

    def _scripts(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        made = self._clients.get(loop)
        if made is None:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            pool = BlockingConnectionPool.from_url(
                self.url, max_connections=MAX_CONNECTIONS, timeout=self.timeout, socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout, retry=Retry(NoBackoff(), 0),
            )  # fmt: skip
            client = Redis.from_pool(pool)
            made = self._clients[loop] = (client, {k: client.register_script(v) for k, v in _SCRIPTS.items()})
        return made[1]

    def _client(self) -> Any:
        self._scripts()
        return self._clients[asyncio.get_running_loop()][0]

    async def _call(self, what: str, keys: list[str], args: list[str]) -> Any:
        """Run one script; every failure becomes StateUnavailable naming this Redis (password masked)."""
        from redis.exceptions import RedisError, ResponseError

        script = self._scripts()[what]
        try:
            async with asyncio.timeout(self.timeout):
                return await script(keys=[self._schema_key, *keys], args=[SCHEMA, *args])
        except ResponseError as exc:
            text = str(exc)
            if "TOKENOPS_SCHEMA" in text:
                found = text.split("TOKENOPS_SCHEMA", 1)[1].strip()
                raise StateSchemaMismatch(
                    f"Redis {self.name} holds TokenOps state of another version under prefix {self.prefix!r} "
                    f"({found!r}, this version writes {SCHEMA!r}): choose another state_options.prefix or delete "
                    f"the keys {self.prefix}:*"
                ) from None
            raise StateUnavailable(f"Redis {self.name}: {what} failed: {text}") from None
        except TimeoutError:  # asyncio's (redis-py's own TimeoutError is a RedisError, below)
            raise StateUnavailable(f"Redis {self.name} did not answer within {self.timeout:g}s ({what})") from None
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"Redis {self.name} is unavailable ({what}): {exc}") from None

    def _counter_keys(self, key: CounterKey) -> list[str]:
        return [self.counter_key(key), self._reservations_key(key)]

    def holds(self, reservation_id: str) -> bool:
        """Whether this process has a reservation of that id in Redis to settle."""
        return f"{self._token}.{reservation_id}" in self._held

    # --- counters ------------------------------------------------------------------------------
    async def reserve(self, reservation_id: str, claims: Sequence[Claim], ttl: float, *,
                      require_seeded: bool = False) -> CounterKey | None:  # fmt: skip
        """Reserve every claim or none (see PolicyState.reserve). With ``require_seeded``, raise
        :class:`CountersMissing` (reserving nothing) when a claim's counter does not exist yet."""
        if not claims:
            return None
        grouped: dict[CounterKey, list[Any]] = {}  # key -> [amount, limit, claims naming it]
        for c in claims:
            g = grouped.setdefault(c.key, [Decimal(0), None, 0])
            g[0] += c.amount
            if c.limit is not None:
                g[1] = c.limit if g[1] is None else min(g[1], c.limit)
            g[2] += 1
        rid = f"{self._token}.{reservation_id}"
        keys: list[str] = []
        args = [rid, _ms(ttl), "1" if require_seeded else "0", _ms(DEFAULT_COUNTER_TTL)]
        held: list[tuple[CounterKey, int, int, int]] = []
        for key, (amount, limit, count) in grouped.items():
            hi, lo = split(amount, decimal.ROUND_CEILING)
            keys += self._counter_keys(key)
            if limit is None:
                args += [str(hi), str(lo), "", ""]
            else:
                lh, ll = split(limit, decimal.ROUND_FLOOR)
                args += [str(hi), str(lo), str(lh), str(ll)]
            held.append((key, hi, lo, count))
        reply = await self._call("reserve", keys, args)
        status = _text(reply[0])
        if status == "full":
            return held[int(reply[1]) - 1][0]
        if status == "missing":
            raise CountersMissing([held[int(i) - 1][0] for i in reply[1]])
        self._held[rid] = _Held(held, time.monotonic() + ttl)
        return None

    async def settle(self, reservation_id: str, actual: Mapping[CounterKey, Decimal]) -> None:
        rid = f"{self._token}.{reservation_id}"
        held = self._held.pop(rid, None)
        if held is None:
            return
        keys: list[str] = []
        args = [rid, _ms(DEFAULT_COUNTER_TTL)]
        for key, hi, lo, count in held.counters:
            ah, al = split(actual.get(key, Decimal(0)) * count)
            keys += self._counter_keys(key)
            args += [str(hi), str(lo), str(ah), str(al)]
        try:
            await self._call("settle", keys, args)
        except StateUnavailable:
            self._held[rid] = held  # may be settled again (a settle that finds its members gone is a no-op)
            raise

    async def counters(self, keys: Sequence[CounterKey]) -> list[Counter]:
        if not keys:
            return []
        names = [k for key in keys for k in self._counter_keys(key)]
        v = [int(x) for x in await self._call("counters", names, [])]
        return [Counter(join(v[i], v[i + 1]), join(v[i + 2], v[i + 3])) for i in range(0, len(v), 4)]

    async def seed(self, key: CounterKey, spent: Decimal, *, expires_at: float | None = None) -> None:
        hi, lo = split(spent)
        at = str(math.ceil(expires_at * 1000)) if expires_at is not None and expires_at > time.time() else ""
        await self._call("seed", self._counter_keys(key), [str(hi), str(lo), at, _ms(DEFAULT_COUNTER_TTL)])

    async def raise_spent(self, key: CounterKey, spent: Decimal) -> None:
        hi, lo = split(spent)
        await self._call("raise", self._counter_keys(key), [str(hi), str(lo), _ms(DEFAULT_COUNTER_TTL)])

    # --- buckets -------------------------------------------------------------------------------
    async def take(self, wants: Sequence[BucketWant]) -> tuple[bool, float, list[BucketView]]:
        if not wants:
            return True, 0.0, []
        args: list[str] = []
        for w in wants:
            args += [str(w.amount), str(w.capacity), repr(float(w.period))]
        reply = await self._call("take", [self.bucket_key(w.key) for w in wants], args)
        views = [BucketView(w.capacity, Decimal(_text(reply[2 + 2 * i])), float(_text(reply[3 + 2 * i])))
                 for i, w in enumerate(wants)]  # fmt: skip
        return bool(int(reply[0])), float(_text(reply[1])), views

    async def adjust(self, key: BucketKey, delta: Decimal) -> None:
        await self._call("adjust", [self.bucket_key(key)], [str(delta)])

    # --- claims --------------------------------------------------------------------------------
    async def claim(self, name: str, value: str, ttl: float) -> str:
        return _text(await self._call("claim", [self.claim_key(name)], [value, _ms(ttl)]))

    async def release(self, name: str) -> None:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self.timeout):
                await self._client().delete(self.claim_key(name))
        except (TimeoutError, RedisError, OSError) as exc:
            raise StateUnavailable(f"Redis {self.name} is unavailable (release): {exc or 'timeout'}") from None

    # --- upkeep --------------------------------------------------------------------------------
    def prune(self, keep: Callable[[CounterKey], bool]) -> None:
        """Redis keys expire by themselves; only forget settle data of reservations long lapsed (their settle
        would be a no-op anyway)."""
        now = time.monotonic()
        for rid in [r for r, h in self._held.items() if h.deadline + 60 < now]:
            del self._held[rid]

    async def ping(self) -> None:
        """Raise StateUnavailable unless Redis answers within the timeout and holds this version's layout."""
        await self._call("check", [], [])

    async def health(self) -> tuple[str | None, str | None]:
        try:
            await self.ping()
        except StateUnavailable as exc:
            return f"state: {exc}", None
        return None, None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for other, (client, _) in list(self._clients.items()):
            if other is loop:
                await client.aclose()
            elif other.is_running() and not other.is_closed():  # a loop of another thread (a test's server)
                asyncio.run_coroutine_threadsafe(client.aclose(), other)
        self._clients.clear()


class ResilientState:
    """A RedisState with the configured behaviour while Redis cannot be reached (``when_unavailable``).

    ``fail_closed``: operations that decide admission raise :class:`StateUnavailable` (the caller answers 503),
    except a reservation made only of soft claims (no limit), which is admitted uncounted. ``fail_open``: the
    operations run on a local :class:`InMemoryState` until Redis answers again, its counters starting from the
    last values this process read from Redis. Either way Redis is retried at most once per
    :data:`RETRY_EVERY` seconds, and settles that could not reach Redis are sent again once it answers.

    What fail_open loses: counts made locally are not merged back into Redis (the ledger has them, so the next
    period, or a reseed, is right again); while Redis is down each gateway enforces hard budgets and rate
    limits on its own (a budget may be overspent up to once per gateway), alerts may fire once per gateway,
    and each gateway opens its own approval requests.
    """

    def __init__(self, state: RedisState, options: Any = None):
        self.redis = state
        self.name = state.name
        self.mode: str = getattr(options, "when_unavailable", "fail_closed")
        self.local = InMemoryState()
        self.last_error: str | None = None
        self._retry_at: float | None = None  # while Redis is down: monotonic time of the next try
        self._local_ids: set[str] = set()  # reservations held in the local state
        self._unsettled: dict[str, Mapping[CounterKey, Decimal]] = {}  # settles to send once Redis answers
        self._seen: dict[CounterKey, Decimal] = {}  # spend last read from Redis, where local counters start

    @property
    def down(self) -> bool:
        return self._retry_at is not None

    async def _failed(self, exc: StateUnavailable) -> None:
        if self._retry_at is None:
            log.warning("policy state %s unavailable (%s): %s", self.name, self.mode, exc)
            if self.mode == "fail_open":
                for key, spent in self._seen.items():
                    await self.local.raise_spent(key, spent)
        self._retry_at = time.monotonic() + RETRY_EVERY
        self.last_error = str(exc)

    async def _recovered(self) -> None:
        if self._retry_at is None:
            return
        self._retry_at = None
        log.warning("policy state %s answers again", self.name)
        for rid, actual in list(self._unsettled.items()):
            try:
                await self.redis.settle(rid, actual)
            except StateUnavailable:
                return
            self._unsettled.pop(rid, None)

    def _unavailable(self) -> StateUnavailable:
        return StateUnavailable(f"policy state {self.name} is unavailable: {self.last_error}")

    async def _where(self, op: str, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """(True, ``op`` on Redis), or while it is down (False, ``op`` on the local state) with fail_open, or
        StateUnavailable with fail_closed. While down, one caller a second tries Redis; the rest do not wait."""
        now = time.monotonic()
        if self._retry_at is None or now >= self._retry_at:
            try:
                if self._retry_at is not None:  # this caller's turn to try; then replay the outage's settles
                    self._retry_at = now + RETRY_EVERY
                    await self.redis.ping()
                    await self._recovered()
                return True, await getattr(self.redis, op)(*args, **kwargs)
            except (CountersMissing, StateSchemaMismatch):
                raise  # not an outage: the engine must seed / the operator must fix the prefix
            except StateUnavailable as exc:
                await self._failed(exc)
        if self.mode == "fail_open":
            kwargs.pop("require_seeded", None)
            return False, await getattr(self.local, op)(*args, **kwargs)
        raise self._unavailable()

    async def _run(self, op: str, *args: Any, **kwargs: Any) -> Any:
        return (await self._where(op, *args, **kwargs))[1]

    # --- PolicyState ---------------------------------------------------------------------------
    async def reserve(self, reservation_id: str, claims: Sequence[Claim], ttl: float, *,
                      require_seeded: bool = False) -> CounterKey | None:  # fmt: skip
        if not claims:
            return None  # a call no budget counts never waits for Redis
        try:
            on_redis, full = await self._where("reserve", reservation_id, claims, ttl, require_seeded=require_seeded)
        except CountersMissing:
            raise
        except StateUnavailable:
            if all(c.limit is None for c in claims):
                return None  # soft budgets only count: admitted, uncounted while Redis is down
            raise
        if not on_redis and full is None:
            self._local_ids.add(reservation_id)
        result: CounterKey | None = full
        return result

    async def settle(self, reservation_id: str, actual: Mapping[CounterKey, Decimal]) -> None:
        if reservation_id in self._local_ids:
            self._local_ids.discard(reservation_id)
            await self.local.settle(reservation_id, actual)
            return
        if not self.redis.holds(reservation_id):
            return  # unknown, or a soft reservation admitted uncounted while Redis was down
        try:
            if self._retry_at is not None and time.monotonic() < self._retry_at:
                raise self._unavailable()
            await self.redis.settle(reservation_id, actual)
        except StateUnavailable as exc:
            # The call is over: nothing to refuse. Its reservation holds in Redis until this settle is sent
            # again (once Redis answers) or its ttl lapses; fail_open counts the spend locally meanwhile.
            await self._failed(exc)
            if len(self._unsettled) < 100_000:
                self._unsettled[reservation_id] = dict(actual)
            if self.mode == "fail_open" and actual:
                await self._add_local(actual)
            return
        await self._recovered()

    async def _add_local(self, actual: Mapping[CounterKey, Decimal]) -> None:
        rid = "spent-" + secrets.token_hex(8)
        await self.local.reserve(rid, [Claim(k, Decimal(0), None) for k in actual], 60.0)
        await self.local.settle(rid, actual)

    async def counters(self, keys: Sequence[CounterKey]) -> list[Counter]:
        if not keys:
            return []
        on_redis, found = await self._where("counters", keys)
        if on_redis:
            self._seen.update((k, c.spent) for k, c in zip(keys, found, strict=True))
        result: list[Counter] = found
        return result

    async def seed(self, key: CounterKey, spent: Decimal, *, expires_at: float | None = None) -> None:
        await self._run("seed", key, spent, expires_at=expires_at)

    async def raise_spent(self, key: CounterKey, spent: Decimal) -> None:
        await self._run("raise_spent", key, spent)

    async def take(self, wants: Sequence[BucketWant]) -> tuple[bool, float, list[BucketView]]:
        if not wants:
            return True, 0.0, []
        result: tuple[bool, float, list[BucketView]] = await self._run("take", wants)
        return result

    async def adjust(self, key: BucketKey, delta: Decimal) -> None:
        try:
            await self._run("adjust", key, delta)
        except StateUnavailable:
            pass  # a rate bucket's correction after the call: lost with Redis, the bucket refills anyway

    async def claim(self, name: str, value: str, ttl: float) -> str:
        held: str = await self._run("claim", name, value, ttl)
        return held

    async def release(self, name: str) -> None:
        await self._run("release", name)

    def prune(self, keep: Callable[[CounterKey], bool]) -> None:
        self.redis.prune(keep)
        self.local.prune(keep)
        for key in [k for k in self._seen if not keep(k)]:
            del self._seen[key]

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except StateUnavailable as exc:
            await self._failed(exc)
            raise
        await self._recovered()

    async def health(self) -> tuple[str | None, str | None]:
        _, status = await self.status()
        if status == "ok":
            return None, None
        if self.mode == "fail_open":
            return None, f"state: redis {status}"
        return f"state: redis {status}", None

    async def status(self) -> tuple[str, str]:
        """For /readyz: ("redis", "ok" | "unavailable (fail_closed)" | "unavailable, serving with local state
        (fail_open)"); asks Redis now (one PING-like script, within the timeout)."""
        try:
            await self.ping()
        except StateUnavailable:
            if self.mode == "fail_open":
                return "redis", "unavailable, serving with local state (fail_open)"
            return "redis", "unavailable (fail_closed)"
        return "redis", "ok"

    async def close(self) -> None:
        await self.redis.close()


def resilient(state: RedisState, options: Any = None) -> PolicyState:
    """``state`` with the behaviour ``options.when_unavailable`` asks for while Redis is down."""
    return ResilientState(state, options)


__all__ = ["CountersMissing", "RedisState", "ResilientState", "StateSchemaMismatch", "resilient"]
