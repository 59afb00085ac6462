"""Prometheus metrics of one gateway (its own registry: no process-global state).

Label values must come from a bounded set, or a client could grow ``/metrics`` (and the gateway's memory)
without end by sending made-up model names. So the ``model`` label is the catalog's name of the price row a
call was priced with (``gpt-4o`` for ``gpt-4o-2024-08-06``), or a model the config names (an alias, its
target, a ``prices:`` row); anything else is ``other``. Providers, routes, statuses and error codes are the
gateway's own words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tokenops.ledger.events import SpendEvent

OTHER = "other"


class GatewayMetrics:
    """``multiprocess_dir``: with several worker processes (``serve --workers N``), each writes its values there
    (prometheus_client's multiprocess mode) and ``/metrics`` answers with all of them, whichever worker serves it."""

    def __init__(self, known_models: Iterable[str] = (), row_model: Callable[[str], str | None] | None = None,
                 multiprocess_dir: str | None = None) -> None:  # fmt: skip
        self.multiprocess_dir = multiprocess_dir
        self.known_models = frozenset(known_models)
        self.row_model = row_model or (lambda row_id: None)  # price row id -> the catalog's model name
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
        self.fallbacks = Counter("tokenops_fallbacks", "Calls sent on to a fallback model, by the provider that failed "
                                 "and the reason", ["provider", "reason"], registry=self.registry)  # fmt: skip
        self.anomalies = Counter("tokenops_anomalies", "Anomalies the watch recorded, by signal and severity",
                                 ["signal", "severity"], registry=self.registry)  # fmt: skip
        self.estimated = Counter("tokenops_usage_estimated", "Calls whose usage was estimated, by reason",
                                 ["reason"], registry=self.registry)  # fmt: skip
        self.spool_healthy = Gauge("tokenops_spool_healthy", "1 while the spool can record calls, else 0",
                                   registry=self.registry, multiprocess_mode="min")  # fmt: skip
        self.spool_deferred = Gauge("tokenops_spool_deferred", "Answered calls waiting for the spool's disk",
                                    registry=self.registry, multiprocess_mode="livesum")  # fmt: skip
        self.writer_restarts = Gauge("tokenops_writer_restarts", "Times the ledger writer process was restarted",
                                     registry=self.registry, multiprocess_mode="livesum")  # fmt: skip

    def model_label(self, e: SpendEvent) -> str:
        if e.price_row_id:
            model = self.row_model(e.price_row_id)
            if model:
                return model
        return e.model_used if e.model_used in self.known_models else OTHER

    def observe(self, e: SpendEvent) -> None:
        model = self.model_label(e)
        if e.usage_estimated:
            self.estimated.labels(e.error_code if e.error_code and e.error_code.startswith("usage_") else
                                  "incomplete").inc()  # fmt: skip
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
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)
