"""Which catalog a configured provider's prices come from: a provider of kind openai that is not OpenAI (a
self-hosted vLLM, another vendor's OpenAI-compatible API) never borrows another vendor's price for a model name
they share; it is priced by its own `prices:` rows or the catalog its `catalog:` names, else unpriced."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from harness import GatewayHarness
from tokenops.config import parse_config
from tokenops.gateway.stages.router import RouterStage
from tokenops.pricing.catalog import PriceCatalog, load_catalog

AT = datetime(2025, 10, 15, tzinfo=UTC)

CONFIG = """
providers:
  openai:     {base_url: https://api.openai.com/v1}
  oai:        {base_url: https://api.openai.com/v1, kind: openai}
  oai-eu:     {base_url: https://eu.api.openai.com/v1}
  anthropic:  {base_url: https://api.anthropic.com}
  claude:     {base_url: https://api.anthropic.com/v1, kind: anthropic}
  local:      {base_url: "http://127.0.0.1:8000/v1", kind: openai}
  vllm:       {base_url: "http://gpu-box:8000/v1"}
  lookalike:  {base_url: https://api.openai.com.example.test/v1}
  routed:     {base_url: https://api.cerebras.ai/v1, catalog: cerebras}
  proxy:      {base_url: https://llm-proxy.example.test/anthropic, kind: anthropic}
  fast:       {base_url: https://api.groq.com/openai/v1, catalog: groq}
prices:
  - {provider: vllm, model: gpt-oss-120b, input_per_mtok: "0.01", output_per_mtok: "0.02", effective_from: 2025-01-01}
"""


@pytest.fixture(scope="module")
def cfg() -> Any:
    return parse_config(CONFIG)


@pytest.fixture(scope="module")
def catalog(cfg: Any) -> PriceCatalog:
    return load_catalog(tuple(e.to_row(cfg.source) for e in cfg.prices))


@pytest.mark.parametrize(
    ("name", "ids"),
    [
        ("openai", ("openai",)),  # named like the catalog: its prices by name
        ("oai", ("oai", "openai")),  # OpenAI's own API under another name
        ("oai-eu", ("oai-eu", "openai")),  # OpenAI's EU data-residency host
        ("anthropic", ("anthropic",)),
        ("claude", ("claude", "anthropic")),
        ("local", ("local",)),  # a self-hosted OpenAI-compatible server: nobody else's prices
        ("vllm", ("vllm",)),  # kind openai by default, still not OpenAI
        ("lookalike", ("lookalike",)),  # not a subdomain of api.openai.com
        ("routed", ("routed", "cerebras")),  # its catalog: says whose prices it pays
        ("proxy", ("proxy",)),  # an Anthropic-format API elsewhere is not Anthropic either
        ("fast", ("fast", "groq")),
    ],
)
def test_price_catalogs_of_a_provider(cfg: Any, name: str, ids: tuple[str, ...]) -> None:
    assert cfg.price_catalogs(name) == ids


def test_the_router_prices_each_provider_under_its_catalogs(cfg: Any, catalog: PriceCatalog) -> None:
    router = RouterStage(cfg, catalog)
    assert router.price_ids == {name: cfg.price_catalogs(name) for name in cfg.providers}


def test_a_self_hosted_server_never_borrows_another_vendors_price(cfg: Any, catalog: PriceCatalog) -> None:
    # genai-prices lists gpt-oss-120b under openai (a price imported from OpenRouter); a local vLLM serving the
    # open-weights model is not OpenAI and must not be billed at it
    assert catalog.lookup(cfg.price_catalogs("openai"), "gpt-oss-120b", AT) is not None
    assert catalog.lookup(cfg.price_catalogs("local"), "gpt-oss-120b", AT) is None
    assert catalog.lookup(cfg.price_catalogs("lookalike"), "gpt-4o", AT) is None
    assert catalog.lookup(cfg.price_catalogs("proxy"), "claude-sonnet-4-5", AT) is None
    # ... unless the config gives it a price, or its catalog: names whose prices it pays
    own = catalog.lookup(cfg.price_catalogs("vllm"), "gpt-oss-120b", AT)
    assert own is not None and (own.provider, own.input_per_mtok) == ("vllm", Decimal("0.01"))
    routed = catalog.lookup(cfg.price_catalogs("routed"), "gpt-oss-120b", AT)
    assert routed is not None and routed.provider == "cerebras"
    # OpenAI's own API keeps OpenAI's prices whatever the provider is called
    for name in ("openai", "oai", "oai-eu"):
        row = catalog.lookup(cfg.price_catalogs(name), "gpt-4o", AT)
        assert row is not None and (row.provider, row.input_per_mtok) == ("openai", Decimal("2.5"))


async def test_the_gateway_records_a_self_hosted_call_as_unpriced(make_gateway: Any) -> None:
    """The test gateway's `local` provider (kind openai, the fake provider's URL) serving gpt-oss-120b: unpriced,
    never OpenAI's catalog price; the same model through the provider named `openai` is priced."""
    h: GatewayHarness = await make_gateway()
    body = {"messages": [{"role": "user", "content": "hi"}], "fake": {"usage": {"input": 1000, "output": 100}}}
    r = await h.client.post("/v1/chat/completions", json={"model": "local/gpt-oss-120b", **body}, headers=h.auth())
    assert r.status_code == 200, r.text
    assert r.headers["x-tokenops-cost-usd"] == "unpriced"
    ev = h.event(r.headers["x-tokenops-request-id"])
    assert (ev.provider, ev.cost_usd, ev.price_row_id) == ("local", None, None)
    r = await h.client.post("/v1/chat/completions", json={"model": "openai/gpt-oss-120b", **body}, headers=h.auth())
    assert r.status_code == 200 and r.headers["x-tokenops-cost-usd"] != "unpriced"


async def test_a_config_price_prices_the_self_hosted_model(make_gateway: Any) -> None:
    extra = """
prices:
  - {provider: local, model: gpt-oss-120b, input_per_mtok: "0.01", output_per_mtok: "0.02", effective_from: 2025-01-01}
"""
    h: GatewayHarness = await make_gateway(extra)
    body = {"model": "local/gpt-oss-120b", "messages": [{"role": "user", "content": "hi"}],
            "fake": {"usage": {"input": 1000, "output": 100}}}  # fmt: skip
    r = await h.client.post("/v1/chat/completions", json=body, headers=h.auth())
    assert r.status_code == 200, r.text
    # 1,000 x $0.01 + 100 x $0.02, per million
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == Decimal("0.00001") + Decimal("0.000002")
