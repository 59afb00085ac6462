"""The state of one gateway call as it passes through the stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokenops.keys import KeyRecord
from tokenops.pricing.model import PriceRow
from tokenops.tokens import InputShape

if TYPE_CHECKING:
    from tokenops.ledger.events import SpendEvent


@dataclass(slots=True)
class Call:
    request_id: str
    route: str  # "chat.completions" | "embeddings" | "messages"
    flavor: str  # "openai" | "anthropic": the client's wire format and error shape
    started: float  # perf_counter() at arrival
    ts: datetime  # wall-clock arrival, UTC
    headers: dict[str, str]  # lower-cased request headers
    query: str = ""  # the request's query string, passed to the provider as it is (e.g. Anthropic's ?beta=true)
    body: dict[str, Any] = field(default_factory=dict)
    shape: InputShape = InputShape()  # what the input is made of: text, images, parts the body does not bound
    choices: int = 1  # answers the call asks for (n): its output is billed once per answer
    stream: bool = False
    key: KeyRecord | None = None
    tags: dict[str, str] = field(default_factory=dict)
    missing_tags: tuple[str, ...] = ()
    end_user: str | None = None
    model_requested: str = ""
    provider_name: str = ""
    upstream_model: str = ""
    upstream_route: str = ""  # the provider's route: ``route`` itself, or the one the call is translated to
    price_providers: tuple[str, ...] = ()  # where to look the price up: configured name, then catalog id
    cache: str = "off"
    response_headers: dict[str, str] = field(default_factory=dict)
    price_row: PriceRow | None = None
    body_bytes: int = 0  # size of the request body: an upper bound of its input tokens (a token is >= 1 byte)
    approval_id: str | None = None  # the approval grant that let this call through
    downgraded_from: str | None = None  # the model the client asked for, when a budget downgraded the call
    client_model: str | None = None  # the model the client asked for, kept by the router before it chooses any other
    routed_from: str | None = None  # the model the router was asked for, when it chose another (a task, a fallback)
    route_reason: str | None = None  # why the call is served by another model than the one asked for
    reservation: Any = None  # the policy engine's claims on budgets and rate limits, settled by the meter
    # a call an earlier process started (a background response, a batch) and this one meters when it ends: its
    # reservation died with that process, so its cost is charged to its budgets' counters when it is settled
    resumed: bool = False
    output_limit: int | None = None  # an output limit the gateway sends upstream (a clamp, or a hard bound)
    recorded: SpendEvent | None = None  # the one event this call was recorded as (a call is recorded once)
    # (tokens, cost) the call's maximum as the gateway worked it out itself, for the policy engine to reserve
    # instead of estimating it from the body: a batch, whose lines are bounded one by one at batch prices
    preset_max: tuple[int, Decimal | None] | None = None
    # set by the router: the model it routed (the requested one, when the call was routed since) and the price
    # row a call to it would be priced with now, which the policy reserves on (the meter prices with the row of
    # the model that answered)
    routed_model: str | None = None
    quote_row: PriceRow | None = None
    # the models to try, in order, when the provider fails before answering (routing.fallbacks), and the price row
    # each would be priced with now: the reservation covers the dearest
    fallbacks: tuple[str, ...] = ()
    fallback_rows: tuple[PriceRow | None, ...] = ()
    cache_keys: tuple[str, str] | None = None  # a cache miss: (exact key, semantic context key) to keep the answer
    receive: Any = None  # the ASGI receive callable, for the stage that reads the body
    path_model: str | None = None  # a model named by the path (Gemini's /models/{model}:generateContent)
