"""Router stage: which provider serves the requested model, and under which upstream name.

In order: an alias from the config's ``models:`` list; a ``provider/model`` prefix naming a configured
provider; the configured provider (of the route's wire format) whose price catalog knows the model; else the
first provider of the route's format (a model missing from the catalog is still served, and recorded as
unpriced rather than $0).
"""

from __future__ import annotations

from datetime import datetime

from tokenops.call import Call
from tokenops.config import Config
from tokenops.errors import GatewayError
from tokenops.pricing.catalog import PriceCatalog
from tokenops.pricing.model import PriceRow

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
        priced with now (for the policy stage's reservation)."""
        call.provider_name, call.upstream_model = self.resolve(call.model_requested, call.flavor, call.ts, call.route)
        call.price_providers = self.price_ids[call.provider_name]
        call.routed_model = call.model_requested
        call.quote_row = self.catalog.lookup(call.price_providers, call.upstream_model, call.ts)
        kind = self.config.provider_kind(call.provider_name)
        call.upstream_route = call.route if kind == call.flavor else TRANSLATED[call.route][kind]
        if call.upstream_route == "gemini.generate" and call.stream:
            call.upstream_route = "gemini.stream"
