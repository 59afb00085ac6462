"""The policy sections of ``tokenops.yaml``: ``budgets``, ``limits``, ``rules`` and ``policy`` defaults.

    budgets:
      - name: alpha-monthly
        scope: {team: alpha}            # tags; also key: ID, user: NAME, model: GLOB
        amount_usd: "250.00"            # or amount_tokens: 5000000
        period: month                   # day | week | month | quarter | custom (with start, end)
        timezone: Europe/Berlin
        hard: true
        thresholds: [{at: 0.5, action: alert}, {at: 0.8, action: downgrade, model: gpt-4o-mini},
                     {at: 1.0, action: block}]
    limits:
      - {name: per-key, per: key, requests_per_minute: 600, tokens_per_minute: 200000, usd_per_hour: "20"}
    rules:
      - {name: dev-no-frontier, scope: {env: dev}, deny_models: ["gpt-4o", "o1*", "claude-opus-*"]}
      - {name: caps, max_input_tokens: 100000, max_output_tokens: 4096, on_exceed: clamp}
      - {name: opus-needs-approval, models: ["claude-opus-*"], require_approval: true}

Contradictions are refused at load time, naming both rules.
"""

from __future__ import annotations

import fnmatch
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from tokenops.money import usd_setting
from tokenops.policy.periods import zone
from tokenops.scopes import Scope

ACTIONS = ("alert", "downgrade", "require_approval", "block")
SEVERITY = {a: i for i, a in enumerate(ACTIONS)}
# Upper bounds of what a person may set: far beyond any real use, far inside the 64-bit integers the ledger and
# the rate limiter compute with (money's bound is money.MAX_USD).
MAX_TOKENS = 10**15  # token amounts, token rates and token caps
MAX_REQUESTS_PER_MINUTE = 10**9
# A custom period lies between these (in UTC): period arithmetic near the years 1 and 9999 would overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


def _money(value: Any, what: str) -> Decimal | None:
    return None if value is None else usd_setting(value, what=what, allow_zero=True)


def _positive_money(value: Any, what: str) -> Decimal | None:
    return None if value is None else usd_setting(value, what=what)


def _scope(value: Any) -> Scope:
    if isinstance(value, Scope):
        return value
    return Scope.parse(value)


