"""Anthropic's Messages API.

Usage: Anthropic's ``input_tokens`` EXCLUDES cache reads (``cache_read_input_tokens``) and cache writes
(``cache_creation_input_tokens``, split into ``cache_creation.ephemeral_5m_input_tokens`` and
``ephemeral_1h_input_tokens``, priced differently); :class:`~tokenops.usage.Usage` counts the whole prompt, so
they are added here. In a stream, ``message_start`` carries the input side and ``message_delta`` the
cumulative output (newer API versions repeat the input side there too). ``usage.service_tier`` (``standard``,
``priority``, ``batch``) prices the call with that tier's row. ``usage.server_tool_use.web_search_requests``
(in the message, and cumulative in the stream's ``message_delta``) is the web searches the call is billed for.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import orjson

from tokenops.gateway.http import is_plain_header_value
from tokenops.gateway.providers.base import Adapter, StreamMeter, obj, text
from tokenops.gateway.sse import SSEEvent
from tokenops.usage import MalformedUsage, MissingUsage, Usage, count

log = logging.getLogger("tokenops.providers")
DEFAULT_VERSION = "2023-06-01"
_FORWARD = ("anthropic-version", "anthropic-beta")


def usage_from_anthropic(u: Any) -> Usage | None:
    """The usage object of a message or stream event; None if there is none; raises MalformedUsage if a count
    cannot be trusted."""
    if not isinstance(u, dict):
        return None
    plain = count(u.get("input_tokens"), "input_tokens")
    read = count(u.get("cache_read_input_tokens"), "cache_read_input_tokens")
    created = count(u.get("cache_creation_input_tokens"), "cache_creation_input_tokens")
    split = obj(u.get("cache_creation"))
    w5 = count(split.get("ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens")
    w1h = count(split.get("ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens")
    if w5 + w1h != created:
        w5, w1h = created - min(w1h, created), min(w1h, created)
    return Usage(
        input_tokens=plain + read + created,
        cache_read_tokens=read,
        cache_write_5m_tokens=w5,
        cache_write_1h_tokens=w1h,
        output_tokens=count(u.get("output_tokens"), "output_tokens"),
        web_searches=count(obj(u.get("server_tool_use")).get("web_search_requests"), "web_search_requests"),
    )


class AnthropicStreamMeter(StreamMeter):
    def __init__(self) -> None:
        super().__init__()
        self._input: dict[str, Any] = {}
        self._output = 0

    def relay(self, event: SSEEvent) -> bytes:
        name = event.event
        if name in ("message_start", "message_delta") and event.data:
            try:
                payload = obj(orjson.loads(event.data))
            except orjson.JSONDecodeError:
                return event.raw
            if name == "message_start":
                msg = obj(payload.get("message"))
                self.model = msg.get("model") if isinstance(msg.get("model"), str) else None
                self.upstream_id = msg.get("id") if isinstance(msg.get("id"), str) else None
                usage = obj(msg.get("usage"))
            else:
                usage = obj(payload.get("usage"))
            if isinstance(usage.get("service_tier"), str):
                self.service_tier = usage["service_tier"]
            for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation",
                      "server_tool_use"):  # fmt: skip
                if usage.get(k) is not None:
                    self._input[k] = usage[k]
            if usage.get("output_tokens") is not None:  # cumulative: the latest count is the count
                try:
                    self._output = count(usage["output_tokens"], "output_tokens")
                except MalformedUsage as exc:
                    log.warning("stream output count not used (%s); the output will be estimated", exc)
                    self.usage_problem = exc.code
            self.take_usage(usage_from_anthropic, {**self._input, "output_tokens": self._output})
        elif name == "content_block_delta" and event.data:
            self.chunks += 1
            try:
                delta = obj(obj(orjson.loads(event.data)).get("delta"))
            except orjson.JSONDecodeError:
                return event.raw
            for key in ("text", "thinking", "partial_json"):
                if isinstance(delta.get(key), str):
                    self.text_chars += len(delta[key])
        return event.raw

    def is_final(self, event: SSEEvent) -> bool:
        return event.event == "message_stop"

    def final_usage(self, input_estimate: int) -> tuple[Usage, bool]:
        if self.usage is not None and self.usage_problem is not None:
            # what parsed is kept (the input side of message_start); the output is estimated from the text relayed
            output = max(self.usage.output_tokens, (self.text_chars + 3) // 4)
            return dataclasses.replace(self.usage, output_tokens=output, reasoning_tokens=0), True
        return super().final_usage(input_estimate)

    def partial_usage(self, input_estimate: int) -> tuple[Usage, bool]:
        # message_start said the input side; the output count so far is only final in message_delta, so a stream
        # cut before it is estimated from the text relayed.
        if self.usage is None or self.usage_problem is not None:
            return self.final_usage(input_estimate)
        estimated_output = (self.text_chars + 3) // 4
        if self.usage.output_tokens >= estimated_output:
            return self.usage, False
        u = self.usage
        return Usage(
            input_tokens=u.input_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_5m_tokens=u.cache_write_5m_tokens,
            cache_write_1h_tokens=u.cache_write_1h_tokens,
            output_tokens=estimated_output,
            web_searches=u.web_searches,
        ), True


class AnthropicAdapter(Adapter):
    kind = "anthropic"
    flavor = "anthropic"

    def url(self, route: str, model: str = "") -> str:
        base = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        return base + ("/v1/messages/count_tokens" if route == "messages.count_tokens" else "/v1/messages")

    def headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        h = {"content-type": "application/json", "accept-encoding": "identity"}
        for name in _FORWARD:
            value = client_headers.get(name)
            if value is not None and is_plain_header_value(value):
                h[name] = value
        h.setdefault("anthropic-version", DEFAULT_VERSION)
        if self.api_key:
            h["x-api-key"] = self.api_key
        h.update(self.extra_headers)
        return h

    def prepare(self, route: str, body: dict[str, Any], upstream_model: str,
                output_limit: int | None = None) -> tuple[dict[str, Any], bool]:  # fmt: skip
        out = dict(body)
        out["model"] = upstream_model
        self.limit_output(out, route, upstream_model, output_limit)
        return out, True

    def usage(self, route: str, payload: Any, model: str = "") -> Usage:
        u = usage_from_anthropic(obj(payload).get("usage"))
        if u is None:
            raise MissingUsage("the response has no usage object")
        return u

    def service_tier(self, route: str, payload: Any) -> str | None:
        # "standard", "priority" or "batch", in the usage object
        return text(obj(obj(payload).get("usage")).get("service_tier"))

    def stream_meter(self, client_wants_usage: bool, route: str = "", model: str = "") -> StreamMeter:
        return AnthropicStreamMeter()
