"""The adapter interface every provider implements."""

from __future__ import annotations

from typing import Any, ClassVar

from tokenops.gateway.sse import SSEEvent
from tokenops.usage import Usage


class StreamMeter:
    """Watches a stream's events: collects usage, decides what to relay and spots the final event.

    ``relay(event)`` returns the bytes to send to the client for this event (``b""`` to drop it).
    ``is_final(event)`` is true for the event that ends the stream: the meter records the call *before* it
    is sent, so an answered stream is always in the spool.
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.model: str | None = None
        self.upstream_id: str | None = None
        self.text_chars = 0  # streamed output so far, for estimating usage when a stream is cut short
        self.chunks = 0

    def relay(self, event: SSEEvent) -> bytes:
        raise NotImplementedError

    def is_final(self, event: SSEEvent) -> bool:
        raise NotImplementedError

    def final_usage(self, prompt_chars: int) -> tuple[Usage, bool]:
        """Usage to record for a stream that ended normally: what the provider reported, else an estimate."""
        if self.usage is not None:
            return self.usage, False
        return self.estimate(prompt_chars), True

    def partial_usage(self, prompt_chars: int) -> tuple[Usage, bool]:
        """Usage to record for a stream that ended early: what the provider reported so far, else an estimate."""
        return self.final_usage(prompt_chars)

    def estimate(self, prompt_chars: int) -> Usage:
        """About four characters a token: only used, and flagged, when the provider said nothing."""
        return Usage(input_tokens=(prompt_chars + 3) // 4, output_tokens=(self.text_chars + 3) // 4)


class Adapter:
    """Maps one route's request and response for a provider kind."""

    kind: ClassVar[str]
    flavor: ClassVar[str]  # which error shape and routes the client speaks

    def __init__(self, base_url: str, api_key: str | None, extra_headers: dict[str, str]):
        self.base_url = base_url
        self.api_key = api_key
        self.extra_headers = extra_headers

    def url(self, route: str) -> str:
        raise NotImplementedError

    def headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        raise NotImplementedError

    def prepare(self, route: str, body: dict[str, Any], upstream_model: str) -> tuple[dict[str, Any], bool]:
        """The upstream body and whether the client asked for usage in its stream."""
        raise NotImplementedError

    def usage(self, route: str, payload: Any) -> Usage:
        raise NotImplementedError

    def stream_meter(self, client_wants_usage: bool) -> StreamMeter:
        raise NotImplementedError

    @staticmethod
    def response_model(payload: Any) -> str | None:
        if isinstance(payload, dict) and isinstance(payload.get("model"), str):
            return payload["model"]
        return None

    @staticmethod
    def upstream_request_id(payload: Any) -> str | None:
        if isinstance(payload, dict) and isinstance(payload.get("id"), str):
            return payload["id"]
        return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
