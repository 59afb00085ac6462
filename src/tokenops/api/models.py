"""Request and response bodies of the admin API (they make its OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tokenops.money import MAX_USD, PLACES
from tokenops.policy.config import MAX_REQUESTS_PER_MINUTE, MAX_TOKENS

# Money travels as decimal strings; the rule (tokenops.money.usd_setting) is checked past the schema, with a 400.
_MONEY = f"a decimal string, at most {MAX_USD:f} (10^15) and at most {PLACES} decimal places"
_MONEY_LENGTH = 64


class ErrorDetail(BaseModel):
    type: str
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(min_length=1, max_length=200)
    tags: dict[str, str] = {}
    lock: list[str] = Field(default=[], description="Tag names requests may not override.")
    end_user: str | None = Field(default=None, min_length=1, max_length=256,
                                 description="For a key handed to one person: the end user of all its calls, "
                                 "whatever the request says.")  # fmt: skip


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    tags: dict[str, str]
    locked_tags: list[str]
    created_at: str | None
    revoked_at: str | None
    status: Literal["active", "revoked"]
    end_user: str | None = Field(default=None, description="The end user of all the key's calls, if it names one.")


class KeyCreated(BaseModel):
    id: str
    key: str = Field(description="The key itself: shown once, stored only as a hash.")
    name: str
    tags: dict[str, str]
    end_user: str | None = None


class ThresholdIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    at: float = Field(gt=0, le=10, allow_inf_nan=False)
    action: Literal["alert", "downgrade", "require_approval", "block"] = "alert"
    model: str | None = None


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    scope: dict[str, str] = {}
    amount_usd: str | None = Field(None, max_length=_MONEY_LENGTH, description=f'USD, > 0: {_MONEY}, e.g. "250.00".')
    amount_tokens: int | None = Field(None, gt=0, le=MAX_TOKENS)
    period: Literal["day", "week", "month", "quarter", "custom"] = "month"
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None
    hard: bool = False
    thresholds: list[ThresholdIn] = []


class ThresholdState(BaseModel):
    at: float
    action: str
    reached: bool
    model: str | None = None


class BudgetStatus(BaseModel):
    name: str
    scope: dict[str, str]
    unit: Literal["usd", "tokens"]
    amount: str
    period: str
    timezone: str
    hard: bool
    source: Literal["config", "api"]
    period_start: str
    period_end: str
    spent: str
    reserved: str
    remaining: str
    forecast_at_period_end: str
    used_fraction: float
    thresholds: list[ThresholdState]


class BudgetList(BaseModel):
    budgets: list[BudgetStatus]


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    until: datetime | None = Field(None, description="The grant ends then (ISO 8601).")
    max_usd: str | None = Field(
        None, max_length=_MONEY_LENGTH, description=f"Spend cap of the grant in USD, > 0: {_MONEY}."
    )


class ApprovalOut(BaseModel):
    id: str
    status: Literal["pending", "approved", "denied", "expired"]
    key_id: str | None
    reason: str
    model: str | None
    message: str | None
    requested_at: str
    decided_at: str | None
    decided_by: str | None
    until: str | None
    max_usd: str | None


class ApprovalList(BaseModel):
    approvals: list[ApprovalOut]


class AlertOut(BaseModel):
    id: str
    kind: str
    budget: str
    period_start: str
    threshold: float | None
    message: str
    fired_at: str


class AlertList(BaseModel):
    alerts: list[AlertOut]


class SpendReportOut(BaseModel):
    rows: list[dict[str, Any]] = Field(description="The --by columns, then requests, input_tokens, output_tokens, "
                                                   "cost_usd (exact decimal string: the priced calls' cost) and "
                                                   "unpriced_requests (the calls with no known price, not in "
                                                   "cost_usd).")  # fmt: skip
    total_cost_usd: str = Field(description="The sum of the rows' cost_usd (priced calls only).")
    unpriced_requests: int = Field(description="The calls of the rows with no known price.")


class PolicyList(BaseModel):
    items: list[dict[str, Any]]


class LimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    scope: dict[str, str] = {}
    per: Literal["key", "user", "scope"] = "key"
    requests_per_minute: int | None = Field(None, gt=0, le=MAX_REQUESTS_PER_MINUTE)
    tokens_per_minute: int | None = Field(None, gt=0, le=MAX_TOKENS)
    usd_per_hour: str | None = Field(None, max_length=_MONEY_LENGTH, description=f"USD per hour, > 0: {_MONEY}.")


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    scope: dict[str, str] = {}
    models: list[str] = []
    allow_models: list[str] = []
    deny_models: list[str] = []
    max_input_tokens: int | None = Field(None, gt=0, le=MAX_TOKENS)
    max_output_tokens: int | None = Field(None, gt=0, le=MAX_TOKENS)
    on_exceed: Literal["reject", "clamp"] = "reject"
    max_cost_per_call_usd: str | None = Field(None, max_length=_MONEY_LENGTH, description=f"USD, ≥ 0: {_MONEY}.")
    require_approval: bool = False
