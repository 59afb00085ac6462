"""The token usage of one call, split the way providers bill it.

Each provider adapter maps its payload into :class:`Usage` at the edge; nothing past the adapter knows
provider field names. Conventions (they differ between providers, so they are fixed here once):

* ``input_tokens`` is the whole prompt: uncached input + cache reads + cache writes. OpenAI's
  ``prompt_tokens`` already is; Anthropic's ``input_tokens`` excludes cache reads and writes, so its adapter
  adds them.
* ``output_tokens`` is the whole completion, reasoning included; ``reasoning_tokens`` is the part of it the
  provider reported as reasoning.
* ``input_audio_tokens`` / ``output_audio_tokens`` are the parts of ``input_tokens`` / ``output_tokens`` that are
  audio (OpenAI's ``*_tokens_details.audio_tokens``): priced at a row's audio rates when it has them.
* ``input_image_tokens`` / ``output_image_tokens`` likewise are the parts that are image tokens (OpenAI's
  ``*_tokens_details.image_tokens``, Gemini's ``IMAGE`` modality counts): priced at a row's image rates.
* ``web_searches`` is not tokens: the server-side web searches the provider ran and bills per call (Anthropic's
  ``server_tool_use.web_search_requests``, the Responses API's ``web_search_call`` output items).
* ``file_searches`` likewise: the Responses API's ``file_search_call`` output items (OpenAI bills each call).
* ``code_containers``: the code-interpreter containers a Responses answer ran code in (the distinct
  ``container_id`` of its ``code_interpreter_call`` items). OpenAI bills containers by session time and memory,
  which no response reports, so they are counted (for reconciling with the provider's bill), never priced: the
  meter flags such a call ``tool_fee_unpriced``.

A usage is validated when it is made: counts are whole numbers from 0 to :data:`MAX_CALL_TOKENS`, a hundred
times the largest context window any model offers. A provider that reports more (``prompt_tokens: 10**19``) is
wrong, not expensive: :class:`ImplausibleUsage` is raised, and the gateway records an estimate instead, flagged
(``usage_estimated``), so one absurd answer neither prices a call at trillions of dollars nor overflows the
ledger's integer columns. :func:`count` reads one count from a provider's payload: integers, integral floats
and digit strings (``"12"``) are accepted, anything else is :class:`MalformedUsage`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

MAX_CALL_TOKENS = 1_000_000_000


class MalformedUsage(ValueError):
    """A provider's usage payload has a count that is not a whole non-negative number. ``code`` is what the
    event of a call whose usage was estimated for this reason says in ``error_code``."""

    code = "usage_malformed"


class MissingUsage(MalformedUsage):
    """The provider's answer has no usage at all."""

    code = "usage_missing"


class ImplausibleUsage(MalformedUsage):
    """A count larger than any single call can be billed (over :data:`MAX_CALL_TOKENS`)."""

    code = "usage_implausible"


def count(value: Any, name: str = "count") -> int:
    """One token count from a provider payload: missing/null is 0; ints, integral floats and digit strings are
    taken as they are; anything else (negative, fractional, text, a bool) raises :class:`MalformedUsage`."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise MalformedUsage(f"usage {name} is a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str) and value.strip().isdigit() and len(value) < 40:
        n = int(value.strip())
    else:
        raise MalformedUsage(f"usage {name} is not a whole number: {str(value)[:40]!r}")
    if n < 0:
        raise MalformedUsage(f"usage {name} is negative")
    if n > MAX_CALL_TOKENS:
        shown = str(n) if n < 10**15 else f"about 10^{len(str(n)) - 1}"
        raise ImplausibleUsage(f"usage {name} of {shown} tokens is more than any call can use")
    return n


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    web_searches: int = 0
    input_image_tokens: int = 0
    output_image_tokens: int = 0
    file_searches: int = 0
    code_containers: int = 0

    def __post_init__(self) -> None:
        # on every call and every drained event: the field names are a module constant, not dataclasses.fields()
        for name in USAGE_FIELDS:
            value = getattr(self, name)
            if type(value) is not int or value < 0:  # bool (a subclass of int) is refused too
                raise MalformedUsage(f"usage {name} must be a non-negative integer, got {value!r}")
            if value > MAX_CALL_TOKENS:
                raise ImplausibleUsage(f"usage {name} of {value} tokens is more than any call can use")
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise MalformedUsage(
                "usage cache reads and writes exceed input_tokens "
                f"({self.cache_read_tokens}+{self.cache_write_tokens} > {self.input_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise MalformedUsage(f"usage reasoning_tokens {self.reasoning_tokens} exceed output_tokens {self.output_tokens}")
        if self.input_audio_tokens > self.input_tokens:
            raise MalformedUsage(f"usage input_audio_tokens {self.input_audio_tokens} exceed input_tokens {self.input_tokens}")
        if self.output_audio_tokens > self.output_tokens:
            raise MalformedUsage(
                f"usage output_audio_tokens {self.output_audio_tokens} exceed output_tokens {self.output_tokens}"
            )
        if self.input_image_tokens > self.input_tokens:
            raise MalformedUsage(f"usage input_image_tokens {self.input_image_tokens} exceed input_tokens {self.input_tokens}")
        if self.output_image_tokens > self.output_tokens:
            raise MalformedUsage(
                f"usage output_image_tokens {self.output_image_tokens} exceed output_tokens {self.output_tokens}"
            )

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Prompt tokens billed at the plain input price."""
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(**{n: getattr(self, n) + getattr(other, n) for n in USAGE_FIELDS})

    def to_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in USAGE_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(**{n: int(data.get(n, 0) or 0) for n in USAGE_FIELDS})


USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
