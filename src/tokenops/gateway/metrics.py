"""Prometheus metrics of one gateway (its own registry: no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tokenops.ledger.events import SpendEvent


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tokenops_requests", "Gateway calls by outcome", ["route", "provider", "model", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "tokenops_tokens", "Tokens metered", ["provider", "model", "kind"], registry=self.registry
        )
        self.cost = Counter(
            "tokenops_cost_usd", "Metered spend in USD (the ledger holds the exact amounts)", ["provider", "model"],
            registry=self.registry,
        )  # fmt: skip
        self.unpriced = Counter(
            "tokenops_unpriced_requests", "Calls with no known price", ["provider", "model"], registry=self.registry
        )
        self.latency = Histogram(
            "tokenops_request_duration_seconds", "Call duration through the gateway", ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )  # fmt: skip
        self.rejected = Counter("tokenops_rejected", "Calls refused before reaching a provider", ["code"],
                                registry=self.registry)  # fmt: skip

    def observe(self, e: SpendEvent) -> None:
        model = e.model_used or ""
        self.requests.labels(e.route, e.provider, model, e.status).inc()
        if e.usage.total_tokens:
            self.tokens.labels(e.provider, model, "input").inc(e.usage.input_tokens)
            self.tokens.labels(e.provider, model, "output").inc(e.usage.output_tokens)
            if e.usage.cache_read_tokens:
                self.tokens.labels(e.provider, model, "cache_read").inc(e.usage.cache_read_tokens)
        if e.cost_usd is None:
            self.unpriced.labels(e.provider, model).inc()
        elif e.cost_usd:
            self.cost.labels(e.provider, model).inc(float(e.cost_usd))
        if e.latency_ms is not None:
            self.latency.labels(e.route).observe(e.latency_ms / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
