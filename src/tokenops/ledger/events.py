"""The spend event: one priced fact per call, immutable once written.

An event carries everything needed to explain its cost: the usage the provider reported, the id of the
price row used (the row itself is stored in ``price_rows``), and the attribution (tags, key, end user).
``cost_usd`` is ``None`` when the model has no known price: such a call is *unpriced*, never $0.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
import orjson

from tokenops.money import format_usd
from tokenops.tags import STANDARD_TAGS
from tokenops.usage import MAX_CALL_TOKENS, Usage

Status = Literal["ok", "upstream_error", "rejected", "cancelled", "error"]
STATUSES = ("ok", "upstream_error", "rejected", "cancelled", "error")
MAX_MONEY = Decimal(10) ** 26  # DECIMAL(38,12) holds 26 digits before the point


class _RequestIds:
    """``req_`` + a random per-process prefix + a counter: unique across processes and restarts (the prefix
    is 64 random bits), and cheap (no system call per request: ``os.urandom`` showed up in the gateway's
    profile)."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._count = itertools.count()
        self._pid = os.getpid()

    def __call__(self) -> str:
        if os.getpid() != self._pid:  # a forked worker must not repeat its parent's ids
            self.__init__()  # type: ignore[misc]
        return f"req_{self._prefix}{next(self._count):016x}"


new_request_id = _RequestIds()


@dataclass(frozen=True, slots=True)
class SpendEvent:
    request_id: str
    ts: datetime  # when the call started, UTC
    source: str  # "gateway", "demo", "import:<kind>", …
    provider: str
    model_requested: str
    model_used: str
    route: str = ""
    stream: bool = False
    usage: Usage = field(default_factory=Usage)
    usage_estimated: bool = False  # True when part of the usage is our estimate (e.g. a cancelled stream)
    cost_usd: Decimal | None = None
    price_row_id: str | None = None
    key_id: str | None = None
    end_user: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    missing_tags: tuple[str, ...] = ()
    status: Status = "ok"
    http_status: int = 200
    error_code: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cache: str = "off"
    upstream_request_id: str | None = None
    approval_id: str | None = None  # the approval grant this call was let through under, if any
    # why the gateway's router chose another model than the one requested (a task's tier, the auto router's
    # estimate, a fallback); None when it served the model asked for
    route_reason: str | None = None
    # a call answered from the response cache: what the answer cost when the provider gave it, at today's price
    cost_avoided_usd: Decimal | None = None
    # what `tokenops recommend` reads where prompts are not stored: a hash of the prompt's stable prefix (system,
    # tools, every message but the last) and its estimated tokens, a hash of the whole request (duplicates),
    # and the output limit the call went with
    prefix_hash: str | None = None
    prefix_tokens: int = 0
    request_hash: str | None = None
    max_output: int | None = None

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None:
            raise ValueError("SpendEvent.ts must be timezone-aware")

    def problems(self) -> list[str]:
        """Why the ledger's columns could not hold this event (empty when they can): every backend stores
        token counts as 64-bit integers, money as DECIMAL(38,12), statuses as 32-bit integers."""
        out = []
        if not isinstance(self.request_id, str) or not self.request_id:
            out.append("request_id is not a non-empty string")
        for name in ("cost_usd", "cost_avoided_usd"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, Decimal) or not value.is_finite() or abs(value) >= MAX_MONEY):
                out.append(f"{name} {value} does not fit DECIMAL(38,12)")
        if not isinstance(self.http_status, int) or not 0 <= self.http_status < 2**31:
            out.append(f"http_status {self.http_status!r} is not a status")
        for name in ("latency_ms", "ttft_ms"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or not math.isfinite(value)
                                      or abs(value) > 1e15):  # fmt: skip
                out.append(f"{name} {value!r} is not a finite duration")
        if self.status not in STATUSES:
            out.append(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        texts = [self.source, self.provider, self.model_requested, self.model_used, self.route]
        texts += [k for k in self.tags] + list(self.tags.values()) + list(self.missing_tags)
        texts += [v for v in (self.key_id, self.end_user, self.error_code, self.upstream_request_id,
                              self.price_row_id, self.approval_id, self.cache, self.route_reason, self.prefix_hash,
                              self.request_hash)
                  if v is not None]  # fmt: skip
        if any(not isinstance(t, str) for t in texts):
            out.append("a text field is not a string")
        return out

    @property
    def priced(self) -> bool:
        return self.cost_usd is not None

    def with_(self, **changes: Any) -> SpendEvent:
        return replace(self, **changes)

    # --- spool encoding (one JSON line; Decimal as an exact string) ------------------------------
    def to_json(self) -> bytes:
        # orjson serialises the dataclass itself (3x faster than building a dict first: this is on every call)
        return orjson.dumps(self, default=_exact)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "usage":
                v = v.to_dict()
            elif f.name == "ts":
                v = v.astimezone(UTC).isoformat()
            elif f.name in ("cost_usd", "cost_avoided_usd"):
                v = None if v is None else format(v, "f")
            elif f.name == "missing_tags":
                v = list(v)
            d[f.name] = v
        return d

    def to_public(self) -> dict[str, Any]:
        """The shape returned by ``GET /v1/tokenops/requests/{id}``."""
        d = self.to_dict()
        d["cost_usd"] = format_usd(self.cost_usd)
        d["priced"] = self.priced
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpendEvent:
        kw = dict(d)
        kw["usage"] = Usage.from_dict(d.get("usage") or {})
        kw["ts"] = _parse_ts(d["ts"])
        kw["cost_usd"] = None if d.get("cost_usd") in (None, "unpriced") else Decimal(str(d["cost_usd"]))
        avoided = d.get("cost_avoided_usd")
        kw["cost_avoided_usd"] = None if avoided is None else Decimal(str(avoided))
        kw["missing_tags"] = tuple(d.get("missing_tags") or ())
        kw["tags"] = dict(d.get("tags") or {})
        return cls(**{k: v for k, v in kw.items() if k in _EVENT_FIELDS})

    @classmethod
    def from_json(cls, line: bytes) -> SpendEvent:
        return cls.from_dict(orjson.loads(line))

    def standard_tag(self, name: str) -> str | None:
        return self.tags.get(name)


_EVENT_FIELDS = frozenset(f.name for f in fields(SpendEvent))
_Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_CALL_TOKENS)]
_Duration = Annotated[float, msgspec.Meta(ge=-1e15, le=1e15)]
# a cost as format(value, "f") writes it, small enough for DECIMAL(38,12)
_Money = Annotated[str, msgspec.Meta(pattern=r"^-?[0-9]{1,26}(\.[0-9]+)?$")]


