"""Router stage: which provider serves the requested model, and under which upstream name.

In order: an alias from the config's ``models:`` list; a ``provider/model`` prefix naming a configured
provider; the configured provider (of the route's wire format) whose price catalog knows the model; else the
first provider of the route's format (a model missing from the catalog is still served, and recorded as
unpriced rather than $0).

Before that, the config's ``routing:`` (:mod:`tokenops.routing`) may choose the model: a call tagged with a task
of the task matrix, whose model is a tier's model or ``tokenops/auto``, is served by the cheapest healthy model
of the task's tier or a higher one, priced for this call (its estimated input and its output limit, at each
model's price row now); models with no price rank after priced ones. The event keeps the model asked for
(``model_requested``), the one that served (``model_used``) and why (``route_reason``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenops.call import Call
from tokenops.config import Config
from tokenops.errors import ConfigError, GatewayError
from tokenops.optimize.router import prompt_text
from tokenops.policy.estimate import requested_output, typical_input
from tokenops.pricing.catalog import PriceCatalog
from tokenops.pricing.model import PriceRow, price_usage
from tokenops.routing import AUTO_MODEL
from tokenops.usage import Usage

# route -> {another provider kind the gateway translates it to: that kind's route}
_TO_OTHERS = {"openai": "chat.completions", "anthropic": "messages", "gemini": "gemini.generate"}
TRANSLATED: dict[str, dict[str, str]] = {
    route: {kind: target for kind, target in _TO_OTHERS.items() if kind != own}
    for route, own in (("chat.completions", "openai"), ("messages", "anthropic"), ("gemini.generate", "gemini"),
                       ("gemini.stream", "gemini"))
}


class RouterStage:
    def __init__(self, config: Config, catalog: PriceCatalog):
        self.config = config
        self.catalog = catalog
        self.aliases = {a.name: a for a in config.models}
        self.by_kind: dict[str, list[str]] = {}
        for name in config.providers:
            self.by_kind.setdefault(config.provider_kind(name), []).append(name)
        for kind, names in self.by_kind.items():
            names.sort(key=lambda n: n != kind)  # the provider named like its kind comes first
        self.price_ids = {name: self._price_ids(name) for name in config.providers}
        self.routing = config.routing
        self.default_output = config.policy.default_max_output_tokens
        # whether a provider may take calls now (the fallback issue's circuit breaker); every provider, until then
        self.healthy: Callable[[str], bool] = lambda provider: True
        self._check_tiers()
        self.difficulty: Any = None  # the auto router (routing.auto): loaded now, so a bad model file fails the start
        if self.routing.auto is not None:
            from tokenops.optimize.router import load_router

            self.difficulty = load_router(self.routing.auto.model_file)

    def _check_tiers(self) -> None:
        """Every model of a tier must be servable: an alias, a configured ``provider/`` prefix, or a model a
        configured provider's price catalog knows (a clear error at start, not a 400 on the first routed call)."""
        now = datetime.now(UTC)
        for tier, models in self.routing.tiers.items():
            for model in models:
                prefix, sep, rest = model.partition("/")
                if model in self.aliases or (sep and prefix in self.config.providers and rest):
                    continue
                if not any(self.catalog.lookup(ids, model, now) for ids in self.price_ids.values()):
                    raise ConfigError(f"model {model!r} of tier {tier!r} is served by no configured provider: name "
                                      "it as an alias (models:), as provider/model, or add its price under prices:",
                                      file=self.config.source, path=f"routing.tiers.{tier}")  # fmt: skip

    def _price_ids(self, name: str) -> tuple[str, ...]:
        return self.config.price_catalogs(name)

    def resolve(self, model: str, flavor: str, at: datetime, route: str | None = None) -> tuple[str, str]:
        """(provider, upstream model) for ``model`` called in ``flavor``'s format. On a ``route`` the gateway
        translates (:data:`TRANSLATED`), a provider of another kind may serve it: named by an alias or prefix, or
        the one whose catalog knows the model when none of the route's own kind does."""
        others = TRANSLATED.get(route or "", {})
        alias = self.aliases.get(model)
        if alias is not None:
            return self._check_kind(alias.provider, flavor, model, others), alias.model
        prefix, sep, rest = model.partition("/")
        if sep and prefix in self.config.providers and rest:
            return self._check_kind(prefix, flavor, model, others), rest
        candidates = self.by_kind.get(flavor, [])
        for name in candidates:
            if self.catalog.lookup(self.price_ids[name], model, at) is not None:
                return name, model
        for kind in others:
            for name in self.by_kind.get(kind, []):
                if self.catalog.lookup(self.price_ids[name], model, at) is not None:
                    return name, model
        for kind, names in self.by_kind.items():  # a model only a provider of a kind this route cannot reach knows
            if kind != flavor and kind not in others:  # (a Claude model on the Responses API): say where it goes,
                for name in names:  # rather than send it where it is unknown, to be answered 404 and unpriced
                    if self.catalog.lookup(self.price_ids[name], model, at) is not None:
                        self._check_kind(name, flavor, model, others)
        if not candidates:
            raise GatewayError(
                400,
                "no_provider",
                f"no provider speaking the {flavor} API is configured for model {model!r}",
                param="model",
            )
        return candidates[0], model

    def _check_kind(self, provider: str, flavor: str, model: str, others: dict[str, str]) -> str:
        kind = self.config.provider_kind(provider)
        if kind != flavor and kind not in others:
            route = {"anthropic": "/v1/messages", "gemini": "/v1beta/models/{model}:generateContent"}.get(
                kind, "/v1/chat/completions")
            if kind in TRANSLATED["chat.completions"]:
                route += " or /v1/chat/completions (translated)"
            raise GatewayError(
                400,
                "wrong_route",
                f"model {model!r} is served by provider {provider!r}, which speaks the {kind} API: call {route}",
                param="model",
            )
        return provider

    def quote(self, call: Call, model: str) -> PriceRow | None:
        """The price row a call to ``model`` would be priced with now (None: unknown or unroutable): for a model
        other than the routed one (a budget's downgrade target)."""
        try:
            provider, upstream_model = self.resolve(model, call.flavor, call.ts, call.route)
        except GatewayError:
            return None
        return self.catalog.lookup(self.price_ids[provider], upstream_model, call.ts)

    def upstream_name(self, call: Call, model: str) -> str | None:
        """The upstream name of ``model`` (through an alias or a ``provider/`` prefix), None if unroutable."""
        try:
            return self.resolve(model, call.flavor, call.ts, call.route)[1]
        except GatewayError:
            return None

    async def __call__(self, call: Call) -> None:
        self.route(call)

    def route(self, call: Call) -> None:
        """Route the call's requested model: provider, upstream name and route, and the price row it would be
        priced with now (for the policy stage's reservation), and its fallbacks. A task's call may be served by
        another model."""
        if call.client_model is None:
            call.client_model = call.model_requested
        self._choose(call)
        self.place(call)
        chain = self.routing.fallbacks.get(call.model_requested, ())
        call.fallbacks = chain
        call.fallback_rows = tuple(self.quote(call, m) for m in chain)

    def provider_of(self, call: Call, model: str) -> str | None:
        """The provider a call to ``model`` would go to (None: unroutable on this call's route)."""
        try:
            return self.resolve(model, call.flavor, call.ts, call.route)[0]
        except GatewayError:
            return None

    def fall_back(self, call: Call, model: str, why: str) -> None:
        """Send the call to ``model`` instead (its provider failed): routed as that model, without a task's choice."""
        call.routed_from = call.routed_from or call.model_requested
        call.model_requested = model
        call.route_reason = why
        call.response_headers["x-tokenops-routed-from"] = call.routed_from
        call.response_headers["x-tokenops-route-reason"] = why
        self.place(call)

    def place(self, call: Call) -> None:
        """The provider, upstream name and route of the call's model, and its price row now."""
        call.provider_name, call.upstream_model = self.resolve(call.model_requested, call.flavor, call.ts, call.route)
        call.price_providers = self.price_ids[call.provider_name]
        call.routed_model = call.model_requested
        call.quote_row = self.catalog.lookup(call.price_providers, call.upstream_model, call.ts)
        kind = self.config.provider_kind(call.provider_name)
        call.upstream_route = call.route if kind == call.flavor else TRANSLATED[call.route][kind]
        if call.upstream_route == "gemini.generate" and call.stream:
            call.upstream_route = "gemini.stream"

    # --- the task matrix ------------------------------------------------------------------------
    def _choose(self, call: Call) -> None:
        requested = call.model_requested
        task = call.tags.get("task")
        routable = requested == AUTO_MODEL or self.routing.tier_of(requested) is not None
        if task is not None and routable and task in self.routing.tasks:
            chosen, why = self._for_task(call, task)
        elif requested == AUTO_MODEL and self.routing.auto is not None:
            chosen, why = self._auto(call)
        elif requested == AUTO_MODEL:
            tasks = ", ".join(self.routing.tasks) or "none configured"
            raise GatewayError(400, "invalid_request", f"model {AUTO_MODEL!r} needs a task tag (X-TokenOps-Tags: "
                               f"task=…) naming a task of the routing config's task matrix ({tasks})",
                               param="model")  # fmt: skip
        else:
            return
        if chosen != requested:
            call.routed_from = call.routed_from or requested
            call.route_reason = why
            call.model_requested = chosen
            call.response_headers["x-tokenops-routed-from"] = requested
            call.response_headers["x-tokenops-route-reason"] = why

    def _for_task(self, call: Call, task: str) -> tuple[str, str]:
        """The cheapest healthy model that may serve ``task`` for this call, and why it was chosen."""
        tier = self.routing.tasks[task]
        ranked: list[tuple[bool, Decimal, int, str]] = []
        for order, model in enumerate(self.routing.eligible(task)):
            try:
                provider, upstream = self.resolve(model, call.flavor, call.ts, call.route)
            except GatewayError:
                continue  # not servable from this route's format
            if not self.healthy(provider):
                continue
            row = self.catalog.lookup(self.price_ids[provider], upstream, call.ts)
            if row is None and model not in self.aliases and "/" not in model:
                continue  # a model no provider of a usable kind knows: it would be sent to the wrong provider
            out = requested_output(call) or self.default_output
            cost = None if row is None else price_usage(
                Usage(input_tokens=typical_input(call, upstream), output_tokens=out * call.choices), row).total
            ranked.append((cost is None, cost if cost is not None else Decimal(0), order, model))
        if not ranked:
            raise GatewayError(503, "no_model_available", f"no healthy model of tier {tier!r} or above can serve task "
                               f"{task!r} on this route: {', '.join(self.routing.eligible(task))}")  # fmt: skip
        unpriced, cost, _order, model = min(ranked)
        price = "unpriced" if unpriced else f"${cost:f} estimated"
        return model, f"task {task}: cheapest healthy model of tier {tier} or above ({price})"

    def _auto(self, call: Call) -> tuple[str, str]:
        """The difficulty router's choice between ``routing.auto``'s strong and weak model, from the prompt."""
        auto = self.routing.auto
        assert auto is not None and self.difficulty is not None
        prompt = prompt_text(call.route, call.body)
        p = self.difficulty.p_strong(prompt)
        strong = p >= auto.threshold
        model = auto.strong if strong else auto.weak
        for candidate in (model, auto.weak if strong else auto.strong):  # the other one if this one's provider is down
            provider = self.provider_of(call, candidate)
            if provider is not None and self.healthy(provider):
                model = candidate
                break
        sign = ">=" if strong else "<"
        return model, f"auto: p_strong {p:.3f} {sign} {auto.threshold} ({'strong' if strong else 'weak'} model)"
