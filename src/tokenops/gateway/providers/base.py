"""The adapter interface every provider implements.

Adapters read payloads that come from outside, so they read them defensively: a field of the wrong type is
treated as missing, never dereferenced. A usage that cannot be trusted (a count that is not a whole number, or
more than any call can use: see :mod:`tokenops.usage`) is not used: the call is recorded with an estimate,
flagged ``usage_estimated``, and the reason is kept in :attr:`StreamMeter.usage_problem`.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import orjson

from tokenops.gateway.sse import SSEEvent
from tokenops.usage import MalformedUsage, Usage

log = logging.getLogger("tokenops.providers")
OUTPUT_LIMIT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


class StreamMeter:
    """Watches a stream's events: collects usage, decides what to relay and spots the final event.

    ``relay(event)`` returns the bytes to send to the client for this event (``b""`` to drop it).
    ``is_final(event)`` is true for the event that ends the stream: the meter records the call *before* it
    is sent, so an answered stream is always in the spool.
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.usage_problem: str | None = None  # why the reported usage was not used: a MalformedUsage code
        self.model: str | None = None
        self.upstream_id: str | None = None
        self.service_tier: str | None = None  # the service tier the stream reports (priced by its own row)
        self.text_chars = 0  # streamed output so far, for estimating usage when a stream is cut short
        self.chunks = 0

    def relay(self, event: SSEEvent) -> bytes:
        raise NotImplementedError

    def is_final(self, event: SSEEvent) -> bool:
        raise NotImplementedError

    def take_usage(self, parse: Any, payload: Any) -> None:
        """Parse a usage object; a malformed one is remembered as the reason to estimate, never raised."""
        try:
            usage = parse(payload)
        except MalformedUsage as exc:
            log.warning("stream usage not used (%s); the call's usage will be estimated", exc)
            self.usage_problem = exc.code
            return
        if usage is not None:
            self.usage = usage

    def final_usage(self, input_estimate: int) -> tuple[Usage, bool]:
        """Usage to record for a stream that ended normally: what the provider reported, else an estimate."""
        if self.usage is not None and self.usage_problem is None:
            return self.usage, False
        return self.estimate(input_estimate), True

    def partial_usage(self, input_estimate: int) -> tuple[Usage, bool]:
        """Usage to record for a stream that ended early: what the provider reported so far, else an estimate."""
        return self.final_usage(input_estimate)

    def estimate(self, input_estimate: int) -> Usage:
        """What the request held (text, images: :func:`tokenops.tokens.estimate_input`) and about four
        characters a token of the output relayed: only used, and flagged, when the provider said nothing usable."""
        return Usage(input_tokens=input_estimate, output_tokens=(self.text_chars + 3) // 4)


class Adapter:
    """Maps one route's request and response for a provider kind."""

    kind: ClassVar[str]
    flavor: ClassVar[str]  # which error shape and routes the client speaks

    def __init__(self, base_url: str, api_key: str | None, extra_headers: dict[str, str]):
        self.base_url = base_url
        self.api_key = api_key
        self.extra_headers = extra_headers

    def url(self, route: str, model: str = "") -> str:
        """The provider URL of ``route`` (``model``: for APIs that name the model in the path, as Gemini does)."""
        raise NotImplementedError

    def request_url(self, route: str, query: str = "", model: str = "") -> str:
        """The provider URL of ``route`` with the client's query string as it came (e.g. ``?beta=true``)."""
        url = self.url(route, model)
        return f"{url}?{query}" if query else url

    def headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        raise NotImplementedError

    def prepare(self, route: str, body: dict[str, Any], upstream_model: str,
                output_limit: int | None = None) -> tuple[dict[str, Any], bool]:  # fmt: skip
        """The upstream body and whether the client asked for usage in its stream. ``output_limit``: an output
        limit the gateway sets (a clamp, or the ceiling of a call under a hard limit)."""
        raise NotImplementedError

    def output_limit_field(self, route: str, model: str) -> str:
        """The request field that caps the output, for when the gateway must set it (a hard budget applies)."""
        return "max_tokens"

    def limit_output(self, out: dict[str, Any], route: str, model: str, limit: int | None) -> None:
        """Write the gateway's output limit into every limit field the client sent, else into this API's own."""
        if limit is None:
            return
        sent = [name for name in OUTPUT_LIMIT_FIELDS if name in out and out[name] is not None]
        for name in sent or [self.output_limit_field(route, model)]:
            out[name] = limit

    def usage(self, route: str, payload: Any, model: str = "") -> Usage:
        """The usage of a JSON answer to a call sent as ``model`` (what a usage rule may depend on when the answer
        does not name its model); raises :class:`~tokenops.usage.MalformedUsage` (a ValueError) when it is
        missing or cannot be trusted."""
        raise NotImplementedError

    def stream_meter(self, client_wants_usage: bool, route: str = "", model: str = "") -> StreamMeter:
        raise NotImplementedError

    def service_tier(self, route: str, payload: Any) -> str | None:
        """The service tier a JSON answer reports (``flex``, ``priority``, ``standard``, …), if any: the call is
        priced with that tier's price row (:meth:`tokenops.gateway.meter.Meter.price`)."""
        return None

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


def text(value: Any) -> str | None:
    """``value`` if it is a string, else None."""
    return value if isinstance(value, str) else None


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: a payload field of the wrong type counts as absent."""
    return value if isinstance(value, dict) else {}


def event_json(event: SSEEvent) -> dict[str, Any] | None:
    """The JSON object an SSE event carries, or None (no data, ``[DONE]``, not JSON, not an object): such an
    event is relayed as it is."""
    if event.data is None or event.data.strip() == b"[DONE]":
        return None
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None