class _WireUsage(msgspec.Struct, forbid_unknown_fields=True):
    input_tokens: _Tokens
    cache_read_tokens: _Tokens
    cache_write_5m_tokens: _Tokens
    cache_write_1h_tokens: _Tokens
    output_tokens: _Tokens
    reasoning_tokens: _Tokens
    # required here (a line without them is an older one: the slow path reads it, with 0 for each)
    input_audio_tokens: _Tokens
    output_audio_tokens: _Tokens
    web_searches: _Tokens
    input_image_tokens: _Tokens
    output_image_tokens: _Tokens
    file_searches: _Tokens
    code_containers: _Tokens


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    """A spool line exactly as :meth:`SpendEvent.to_json` writes a valid event: every field present, with the
    bounds of :meth:`SpendEvent.problems` and :class:`Usage` (checked in C by msgspec)."""

    request_id: Annotated[str, msgspec.Meta(min_length=1)]
    ts: datetime
    source: str
    provider: str
    model_requested: str
    model_used: str
    route: str
    stream: bool
    usage: _WireUsage
    usage_estimated: bool
    cost_usd: _Money | None
    price_row_id: str | None
    key_id: str | None
    end_user: str | None
    tags: dict[str, str]
    missing_tags: list[str]
    status: Status
    http_status: Annotated[int, msgspec.Meta(ge=0, lt=2**31)]
    error_code: str | None
    latency_ms: _Duration | None
    ttft_ms: _Duration | None
    cache: str
    upstream_request_id: str | None
    approval_id: str | None
    route_reason: str | None
    cost_avoided_usd: _Money | None
    prefix_hash: str | None
    prefix_tokens: _Tokens
    request_hash: str | None
    max_output: _Tokens | None


assert tuple(_WireEvent.__struct_fields__) == tuple(f.name for f in fields(SpendEvent))
assert tuple(_WireUsage.__struct_fields__) == tuple(f.name for f in fields(Usage))
_decode_wire = msgspec.json.Decoder(_WireEvent).decode


def canonical(line: bytes) -> _WireEvent | None:
    """The line's fields if it is exactly what :meth:`SpendEvent.to_json` writes for a valid event, so that the
    line itself can be stored without building the event (about a microsecond, in C); None otherwise: then the
    caller takes the slow path (:meth:`SpendEvent.from_dict` and :meth:`SpendEvent.problems`), which normalises
    an older line or says what is wrong with it."""
    try:
        w = _decode_wire(line)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    u = w.usage
    if (w.ts.tzinfo is None or u.cache_read_tokens + u.cache_write_5m_tokens + u.cache_write_1h_tokens > u.input_tokens
            or u.reasoning_tokens > u.output_tokens or u.input_audio_tokens > u.input_tokens
            or u.output_audio_tokens > u.output_tokens or u.input_image_tokens > u.input_tokens
            or u.output_image_tokens > u.output_tokens):  # fmt: skip
        return None
    return w


def _exact(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot encode {type(value).__name__}")


def _parse_ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    dt = datetime.fromisoformat(str(value))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


__all__ = ["STANDARD_TAGS", "STATUSES", "SpendEvent", "canonical", "new_request_id", "utcnow"]
