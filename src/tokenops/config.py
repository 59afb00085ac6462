"""Configuration: one YAML file (``tokenops.yaml``), validated before anything starts.

This is the only module that reads the environment: ``${VAR}`` (or ``${VAR:-default}``) in the file is
replaced from it, and a missing variable is an error naming it. Every error names the file, the line, the
key path and what was expected, e.g. ``tokenops.yaml:7: providers.openai.timeout.read: expected a number``.
Secrets (provider keys, the admin and metrics keys) are pydantic ``SecretStr``: they print as ``**********``,
and an error never echoes the input of a key that holds one (see :func:`_holds_secret_at`). The YAML is checked
before it is built into values: at most 64 levels deep and 100,000 nodes once aliases are expanded, so alias
loops and "billion laughs" bombs are errors, not a hang or a RecursionError.

Example::

    ledger: duckdb:///./tokenops.duckdb
    providers:
      openai: {base_url: https://api.openai.com/v1, api_key: ${OPENAI_API_KEY}}
    tagging: {required: [team], mode: warn}
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tokenops.alerts.config import AlertsConfig
from tokenops.errors import ConfigError
from tokenops.policy.config import BudgetConfig, LimitConfig, PolicyDefaults, RuleConfig, contradictions
from tokenops.pricing.datafile import DEFAULT_UPDATE_URL
from tokenops.pricing.entries import PriceEntry
from tokenops.routing import RoutingConfig
from tokenops.tags import STANDARD_TAGS, TaggingPolicy, check_name
from tokenops.yamlpaths import format_loc, line_of

CONFIG_ENV = "TOKENOPS_CONFIG"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set by `serve --workers N`: the workers' metrics in one answer
KNOWN_KINDS = ("openai", "anthropic", "gemini")
# The hosts of each kind's own vendor API: only a provider there is priced as that vendor without saying so
# (``catalog:``). An OpenAI-compatible server elsewhere (vLLM, Ollama, a gateway, another vendor) never borrows
# OpenAI's prices for a model name they share (gpt-oss-120b).
VENDOR_HOSTS = {"openai": ("api.openai.com",), "anthropic": ("api.anthropic.com",),
                "gemini": ("generativelanguage.googleapis.com",)}
VENDOR_CATALOG = {"gemini": "google"}  # a kind whose vendor's catalog id is not the kind's name
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MAX_DEPTH = 64  # levels of nesting; a real config has about five
MAX_NODES = 100_000  # values once aliases are expanded; a real config has a few hundred
MIN_KEY_LENGTH = 16  # of the admin and metrics keys: a short key is guessed


class _HideInput:
    """Marks a field (``Annotated[..., HIDE_INPUT]``) whose input may be a credential although its type is not
    SecretStr, e.g. upstream headers (``Authorization: Bearer …``): errors never echo it."""


HIDE_INPUT = _HideInput()


def _long_key(value: SecretStr, info: ValidationInfo) -> SecretStr:
    if len(value.get_secret_value()) < MIN_KEY_LENGTH:
        raise ValueError(f"{info.field_name} must be at least {MIN_KEY_LENGTH} characters: use a long random value, "
                         "e.g. from `openssl rand -hex 32`")  # fmt: skip
    return value


AccessKey = Annotated[SecretStr, AfterValidator(_long_key)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Timeouts(_Model):
    connect: float = Field(5.0, gt=0)
    read: float = Field(300.0, gt=0)


class ProviderConfig(_Model):
    base_url: str
    api_key: SecretStr | None = None
    kind: Literal["openai", "anthropic", "gemini"] | None = None
    catalog: str | None = None  # which price-catalog provider this one speaks for (default: name, then kind)
    timeout: Timeouts = Timeouts()
    headers: Annotated[dict[str, str], HIDE_INPUT] = {}

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("expected an http(s) URL like https://api.openai.com/v1")
        return v.rstrip("/")


class PricingConfig(_Model):
    update_url: str = DEFAULT_UPDATE_URL  # where `tokenops prices update` downloads genai-prices' data file

    @field_validator("update_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+\S*$", v):
            raise ValueError("expected an http(s) URL of a genai-prices data file")
        return v


class ModelAlias(_Model):
    name: str
    provider: str
    model: str


class TaggingConfig(_Model):
    required: list[str] = []
    allowed: dict[str, list[str]] = {}
    mode: Literal["warn", "enforce"] = "warn"

    @field_validator("required")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            check_name(name)
        return v

    @field_validator("allowed")
    @classmethod
    def _allowed_names(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name in v:
            check_name(name)
        return v

    def policy(self) -> TaggingPolicy:
        return TaggingPolicy(
            required=tuple(self.required),
            allowed={k: tuple(v) for k, v in self.allowed.items()},
            mode=self.mode,
        )


class CacheConfig(_Model):
    """The response cache (see :mod:`tokenops.gateway.cache`): off by default."""

    mode: Literal["off", "exact", "semantic"] = "off"
    ttl: float = Field(3600.0, gt=0, le=30 * 86400)  # seconds an answer stays
    scope: str = "key"  # who shares entries: each key alone, or the calls with the same value of this tag
    nondeterministic: bool = False  # also cache calls that sample (no temperature, or temperature > 0)
    store: Literal["auto", "memory", "redis"] = "auto"  # auto: Redis when the state is Redis, else this process
    max_entries: int = Field(10_000, ge=1, le=10_000_000)  # the in-process store's size
    max_entry_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)  # larger answers are not kept
    threshold: float | None = Field(None, gt=0, le=1)  # semantic: the similarity a hit needs (default: the model's)

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        if v != "key":
            check_name(v)
        return v


Signal = Literal["cost", "tokens", "requests", "tokens_per_call", "error_rate", "rate_limited", "latency"]
SIGNALS: tuple[Signal, ...] = typing.get_args(Signal)


class AnomaliesConfig(_Model):
    """The anomaly detector that watches spend inside the gateway (see :mod:`tokenops.analytics.watch`)."""

    enabled: bool = True
    bucket: int = Field(300, ge=60, le=86400)  # seconds per time bucket: a spike is flagged within one bucket
    scopes: list[list[str]] = [["team"], ["feature"], ["model"], ["key"], ["team", "feature"]]  # what to watch
    signals: list[Signal] = list(SIGNALS)
    threshold: float = Field(0.5, gt=0, le=1)  # the detector's score (0.5: about one in 100,000) for a candidate
    history: int = Field(8 * 86400, ge=3600, le=90 * 86400)  # seconds of history learnt (a week and a day)
    min_history: int = Field(150, ge=1, le=100_000)  # buckets a scope must have been seen before it can alert
    min_change_usd: Decimal = Field(Decimal("0.50"), ge=0)  # a cost anomaly must be at least this far off
    min_requests: int = Field(10, ge=1)  # error and 429 rates need this many calls in the bucket
    call_factor: float = Field(50.0, ge=2)  # a call with this many times its feature's usual tokens is an outlier
    call_min_tokens: int = Field(20_000, ge=1)  # ...and at least this many tokens
    settle: float = Field(15.0, ge=0, le=3600)  # seconds after a bucket ends before it is read (spool drained)
    quiet: int = Field(3600, ge=0, le=7 * 86400)  # seconds an incident stays one alert (no repeats on channels)
    # series watched at most, over all the scope lists (the biggest spenders first): 0.3 to 0.6 MB each
    max_series: int = Field(150, ge=1, le=100_000)

    @field_validator("scopes")
    @classmethod
    def _scope_names(cls, v: list[list[str]]) -> list[list[str]]:
        for dims in v:
            if not dims or len(set(dims)) != len(dims):
                raise ValueError("each scope is a non-empty list of distinct dimensions, e.g. [team, feature]")
            for name in dims:
                if name not in ("key", "user", "model", "provider"):
                    check_name(name)
        return v


class PlanningConfig(_Model):
    """Budget planning and variance (``tokenops plan budget``, ``tokenops report variance``, ``tokenops forecast``)."""

    buffer: Decimal = Field(Decimal("0.25"), ge=0, le=10)  # emergency buffer on top of a forecast (25 %)
    level: int = Field(80, ge=50, le=99)  # the forecasts' prediction interval, percent
    # each environment's share of the total that the organisation aims for (fractions: [low, high])
    env_targets: dict[str, tuple[Decimal, Decimal]] = {"dev": (Decimal("0.15"), Decimal("0.20")),
                                                       "prod": (Decimal("0.60"), Decimal("0.70"))}  # fmt: skip
    # a reserve for training and fine-tuning: a fraction of the variable allowance, or the forecast of the spend
    # tagged workload=training when there is more of it
    training_reserve: Decimal = Field(Decimal("0.10"), ge=0, le=10)
    fixed_sources: list[str] = ["import:focus", "import:gpu"]  # event sources that are fixed (base) costs

    @field_validator("env_targets")
    @classmethod
    def _targets(cls, v: dict[str, tuple[Decimal, Decimal]]) -> dict[str, tuple[Decimal, Decimal]]:
        for env, (low, high) in v.items():
            if not 0 <= low <= high <= 1:
                raise ValueError(f"env_targets.{env}: expected [low, high] fractions with 0 <= low <= high <= 1")
        return v


class GatewayConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    spool_dir: str | None = None  # default: "<ledger file>.spool" beside the DuckDB file
    writer_interval: float = Field(2.0, gt=0)  # seconds between drains of the spool into the ledger
    writer: Literal["process", "thread"] = "process"  # where the drains run (process: off the gateway's GIL)
    key_refresh: float = Field(2.0, gt=0)  # seconds between reloads of keys (revocations by other processes)
    metrics_key: AccessKey | None = None  # when set, GET /metrics needs it (or the admin key) as a bearer key
    # fsync: an answered call survives a power loss (each append waits for fdatasync, group-committed);
    # write: it survives the process being killed, not the machine losing power (the kernel holds it)
    durability: Literal["fsync", "write"] = "fsync"
    # seconds between checks of background Responses (background: true) still running; each is metered once,
    # when it ends: on this check or when a client fetches it finished, whichever comes first
    background_poll: float = Field(5.0, gt=0, le=3600)
    call_log: bool = False  # one logfmt line per recorded call on standard output (tokenops.gateway.call_log)


class StateOptions(_Model):
    """How the gateways share live state through ``state: redis://…`` (ignored with ``state: memory``)."""

    prefix: str = Field("tokenops", pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")  # every Redis key starts with it
    when_unavailable: Literal["fail_closed", "fail_open"] = "fail_closed"
    reservation_ttl: float = Field(3600.0, gt=0, le=7 * 86400)  # a reservation never settled lapses after this
    timeout: float = Field(1.0, gt=0, le=60)  # seconds for one state operation before it counts as unavailable


# --- chargeback: showback and chargeback statements (tokenops report chargeback) -------------------------------
CHARGEBACK_RULES = ("proportional", "even", "weights")  # how a pool of spend is spread over the cost centres
UNALLOCATED = "Unallocated"  # the statement of spend kept apart (untagged: keep)


def _chargeback_match(v: dict[str, str]) -> dict[str, str]:
    """A match: tag values (or model, provider, key, user…), all of which must hold; no time buckets."""
    from tokenops.scopes import Scope

    for name in v:
        if name in ("day", "week", "month"):
            raise ValueError(f"match cannot name the time bucket {name!r}")
    Scope.parse(v)  # tag names and values as in every scope (ValueError says what is wrong)
    return v


def _chargeback_weights(v: dict[str, Decimal]) -> dict[str, Decimal]:
    for name, w in v.items():
        if not w.is_finite() or w <= 0:
            raise ValueError(f"weight of {name!r} must be a number greater than 0")
    return v


class CostCentreConfig(_Model):
    name: str = Field(min_length=1, max_length=100)
    match: Annotated[dict[str, str], AfterValidator(_chargeback_match)] = Field(min_length=1)


class SharedCostConfig(_Model):
    match: Annotated[dict[str, str], AfterValidator(_chargeback_match)] = Field(min_length=1)
    rule: Literal["proportional", "even", "weights"] = "proportional"
    weights: Annotated[dict[str, Decimal], AfterValidator(_chargeback_weights)] = {}
    name: str | None = Field(None, min_length=1, max_length=100)  # the pool's label (default: its match)

    @model_validator(mode="after")
    def _weights(self) -> SharedCostConfig:
        if (self.rule == "weights") != bool(self.weights):
            raise ValueError("rule: weights goes with weights: {cost centre: weight, …}, and weights with it only")
        return self


class ChargebackConfig(_Model):
    """How spend is charged to cost centres (``tokenops report chargeback``): direct spend by match (first match
    wins), shared pools spread by a rule, untagged spend spread or kept, cents assigned by largest remainder."""

    cost_centres: list[CostCentreConfig] = []
    cost_centre_tag: str = "team"  # without cost_centres: one cost centre per value of this tag
    shared: list[SharedCostConfig] = []
    untagged: str = "keep"  # proportional | even | weights | keep | the name of a cost centre
    untagged_weights: Annotated[dict[str, Decimal], AfterValidator(_chargeback_weights)] = Field({}, validate_default=True)
    rounding: Literal["largest_remainder"] = "largest_remainder"
    lines: list[str] = ["team", "feature", "model"]  # what a statement's direct lines are grouped by

    @field_validator("cost_centres")
    @classmethod
    def _unique(cls, v: list[CostCentreConfig]) -> list[CostCentreConfig]:
        names = [c.name for c in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"cost centre names must be unique: {', '.join(dupes)}")
        if UNALLOCATED in names:
            raise ValueError(f"{UNALLOCATED!r} is the statement of spend kept apart: name the cost centre otherwise")
        return v

    @field_validator("cost_centre_tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        _chargeback_match({v: "x"})
        return v

    @field_validator("shared")
    @classmethod
    def _shared_weights(cls, v: list[SharedCostConfig], info: ValidationInfo) -> list[SharedCostConfig]:
        names = {c.name for c in info.data.get("cost_centres") or []}
        for i, pool in enumerate(v):
            unknown = sorted(set(pool.weights) - names) if names else []
            if unknown:
                raise ValueError(f"[{i}] weights name {', '.join(map(repr, unknown))}, not a cost centre")
        return v

    @field_validator("untagged")
    @classmethod
    def _untagged(cls, v: str, info: ValidationInfo) -> str:
        names = {c.name for c in info.data.get("cost_centres") or []}
        if v not in (*CHARGEBACK_RULES, "keep") and (v not in names if names else not v.strip()):
            raise ValueError(f"{v!r} is not proportional, even, weights, keep or a cost centre's name")
        return v

    @field_validator("untagged_weights")
    @classmethod
    def _untagged_weights(cls, v: dict[str, Decimal], info: ValidationInfo) -> dict[str, Decimal]:
        names = {c.name for c in info.data.get("cost_centres") or []}
        untagged = info.data.get("untagged")
        if untagged is None:
            return v
        if (untagged == "weights") != bool(v):
            raise ValueError("untagged: weights goes with untagged_weights: {cost centre: weight, …}, and "
                             "untagged_weights with it only")  # fmt: skip
        unknown = sorted(set(v) - names) if names else []
        if unknown:
            raise ValueError(f"names {', '.join(map(repr, unknown))}, not a cost centre")
        return v

    @field_validator("lines")
    @classmethod
    def _lines(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or len(v) > 6:
            raise ValueError("at most 6 names, each once")
        _chargeback_match({name: "x" for name in v})
        return v


class Config(_Model):
    ledger: str = "duckdb:///./tokenops.duckdb"
    state: str = "memory"
    state_options: StateOptions = StateOptions()
    providers: dict[str, ProviderConfig] = {}
    models: list[ModelAlias] = []
    routing: RoutingConfig = RoutingConfig()
    cache: CacheConfig = CacheConfig()
    anomalies: AnomaliesConfig = AnomaliesConfig()
    planning: PlanningConfig = PlanningConfig()
    prices: list[PriceEntry] = []
    pricing: PricingConfig = PricingConfig()
    tagging: TaggingConfig = TaggingConfig()
    gateway: GatewayConfig = GatewayConfig()
    budgets: list[BudgetConfig] = []
    limits: list[LimitConfig] = []
    rules: list[RuleConfig] = []
    policy: PolicyDefaults = PolicyDefaults()
    alerts: AlertsConfig = AlertsConfig()
    chargeback: ChargebackConfig = ChargebackConfig()
    admin_key: AccessKey | None = None
    source: str = Field("<defaults>", exclude=True)
    base_dir: str = Field(".", exclude=True)

    @field_validator("ledger")
    @classmethod
    def _ledger(cls, v: str) -> str:
        if not (v.startswith("duckdb://") or v.startswith("postgresql://") or v.startswith("postgres://")):
            raise ValueError("expected duckdb:///path/to/file.duckdb or postgresql://user@host/db")
        return v

    @field_validator("state")
    @classmethod
    def _state(cls, v: str) -> str:
        if v != "memory" and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected 'memory' or redis://host:port/db (also rediss:// or unix://)")
        return v

    @model_validator(mode="after")
    def _cache_store(self) -> Config:
        if self.cache.store == "redis" and not self.state.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("cache.store: redis needs a Redis state (state: redis://…); with state: memory the "
                             "cache can only be kept in this process (store: memory)")
        return self

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, v: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        for name in v:
            if "/" in name:
                raise ValueError(f"provider name {name!r} may not contain '/'")
        return v

    @field_validator("models")
    @classmethod
    def _aliases(cls, v: list[ModelAlias], info: ValidationInfo) -> list[ModelAlias]:
        providers = info.data.get("providers") or {}
        for i, alias in enumerate(v):
            if alias.provider not in providers:
                raise ValueError(f"[{i}] ({alias.name}) names provider {alias.provider!r}, which is not configured")
        return v

    @field_validator("prices")
    @classmethod
    def _unique_prices(cls, v: list[PriceEntry]) -> list[PriceEntry]:
        seen: dict[tuple[str, str, str], int] = {}
        for i, e in enumerate(v):
            key = (e.provider, e.model, str(e.effective_from))
            if key in seen:
                raise ValueError(f"[{i}] repeats [{seen[key]}]: two prices for {e.provider}/{e.model} from the same date")
            seen[key] = i
        return v

    @field_validator("budgets", "limits")
    @classmethod
    def _unique_names(cls, v: list[Any], info: ValidationInfo) -> list[Any]:
        names = [item.name for item in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{info.field_name} names must be unique: {', '.join(dupes)}")
        return v

    @field_validator("rules")
    @classmethod
    def _consistent_rules(cls, v: list[RuleConfig]) -> list[RuleConfig]:
        problems = contradictions(v)
        if problems:
            raise ValueError("; ".join(problems))
        return v

    # --- derived values -------------------------------------------------------------------------
    def provider_kind(self, name: str) -> str:
        p = self.providers[name]
        if p.kind:
            return p.kind
        if name == "google":
            return "gemini"  # Google's Gemini API, as DESIGN's example configures it
        return name if name in KNOWN_KINDS else "openai"

    def price_catalogs(self, name: str) -> tuple[str, ...]:
        """The price-catalog provider ids the prices of provider ``name`` are looked up under, in order: its
        name, its ``catalog``, then its kind's vendor (``openai``, ``anthropic``) only when its ``base_url`` is
        that vendor's own API (``api.openai.com`` or a subdomain of it, ``api.anthropic.com``). A provider of
        kind ``openai`` elsewhere (a self-hosted vLLM, another vendor's OpenAI-compatible API) is priced only by
        rows under its name (the config's ``prices:``) or its ``catalog``: never by another vendor's row for a
        model name they share."""
        p = self.providers[name]
        ids = [name]
        if p.catalog and p.catalog not in ids:
            ids.append(p.catalog)
        kind = self.provider_kind(name)
        vendor = VENDOR_CATALOG.get(kind, kind)
        host = (urlsplit(p.base_url).hostname or "").lower()
        if vendor not in ids and any(host == h or host.endswith("." + h) for h in VENDOR_HOSTS.get(kind, ())):
            ids.append(vendor)
        return tuple(ids)

    def ledger_path(self) -> Path:
        """The DuckDB file, relative paths resolved against the config file's folder."""
        from tokenops.ledger import duckdb_path

        if not self.ledger.startswith("duckdb://"):
            raise ConfigError("the ledger is not a DuckDB file", file=self.source, path="ledger")
        return duckdb_path(self.ledger, self.base_dir)

    def spool_path(self) -> Path:
        """``gateway.spool_dir``, else ``<ledger file>.spool`` beside a DuckDB ledger, else ``tokenops.spool`` in
        the config file's folder (a server ledger has no file to sit beside)."""
        if self.gateway.spool_dir:
            p = Path(self.gateway.spool_dir)
            return p if p.is_absolute() else Path(self.base_dir) / p
        if not self.ledger.startswith("duckdb://"):
            return Path(self.base_dir) / "tokenops.spool"
        ledger = self.ledger_path()
        return ledger.with_name(ledger.name + ".spool")


def _protect(text: str) -> tuple[str, list[tuple[str, str | None]]]:
    """Swap each ``${VAR}`` for a YAML-safe placeholder before parsing.

    Substituting the raw text would break YAML (``{api_key: ${KEY}}`` opens a flow mapping, and a value may
    contain ``#`` or ``:``); the placeholders are replaced in the parsed strings, where the key path is known.
    """
    found: list[tuple[str, str | None]] = []

    def repl(m: re.Match[str]) -> str:
        found.append((m.group(1), m.group(2)))
        return f"__tokenops_env_{len(found) - 1}__"

    return _VAR.sub(repl, text), found


_PLACEHOLDER = re.compile(r"__tokenops_env_(\d+)__")


def _interpolate(node: Any, env: Mapping[str, str], found: list[tuple[str, str | None]], file: str,
                 root: yaml.Node | None, loc: tuple[Any, ...] = ()) -> Any:  # fmt: skip
    if isinstance(node, str):
        def repl(m: re.Match[str]) -> str:
            name, default = found[int(m.group(1))]
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set", file=file,
                              path=format_loc(loc) or None, line=line_of(root, loc))  # fmt: skip

        return _PLACEHOLDER.sub(repl, node)
    if isinstance(node, dict):
        return {k: _interpolate(v, env, found, file, root, (*loc, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, found, file, root, (*loc, i)) for i, v in enumerate(node)]
    return node


def _expected(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling; see docs/configuration.md)"
    if kind == "missing":
        return "this key is required"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "value_error":
        return msg
    if _holds_secret_at(tuple(err["loc"])):
        return f"{msg} (the value is not shown: it may hold a secret)"
    return f"{msg} (got {err.get('input')!r})"


def _holds_secret_at(loc: tuple[Any, ...]) -> bool:
    """Whether the value at a validation error's location may hold a secret, found by following ``loc`` through
    the Config model's types: a SecretStr, a field marked HIDE_INPUT, a model that hides its inputs (the alert
    channels), or anything that contains one (a whole ``providers`` entry). Where a step cannot be followed the
    type reached so far decides, which errs on the side of hiding."""
    tp: Any = Config
    for part in loc:
        if _is_secret(tp):
            return True
        tp = _step(tp, part)
    return _holds_secret(tp, set())


def _unwrap(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Annotated[X, m…] | None`` → (X, (m…)); other types unchanged."""
    metadata: tuple[Any, ...] = ()
    while True:
        origin = typing.get_origin(tp)
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if origin is Annotated:
            tp, metadata = args[0], metadata + tuple(args[1:])
        elif origin in (typing.Union, types.UnionType) and len(args) == 1:
            tp = args[0]
        else:
            return tp, metadata


def _is_secret(tp: Any) -> bool:
    tp, metadata = _unwrap(tp)
    if HIDE_INPUT in metadata or tp is SecretStr:
        return True
    return isinstance(tp, type) and issubclass(tp, BaseModel) and bool(tp.model_config.get("hide_input_in_errors"))


def _step(tp: Any, part: Any) -> Any:
    tp, _ = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return tp
        return Annotated[(field.annotation, HIDE_INPUT)] if HIDE_INPUT in field.metadata else field.annotation
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin in (list, tuple) and args and isinstance(part, int):
        return args[0]
    return tp  # a union member's tag, a dict key's "[key]", …: stay on the type reached


def _holds_secret(tp: Any, seen: set[type]) -> bool:
    if _is_secret(tp):
        return True
    tp, _ = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if tp in seen:
            return False
        seen.add(tp)
        return any(HIDE_INPUT in f.metadata or _holds_secret(f.annotation, seen) for f in tp.model_fields.values())
    return any(_holds_secret(arg, seen) for arg in typing.get_args(tp) if arg is not type(None))


def _load_yaml(text: str, file: str) -> tuple[yaml.Node | None, Any]:
    """Compose the YAML, check its shape, then build its values.

    PyYAML composes nested collections by recursion, so the depth is checked first on the (flat) event stream;
    the composed graph is then walked as the values would be built, aliases expanded, so a self-containing
    alias or an alias bomb stops at MAX_DEPTH or MAX_NODES instead of looping or filling memory."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", file=file,
                                  line=event.start_mark.line + 1)  # fmt: skip
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_expansion(root, file)
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, file: str) -> None:
    count, stack = 1, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            continue
        if depth > MAX_DEPTH:
            raise ConfigError(f"nested more than {MAX_DEPTH} levels deep once aliases are expanded (does an alias "
                              "contain itself?)", file=file, line=node.start_mark.line + 1)  # fmt: skip
        count += len(children)
        if count > MAX_NODES:
            raise ConfigError(f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?)", file=file)
        stack.extend((child, depth + 1) for child in children)


def parse_config(text: str, *, file: str = "tokenops.yaml", env: Mapping[str, str] | None = None) -> Config:
    """Parse and validate config text; raises ConfigError naming file, line, key path and what was expected."""
    env = os.environ if env is None else env
    text, found = _protect(text)
    try:
        root, data = _load_yaml(text, file)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", file=file, line=mark.line + 1 if mark else None
        ) from None
    except ValueError as exc:  # a scalar YAML cannot build: an integer of 5,000 digits, a date 2025-13-45
        raise ConfigError(f"a value cannot be read: {str(exc).split(';')[0]}", file=file) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of settings at the top level", file=file)
    data = _interpolate(data, env, found, file, root)
    base_dir = str(Path(file).resolve().parent) if file and not file.startswith("<") else os.getcwd()
    try:
        return Config.model_validate({**data, "source": file, "base_dir": base_dir})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(
            _expected(err) + more, file=file, path=format_loc(loc) or None, line=line_of(root, loc)
        ) from None


def metrics_dir(env: Mapping[str, str] | None = None) -> str | None:
    """Where worker processes share their Prometheus metrics (prometheus_client's multiprocess mode), if set."""
    return (os.environ if env is None else env).get(METRICS_DIR_ENV) or None


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Load the config from ``path``, else ``$TOKENOPS_CONFIG``, else ``./tokenops.yaml`` if present, else defaults."""
    env = os.environ if env is None else env
    chosen = path or env.get(CONFIG_ENV)
    if not chosen:
        if Path("tokenops.yaml").exists():
            chosen = "tokenops.yaml"
        else:
            return Config(source="<defaults>", base_dir=os.getcwd())
    p = Path(chosen)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(p)) from None
    return parse_config(text, file=str(p), env=env)


__all__ = ["Config", "ConfigError", "STANDARD_TAGS", "load_config", "parse_config"]
