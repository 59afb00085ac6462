"""Failure and usage controls, read from the request body's ``fake`` object or ``x-fake-*`` headers.

Tests, the demo and the benchmark steer the fake through the request itself because the gateway passes unknown
body fields and headers through untouched: no side channel to the fake is needed. The body wins over headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

USAGE_KEYS = ("input", "cached", "cache_write_5m", "cache_write_1h", "output", "reasoning", "web_searches", "audio_in",
              "audio_out", "image_in", "image_out", "file_searches", "code_containers")


class ControlError(ValueError):
    """A ``fake`` control is malformed; answered as a 400 in the route's error shape."""


@dataclass(frozen=True, slots=True)
class UsageOverride:
    """Exact usage to report. ``input`` is the whole prompt, cache reads and writes included."""

    input: int | None = None
    cached: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    output: int | None = None
    reasoning: int | None = None
    web_searches: int = 0  # server-side web searches (omitted from the answer when 0)
    audio_in: int = 0  # audio parts of input and output (OpenAI's *_tokens_details.audio_tokens)
    audio_out: int = 0
    image_in: int = 0  # image parts of input and output (OpenAI's *_tokens_details.image_tokens; omitted when 0)
    image_out: int = 0
    file_searches: int = 0  # Responses: file_search_call output items
    code_containers: int = 0  # Responses: code_interpreter_call items, one container each


@dataclass(frozen=True, slots=True)
class Controls:
    status: int | None = None
    status_models: str | None = None  # comma-separated: the status applies only to calls to these models
    retry_after: float | None = None
    delay_ms: float = 0
    chunk_delay_ms: float = 0
    garbage: bool = False
    disconnect_after: int | None = None
    chunks: int | None = None
    model: str | None = None
    usage: UsageOverride | None = None
    think: int = 0
    pending: int = 0  # Responses background: retrievals that still see in_progress
    tool_call: bool = False  # Responses: call the first function tool (unless the input ends with its output)
    drop_lines: int = 0  # batches: leave this many results out of the output (the last ones)
    extra_lines: int = 0  # batches: add this many results whose custom_id no request had


NO_CONTROLS = Controls()

# control name -> kind: "int" non-negative integer, "num" non-negative number, "bool", "str"
_FIELDS: dict[str, str] = {
    "status": "int",
    "status_models": "str",
    "retry_after": "num",
    "delay_ms": "num",
    "chunk_delay_ms": "num",
    "garbage": "bool",
    "disconnect_after": "int",
    "chunks": "int",
    "model": "str",
    "think": "int",
    "pending": "int",
    "tool_call": "bool",
    "drop_lines": "int",
    "extra_lines": "int",
}


def _coerce(name: str, kind: str, value: Any) -> Any:
    if kind == "bool":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ControlError(f"fake.{name} must be a non-empty string")
        return value
    if isinstance(value, str):
        try:
            value = float(value) if kind == "num" else int(value)
        except ValueError:
            raise ControlError(f"fake.{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ControlError(f"fake.{name} must be a non-negative number, got {value!r}")
    if kind == "int" and value != int(value):
        raise ControlError(f"fake.{name} must be an integer, got {value!r}")
    return int(value) if kind == "int" else value


def _usage(raw: Any) -> UsageOverride:
    if not isinstance(raw, dict):
        raise ControlError("fake.usage must be an object")
    unknown = set(raw) - set(USAGE_KEYS)
    if unknown:
        raise ControlError(f"fake.usage has unknown keys {sorted(unknown)}; known: {list(USAGE_KEYS)}")
    values = {k: _coerce(f"usage.{k}", "int", v) for k, v in raw.items()}
    override = UsageOverride(**values)
    writes = override.cached + override.cache_write_5m + override.cache_write_1h
    if override.input is not None and writes > override.input:
        raise ControlError("fake.usage: cached + cache writes exceed input")
    if override.output is not None and override.reasoning is not None and override.reasoning > override.output:
        raise ControlError("fake.usage: reasoning exceeds output")
    if (override.input is not None and override.audio_in > override.input) or (
            override.output is not None and override.audio_out > override.output):
        raise ControlError("fake.usage: audio tokens exceed input or output")
    if (override.input is not None and override.image_in > override.input) or (
            override.output is not None and override.image_out > override.output):
        raise ControlError("fake.usage: image tokens exceed input or output")
    return override


def parse_controls(body: Any, headers: Mapping[str, str]) -> Controls:
    """Read controls; the common case (no ``fake`` field, no ``x-fake-*`` header) costs one scan of the headers."""
    raw: dict[str, Any] = {}
    for key, value in headers.items():
        if key.startswith("x-fake-"):
            name = key[7:].replace("-", "_")
            if name in _FIELDS:
                raw[name] = value
    fake = body.get("fake") if isinstance(body, dict) else None
    if fake is None and not raw:
        return NO_CONTROLS
    if fake is not None and not isinstance(fake, dict):
        raise ControlError("fake must be an object")
    fake = fake or {}
    unknown = set(fake) - set(_FIELDS) - {"usage"}
    if unknown:
        raise ControlError(f"fake has unknown keys {sorted(unknown)}")
    raw.update(fake)
    values = {name: _coerce(name, _FIELDS[name], value) for name, value in raw.items() if name != "usage"}
    if "usage" in raw:
        values["usage"] = _usage(raw["usage"])
    status = values.get("status")
    if status is not None and not 100 <= status <= 599:
        raise ControlError(f"fake.status must be an HTTP status, got {status}")
    return Controls(**values)
