"""The token usage of one call, split the way providers bill it.

Each provider adapter maps its payload into :class:`Usage` at the edge; nothing past the adapter knows
provider field names. Conventions (they differ between providers, so they are fixed here once):

* ``input_tokens`` is the whole prompt: uncached input + cache reads + cache writes. OpenAI's
  ``prompt_tokens`` already is; Anthropic's ``input_tokens`` excludes cache reads and writes, so its adapter
  adds them.
* ``output_tokens`` is the whole completion, reasoning included; ``reasoning_tokens`` is the part of it the
  provider reported as reasoning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"usage {f.name} must be a non-negative integer, got {value!r}")
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "usage cache reads and writes exceed input_tokens "
                f"({self.cache_read_tokens}+{self.cache_write_tokens} > {self.input_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(f"usage reasoning_tokens {self.reasoning_tokens} exceed output_tokens {self.output_tokens}")

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
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(**{f.name: int(data.get(f.name, 0) or 0) for f in fields(cls)})
