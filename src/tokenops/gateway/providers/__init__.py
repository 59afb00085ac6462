"""Provider adapters: the only code that knows each provider's wire format.

An adapter turns a client request into the upstream request, and the upstream response (JSON or SSE
events) into a :class:`~tokenops.usage.Usage`. Adapters register by ``kind`` in :data:`ADAPTERS`, the same
way a third-party adapter would.
"""

from __future__ import annotations

from tokenops.gateway.providers.anthropic import AnthropicAdapter
from tokenops.gateway.providers.base import Adapter, StreamMeter
from tokenops.gateway.providers.gemini import GeminiAdapter
from tokenops.gateway.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, type[Adapter]] = {"openai": OpenAIAdapter, "anthropic": AnthropicAdapter, "gemini": GeminiAdapter}

__all__ = ["ADAPTERS", "Adapter", "StreamMeter"]