def _aware(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


ScopeField = Annotated[Scope, BeforeValidator(_scope)]


class ThresholdConfig(_Model):
    at: Decimal = Field(gt=0, le=10)  # pydantic refuses a NaN or infinite Decimal
    action: Literal["alert", "downgrade", "require_approval", "block"] = "alert"
    model: str | None = None
    # spend: reached when the period's spend passes ``at``; forecast: when the spend projected to the period's end
    # at the current run rate passes it (from a tenth of the period on), so the action starts before the money
    # is spent. A block acts on money spent only.
    when: Literal["spend", "forecast"] = "spend"

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, v: Any) -> Any:
        return Decimal(str(v)) if isinstance(v, float | int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _model_for_downgrade(self) -> ThresholdConfig:
        if self.action == "downgrade" and not self.model:
            raise ValueError("a downgrade threshold needs the model to downgrade to (model: gpt-4o-mini)")
        if self.action != "downgrade" and self.model:
            raise ValueError(f"'model' only applies to downgrade thresholds, not {self.action}")
        if self.when == "forecast" and self.action == "block":
            raise ValueError("a block acts on money spent, not on a forecast (when: forecast takes alert, downgrade "
                             "or require_approval)")
        return self

    def reached(self, used: Decimal, projected: Decimal) -> bool:
        """Whether the threshold is reached at ``used`` (spent / amount) or, for ``when: forecast``, ``projected``."""
        return (projected if self.when == "forecast" else used) >= self.at


class BudgetConfig(_Model):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
    scope: ScopeField = Scope()
    amount_usd: Decimal | None = None
    amount_tokens: int | None = Field(None, gt=0, le=MAX_TOKENS)
    period: Literal["day", "week", "month", "quarter", "custom"] = "month"
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None
    hard: bool = False
    thresholds: tuple[ThresholdConfig, ...] = ()

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, arbitrary_types_allowed=True)

    @field_validator("amount_usd", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> Decimal | None:
        return _positive_money(v, "amount_usd")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        zone(v)
        return v

    @field_validator("start", "end", mode="before")
    @classmethod
    def _dates(cls, v: Any) -> Any:
        if isinstance(v, date) and not isinstance(v, datetime):
            return _aware(v)
        return v

    @field_validator("start", "end")
    @classmethod
    def _in_range(cls, v: datetime | None) -> datetime | None:
        try:
            in_range = v is None or EARLIEST <= _aware(v).astimezone(UTC) <= LATEST
        except OverflowError:  # 0001-01-01T00:00+14:00 is before the year 1 in UTC
            in_range = False
        if not in_range:
            raise ValueError(f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
        return v

    @model_validator(mode="after")
    def _check(self) -> BudgetConfig:
        if (self.amount_usd is None) == (self.amount_tokens is None):
            raise ValueError("give exactly one of amount_usd or amount_tokens")
        if self.period == "custom":
            if self.start is None or self.end is None:
                raise ValueError("a custom period needs start and end")
            if _aware(self.end) <= _aware(self.start):
                raise ValueError("end must be after start")
        elif self.start is not None or self.end is not None:
            raise ValueError("start and end only apply to period: custom")
        ats = [t.at for t in self.thresholds]
        if len(set(ats)) != len(ats):
            raise ValueError("two thresholds at the same level: give each level one action")
        for lower, higher in zip(self.thresholds, self.thresholds[1:], strict=False):
            if higher.at < lower.at:
                raise ValueError("thresholds must be in ascending order of 'at'")
            if SEVERITY[higher.action] < SEVERITY[lower.action] and higher.action != "alert":
                raise ValueError(
                    f"threshold at {higher.at} ({higher.action}) is milder than the one at {lower.at} "
                    f"({lower.action}): a higher level cannot relax a lower one"
                )
        if self.amount_tokens is not None and any(t.action == "downgrade" for t in self.thresholds):
            pass  # downgrading saves tokens only when the cheaper model is terser; allowed, it is the user's call
        return self

    @property
    def unit(self) -> str:
        return "usd" if self.amount_usd is not None else "tokens"

    @property
    def amount(self) -> Decimal:
        return self.amount_usd if self.amount_usd is not None else Decimal(self.amount_tokens or 0)

    def custom_window(self) -> tuple[datetime, datetime] | None:
        if self.period != "custom" or self.start is None or self.end is None:
            return None
        return _aware(self.start), _aware(self.end)

    def to_public(self) -> dict[str, Any]:
        return {
            "name": self.name, "scope": self.scope.as_dict(), "unit": self.unit,
            "amount": format(self.amount, "f"), "period": self.period, "timezone": self.timezone,
            "hard": self.hard,
            "thresholds": [{"at": float(t.at), "action": t.action, **({"model": t.model} if t.model else {}),
                            **({"when": t.when} if t.when != "spend" else {})} for t in self.thresholds],
        }  # fmt: skip


class LimitConfig(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    scope: ScopeField = Scope()
    per: Literal["key", "user", "scope"] = "key"  # one bucket per key, per end user, or one for the whole scope
    requests_per_minute: int | None = Field(None, gt=0, le=MAX_REQUESTS_PER_MINUTE)
    tokens_per_minute: int | None = Field(None, gt=0, le=MAX_TOKENS)
    usd_per_hour: Decimal | None = None

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, arbitrary_types_allowed=True)

    @field_validator("usd_per_hour", mode="before")
    @classmethod
    def _usd(cls, v: Any) -> Decimal | None:
        return _positive_money(v, "usd_per_hour")

    @model_validator(mode="after")
    def _any(self) -> LimitConfig:
        if self.requests_per_minute is None and self.tokens_per_minute is None and self.usd_per_hour is None:
            raise ValueError("a limit needs requests_per_minute, tokens_per_minute or usd_per_hour")
        return self


class RuleConfig(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    scope: ScopeField = Scope()
    models: tuple[str, ...] = ()  # the rule applies only to these model globs (default: every model)
    allow_models: tuple[str, ...] = ()
    deny_models: tuple[str, ...] = ()
    max_input_tokens: int | None = Field(None, gt=0, le=MAX_TOKENS)
    max_output_tokens: int | None = Field(None, gt=0, le=MAX_TOKENS)
    on_exceed: Literal["reject", "clamp"] = "reject"
    max_cost_per_call_usd: Decimal | None = None
    require_approval: bool = False

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, arbitrary_types_allowed=True)

    @field_validator("max_cost_per_call_usd", mode="before")
    @classmethod
    def _usd(cls, v: Any) -> Decimal | None:
        return _money(v, "max_cost_per_call_usd")

    @model_validator(mode="after")
    def _self_consistent(self) -> RuleConfig:
        both = set(self.allow_models) & set(self.deny_models)
        if both:
            raise ValueError(f"rule {self.name} both allows and denies {', '.join(sorted(both))}")
        return self

    def applies(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, g) for g in self.models)


class PolicyDefaults(_Model):
    # the reservation's output ceiling when a call sets no max_tokens
    default_max_output_tokens: int = Field(16384, gt=0, le=MAX_TOKENS)


def contradictions(rules: tuple[RuleConfig, ...] | list[RuleConfig]) -> list[str]:
    """Pairs of rules that say opposite things about the same calls."""
    problems = []
    for i, a in enumerate(rules):
        for b in rules[i + 1 :]:
            if a.scope != b.scope or set(a.models) != set(b.models):
                continue
            for pattern in sorted(set(a.allow_models) & set(b.deny_models)):
                problems.append(f"rules {a.name!r} and {b.name!r} contradict: {a.name} allows {pattern!r} for "
                                f"scope {a.scope}, {b.name} denies it")  # fmt: skip
            for pattern in sorted(set(a.deny_models) & set(b.allow_models)):
                problems.append(f"rules {a.name!r} and {b.name!r} contradict: {a.name} denies {pattern!r} for "
                                f"scope {a.scope}, {b.name} allows it")  # fmt: skip
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"rule names must be unique: {', '.join(dupes)}")
    return problems
