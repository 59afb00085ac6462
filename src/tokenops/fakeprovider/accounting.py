"""Deterministic token accounting for the fake provider.

Everything here is a pure function of the request (plus the prompt-cache memory held on the app), so a test can
predict the reported usage to the token. The rules are listed in the package docstring; this module is the one
place that implements them.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# 64 words, so one byte of a hash picks one word with ``& 63``.
WORDS: tuple[str, ...] = (
    "budget", "token", "cost", "model", "cache", "prompt", "stream", "usage",
    "spend", "team", "ledger", "price", "report", "alert", "limit", "forecast",
    "gateway", "reply", "request", "latency", "quota", "invoice", "metric", "tag",
    "policy", "route", "fallback", "signal", "window", "anomaly", "unit", "value",
    "the", "a", "of", "and", "to", "in", "is", "for",
    "with", "on", "as", "by", "at", "from", "this", "that",
    "quick", "steady", "cheap", "exact", "small", "large", "daily", "monthly",
    "green", "clear", "fair", "lean", "sharp", "calm", "bright", "solid",
)  # fmt: skip

MIN_WORDS = 8
MAX_WORDS = 40
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5", "gemini-2.5", "gemini-3")
REASONING_PER_WORD = 2  # a reasoning model "thinks" two tokens for every visible word
OPENAI_CACHE_MIN_PROMPT = 1024
OPENAI_CACHE_BLOCK = 128
OPENAI_CACHE_TTL_S = 600.0
ANTHROPIC_TTL_S = {"5m": 300.0, "1h": 3600.0}


def text_tokens(text: str) -> int:
    """About four characters a token, rounded up: close enough to real tokenizers for cost tests."""
    return (len(text) + 3) // 4


def unit_tokens(text: str) -> int:
    """A message (or a system prompt) costs its text plus four tokens of framing, as chat formats do."""
    return (len(text) + 3) // 4 + 4


def is_reasoning_model(model: str) -> bool:
    return model.startswith(REASONING_PREFIXES)


def openai_text(content: Any) -> str:
    """The text of an OpenAI message content: a string, or the concatenated ``text`` parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def anthropic_block_text(block: Any) -> str:
    """Text blocks count by their text; a tool_result counts by the text it carries; other blocks are free."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    text = block.get("text")
    if isinstance(text, str):
        return text
    if block.get("type") == "tool_result":
        inner = block.get("content")
        if isinstance(inner, str):
            return inner
        if isinstance(inner, list):
            return "".join(anthropic_block_text(b) for b in inner)
    return ""


@dataclass(frozen=True, slots=True)
class Completion:
    """The generated answer: ``words`` visible tokens plus ``reasoning`` hidden ones."""

    text: str
    words: list[str]
    reasoning: int
    truncated: bool
    joiner: str = " "  # between words: a JSON answer's "words" are slices of its text, joined by nothing

    @property
    def output_tokens(self) -> int:
        return len(self.words) + self.reasoning

    def pieces(self, chunks: int | None) -> list[str]:
        """Stream pieces: one per word (a token each), or the text cut into exactly ``chunks`` slices."""
        if chunks is None:
            return [w if i == 0 else self.joiner + w for i, w in enumerate(self.words)]
        n = len(self.text)
        return [self.text[i * n // chunks : (i + 1) * n // chunks] for i in range(chunks)]


def make_completion(seed: bytes, model: str, cap: int | None, *, max_words: int | None = None,
                    think: int = 0, schema: Any = None) -> Completion:  # fmt: skip
    """Derive the answer from the prompt's fingerprint, so the same prompt always gets the same answer.

    ``cap`` (max_tokens) bounds visible + reasoning tokens; ``max_words`` trims the text without marking it
    truncated (used when the usage is overridden and the text only needs to look plausible). ``think``: hidden
    reasoning tokens spent before the answer, as a reasoning model on a hard problem does; they come out of the
    cap first (a cap smaller than the thinking leaves no visible answer, like the real APIs).
    """
    digest = hashlib.blake2b(seed, digest_size=64).digest()
    per_word = 1 + REASONING_PER_WORD if is_reasoning_model(model) else 1
    extra = think if cap is None else min(think, cap)
    left = None if cap is None else cap - extra
    if schema is not None:  # structured output: a JSON text, one token per JSON_TOKEN characters
        text = orjson.dumps(json_instance(schema, digest)).decode()
        pieces = [text[i : i + JSON_TOKEN] for i in range(0, len(text), JSON_TOKEN)]
        # (``max_words``, from a usage override, does not cut it: the override says the tokens, the JSON stays whole)
        count = len(pieces) if left is None else max(0, min(len(pieces), left // per_word))
        return Completion("".join(pieces[:count]), pieces[:count], count * (per_word - 1) + extra,
                          count < len(pieces), joiner="")  # fmt: skip
    natural = MIN_WORDS + digest[0] % (MAX_WORDS - MIN_WORDS + 1)
    count = natural if left is None else max(0, min(natural, left // per_word))
    truncated = count < natural
    if max_words is not None:
        count = min(count, max_words)
    words = [WORDS[b & 63] for b in digest[1 : 1 + count]]
    return Completion(" ".join(words), words, count * (per_word - 1) + extra, truncated)


JSON_TOKEN = 4  # characters of a JSON answer per output token
_DEPTH = 12  # a recursive schema is cut here (null)
_DEEP = 4  # from this depth on: null where allowed, arrays empty unless they need items


def json_instance(schema: Any, digest: bytes = b"", *, within: Any = None) -> Any:
    """A JSON value that fits ``schema`` (a JSON Schema, as OpenAI's ``json_schema`` response format, the
    Responses API's ``text.format`` and Gemini's ``responseJsonSchema`` carry it), deterministic for ``digest``;
    ``True`` (plain JSON mode) gives an object with one ``answer``. Every property is filled (strict schemas
    require all); the first choice of an ``enum``, ``anyOf`` or ``oneOf`` that is not null (null, where allowed,
    once nested deep: recursive models end); numbers inside their bounds, strings of the lengths and formats
    (date, date-time, time, email, uri, uuid) asked for, arrays of ``minItems`` (1 by default, none deep down),
    tuples (``prefixItems``), distinct items where ``uniqueItems``. A ``pattern`` is not followed.
    ``within``: the whole schema whose ``$defs`` a part's ``$ref`` points into (default: ``schema`` itself)."""
    if schema is True:
        return {"answer": " ".join(WORDS[b & 63] for b in digest[1:9])}
    root = within if isinstance(within, dict) else schema if isinstance(schema, dict) else {}
    defs = {**(root.get("definitions") or {}), **(root.get("$defs") or {})}
    counter = iter(range(1 << 30))

    def word() -> str:
        i = next(counter)
        return WORDS[digest[1 + i % 63] & 63] if len(digest) >= 64 else WORDS[i & 63]

    def num(s: dict[str, Any], key: str) -> float | None:
        v = s.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    def bounded(s: dict[str, Any], integer: bool) -> int | float:
        step = 1 if integer else 0.5
        lo, hi = num(s, "minimum"), num(s, "maximum")
        if (x := num(s, "exclusiveMinimum")) is not None:
            lo = x + step if lo is None or x >= lo else lo
        if (x := num(s, "exclusiveMaximum")) is not None:
            hi = x - step if hi is None or x <= hi else hi
        if integer:
            lo = None if lo is None else float(math.ceil(lo))
            hi = None if hi is None else float(math.floor(hi))
        value = 1.0 if integer else 1.5
        if lo is not None and hi is not None:
            value = lo if integer else (lo + hi) / 2
        elif lo is not None:
            value = max(lo, value)
        elif hi is not None:
            value = min(hi, value)
        return int(value) if integer else value

    def text(s: dict[str, Any]) -> str:
        fmt = s.get("format")
        value = {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "time": "12:00:00",
                 "email": "paris@example.com", "uri": "https://example.com/paris",
                 "uuid": "6f1c2a8e-3b7d-4c1e-9a2f-5d8e7b6c4a31"}.get(str(fmt)) or word()  # fmt: skip
        low, high = s.get("minLength"), s.get("maxLength")
        if isinstance(low, int) and len(value) < low:
            value = (value + " ") * (low // (len(value) + 1) + 1)
        if isinstance(high, int) and len(value) > high:
            value = value[:high]
        return value

    def make(s: Any, depth: int) -> Any:
        if not isinstance(s, dict) or depth > _DEPTH:
            return None
        ref = s.get("$ref")
        if isinstance(ref, str) and ref.startswith(("#/$defs/", "#/definitions/")):
            return make(defs.get(ref.rsplit("/", 1)[1]), depth + 1)
        if "const" in s:
            return s["const"]
        if isinstance(s.get("enum"), list) and s["enum"]:
            return s["enum"][0]
        for key in ("anyOf", "oneOf", "allOf"):
            options = s.get(key)
            if isinstance(options, list) and options:
                nulls = [o for o in options if isinstance(o, dict) and o.get("type") == "null"]
                real = [o for o in options if o not in nulls]
                if nulls and (depth >= _DEEP or not real):
                    return None
                return make(real[0], depth + 1)
        kind = s.get("type")
        if isinstance(kind, list):
            if "null" in kind and depth >= _DEEP:
                return None
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in s else "array" if "items" in s or "prefixItems" in s else "string"
        kind = str(kind).lower()  # Gemini's responseSchema writes OBJECT, STRING, …
        if kind == "object":
            props = s.get("properties")
            return {name: make(sub, depth + 1) for name, sub in props.items()} if isinstance(props, dict) else {}
        if kind == "array":
            if isinstance(s.get("prefixItems"), list):
                return [make(p, depth + 1) for p in s["prefixItems"]]
            low, high = s.get("minItems"), s.get("maxItems")
            count = low if isinstance(low, int) else 0 if depth >= _DEEP else 1
            count = min(count, high) if isinstance(high, int) else count
            items = s.get("items")
            choices = items.get("enum") if isinstance(items, dict) else None
            if s.get("uniqueItems") and isinstance(choices, list) and choices:
                return choices[:count]
            return [make(items, depth + 1) for _ in range(count)]
        if kind in ("integer", "number"):
            return bounded(s, kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return text(s)

    return make(schema, 0)


def structured(response_format: Any) -> Any:
    """The schema to answer in, from a chat ``response_format`` or a Responses ``text.format``: a JSON Schema,
    ``True`` for plain JSON mode, None for text."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return True
    if kind == "json_schema":
        inner = response_format.get("json_schema")  # chat nests it; the Responses API does not
        spec = inner if isinstance(inner, dict) else response_format
        return spec.get("schema") if isinstance(spec.get("schema"), dict) else True
    return None


class PrefixMemory:
    """A bounded LRU of prompt-prefix fingerprints with expiry: what a provider's prompt cache remembers.

    Held on the app instance (never module-level) so two fakes in one process do not share a cache.
    """

    def __init__(self, maxsize: int = 8192) -> None:
        self._maxsize = maxsize
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def hit(self, key: bytes, now: float, ttl: float) -> bool:
        """True if ``key`` is cached and fresh; a hit refreshes its lifetime, as both providers do."""
        expires = self._expiry.get(key)
        if expires is None:
            return False
        if expires < now:
            del self._expiry[key]
            return False
        self._expiry[key] = max(expires, now + ttl)
        self._expiry.move_to_end(key)
        return True

    def put(self, key: bytes, now: float, ttl: float) -> None:
        self._expiry[key] = max(self._expiry.get(key, 0.0), now + ttl)
        self._expiry.move_to_end(key)
        if len(self._expiry) > self._maxsize:
            self._expiry.popitem(last=False)


@dataclass(frozen=True, slots=True)
class OpenAIPrompt:
    tokens: int
    cached: int
    seed: bytes


def account_openai(
    messages: Sequence[dict[str, Any]], model: str, memory: PrefixMemory | None, now: float
) -> OpenAIPrompt:
    """Count the prompt and apply OpenAI's automatic prefix caching (``memory=None`` skips the cache).

    The longest message prefix (every message but the last, or fewer) that an earlier request with the same
    model also began with is a cache hit, counted in blocks of 128 tokens, once the prompt is >= 1024 tokens.
    """
    fingerprint = hashlib.blake2b(model.encode(), digest_size=16)
    total = 0
    keys: list[bytes] = []
    prefix_tokens: list[int] = []
    for message in messages:
        total += unit_tokens(openai_text(message.get("content")))
        fingerprint.update(orjson.dumps(message, option=orjson.OPT_SORT_KEYS))
        keys.append(fingerprint.copy().digest())
        prefix_tokens.append(total)
    cached = 0
    if memory is not None:
        if total >= OPENAI_CACHE_MIN_PROMPT:
            for i in range(len(keys) - 2, -1, -1):
                if memory.hit(keys[i], now, OPENAI_CACHE_TTL_S):
                    cached = prefix_tokens[i] // OPENAI_CACHE_BLOCK * OPENAI_CACHE_BLOCK
                    break
        for key in keys:
            memory.put(key, now, OPENAI_CACHE_TTL_S)
    return OpenAIPrompt(total, cached, fingerprint.digest())


@dataclass(frozen=True, slots=True)
class AnthropicPrompt:
    """``tokens`` is the whole prompt; Anthropic reports ``tokens - read - write_5m - write_1h`` as input."""

    tokens: int
    read: int
    write_5m: int
    write_1h: int
    seed: bytes

    @property
    def uncached(self) -> int:
        return self.tokens - self.read - self.write_5m - self.write_1h


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [content]
    return content if isinstance(content, list) else []


def account_anthropic(
    system: Any, messages: Sequence[dict[str, Any]], model: str, memory: PrefixMemory | None, now: float
) -> AnthropicPrompt:
    """Count the prompt and apply Anthropic's explicit caching at ``cache_control`` breakpoints.

    The latest breakpoint whose prefix is cached is read; every later breakpoint's prefix is written, each
    segment billed at the ttl of the breakpoint that ends it (``memory=None`` skips the cache).
    """
    fingerprint = hashlib.blake2b(model.encode(), digest_size=16)
    total = 0
    breakpoints: list[tuple[bytes, int, str]] = []
    units = [("system", system)] if system is not None else []
    units += [(str(m.get("role")), m.get("content")) for m in messages]
    for role, content in units:
        fingerprint.update(b"\x00" + role.encode() + b"\x00")
        texts: list[str] = []
        for block in _blocks(content):
            text = anthropic_block_text(block)
            texts.append(text)
            control = block.get("cache_control") if isinstance(block, dict) else None
            if isinstance(block, str) or (isinstance(block, dict) and block.get("type") == "text"):
                fingerprint.update(b"t" + text.encode() + b"\x00")
            else:
                stripped = {k: v for k, v in block.items() if k != "cache_control"} if control else block
                fingerprint.update(orjson.dumps(stripped, option=orjson.OPT_SORT_KEYS))
            if isinstance(control, dict) and control.get("type") == "ephemeral":
                ttl = "1h" if control.get("ttl") == "1h" else "5m"
                breakpoints.append((fingerprint.copy().digest(), total + unit_tokens("".join(texts)), ttl))
        total += unit_tokens("".join(texts))
    read = write_5m = write_1h = 0
    if memory is not None and breakpoints:
        start = 0
        for i in range(len(breakpoints) - 1, -1, -1):
            key, tokens, ttl = breakpoints[i]
            if memory.hit(key, now, ANTHROPIC_TTL_S[ttl]):
                read, start = tokens, i + 1
                break
        previous = read
        for key, tokens, ttl in breakpoints[start:]:
            if ttl == "1h":
                write_1h += tokens - previous
            else:
                write_5m += tokens - previous
            previous = tokens
            memory.put(key, now, ANTHROPIC_TTL_S[ttl])
    return AnthropicPrompt(total, read, write_5m, write_1h, fingerprint.digest())


@dataclass(frozen=True, slots=True)
class Reported:
    """The usage a response reports, provider-neutral: ``input`` includes cache reads and writes."""

    input: int
    cached: int
    write_5m: int
    write_1h: int
    output: int
    reasoning: int
    web_searches: int = 0
    audio_in: int = 0
    audio_out: int = 0
    image_in: int = 0
    image_out: int = 0
    file_searches: int = 0
    code_containers: int = 0


def resolve_usage(
    prompt_tokens: int, cached: int, write_5m: int, write_1h: int, completion: Completion, override: Any
) -> Reported:
    """Computed usage, with each field a ``fake.usage`` override names replaced by the exact value asked for."""
    if override is None:
        return Reported(prompt_tokens, cached, write_5m, write_1h, completion.output_tokens, completion.reasoning)
    if override.reasoning is not None:
        reasoning = override.reasoning
    else:
        reasoning = completion.reasoning if override.output is None else 0
    return Reported(
        prompt_tokens if override.input is None else override.input,
        override.cached,
        override.cache_write_5m,
        override.cache_write_1h,
        len(completion.words) + reasoning if override.output is None else override.output,
        reasoning,
        override.web_searches,
        override.audio_in,
        override.audio_out,
        override.image_in,
        override.image_out,
        override.file_searches,
        override.code_containers,
    )


def first_tool_call(tools: Any, name: str | None = None) -> tuple[str, str] | None:
    """(name, JSON arguments) of a call of the first function tool in an OpenAI ``tools`` list (chat's nested
    ``function`` or the Responses API's flat shape), or of the one named ``name``: ``"Paris"`` for each required
    string argument, a value that fits the schema (:func:`json_instance`) for each other required one."""
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        spec: dict[str, Any] = tool["function"] if isinstance(tool.get("function"), dict) else tool
        if name is not None and spec.get("name") != name:
            continue
        params: dict[str, Any] = spec["parameters"] if isinstance(spec.get("parameters"), dict) else {}
        props: dict[str, Any] = params["properties"] if isinstance(params.get("properties"), dict) else {}
        required: list[Any] = params["required"] if isinstance(params.get("required"), list) else []
        args = {n: "Paris" if str(props[n].get("type", "")).lower() == "string" and "enum" not in props[n]
                else json_instance(props[n], within=params)  # a $ref points into the whole schema's $defs
                for n in required if isinstance(n, str) and isinstance(props.get(n), dict)}  # fmt: skip
        return str(spec.get("name")), orjson.dumps(args).decode()
    return None


def forced_tool(choice: Any) -> tuple[bool, str | None]:
    """Whether a ``tool_choice`` makes the model call a tool, and which (None: any), in any API's shape: OpenAI's
    ``"required"`` or a named function (chat nests the name, the Responses API does not), Anthropic's ``any`` or
    ``tool``, Gemini's ``functionCallingConfig`` mode ``ANY`` (with its first allowed name)."""
    if choice == "required":
        return True, None
    if not isinstance(choice, dict):
        return False, None
    if choice.get("type") == "function":
        fn = choice.get("function")
        named = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        return True, named if isinstance(named, str) else None
    if choice.get("type") == "any":
        return True, None
    if choice.get("type") == "tool":
        return True, choice.get("name") if isinstance(choice.get("name"), str) else None
    config = choice.get("functionCallingConfig")
    if isinstance(config, dict) and str(config.get("mode", "")).upper() == "ANY":
        names = config.get("allowedFunctionNames")
        return True, names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    return False, None

