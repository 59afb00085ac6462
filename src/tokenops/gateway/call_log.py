"""The call log (``gateway.call_log: true``): one logfmt line per recorded call on standard output, for the
platform engineer's log pipeline (Loki, CloudWatch, ``grep``)::

    ts=2026-12-03T07:41:02.118Z request_id=req_… status=200 outcome=ok route=chat.completions provider=openai
    model=gpt-4o-mini requested=tokenops/auto key=key_3f… user=alice tags=team=search,env=prod in=12 out=30
    cost_usd=0.00001905 cache=miss latency_ms=123.4

It is written once the call is recorded (a meter listener), from the spend event itself. A call refused before
a key was found (401, unrecorded: it was nobody's spend) gets a line too, ``outcome=refused`` with its error, so
that a misconfigured client or a key being guessed shows in the log. When the spool's disk
is failing, that is once the event is held for the disk (the client got a 503 ``spool_unavailable``, which the
line says); it reaches the ledger when the disk recovers. No prompt, answer or key is written: the key's id, never the key, not even a
part of a refused one (uvicorn's access log, off, would print a Gemini client's ``?key=`` query). Values with
spaces, quotes or ``=`` are quoted.
"""

from __future__ import annotations

import json
import logging
import sys

from tokenops.call import Call
from tokenops.ledger.events import SpendEvent
from tokenops.money import format_usd
from tokenops.tags import format_tags

LOGGER = "tokenops.calls"
log = logging.getLogger(LOGGER)


def enable() -> None:
    """Send the call log to standard output (once per process; a host application may configure it instead)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _value(v: str) -> str:
    if v.isprintable():
        return v if not any(c in v for c in ' "=\\') else json.dumps(v, ensure_ascii=False)
    # a character that is not printable (a line or paragraph separator that splitlines and log shippers break at,
    # a control or format character): every non-ASCII character escaped, so the record stays one line
    return json.dumps(v, ensure_ascii=True)


def line(event: SpendEvent) -> str:
    """The logfmt line of one recorded call."""
    fields: list[tuple[str, str | None]] = [
        ("ts", event.ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"),
        ("request_id", event.request_id),
        ("status", str(event.http_status)),
        ("outcome", event.status),
        ("error", event.error_code),
        ("route", event.route),
        ("provider", event.provider),
        ("model", event.model_used),
        ("requested", event.model_requested if event.model_requested != event.model_used else None),
        ("key", event.key_id),
        ("user", event.end_user),
        ("tags", format_tags(event.tags) if event.tags else None),
        ("in", str(event.usage.input_tokens)),
        ("out", str(event.usage.output_tokens)),
        ("cost_usd", "unpriced" if event.cost_usd is None else format_usd(event.cost_usd)),
        ("estimated", "true" if event.usage_estimated else None),
        ("cache", event.cache),
        ("latency_ms", None if event.latency_ms is None else f"{event.latency_ms:.1f}"),
    ]
    return " ".join(f"{k}={_value(v)}" for k, v in fields if v is not None and v != "")


def refused_line(call: Call, status: int, code: str) -> str:
    """The line of a call answered with an error before it was recorded (no key: nobody's spend)."""
    fields = [("ts", call.ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"), ("request_id", call.request_id),
              ("status", str(status)), ("outcome", "refused"), ("error", code), ("route", call.route),
              ("requested", call.model_requested)]  # fmt: skip
    return " ".join(f"{k}={_value(v)}" for k, v in fields if v)


def log_refused(call: Call, status: int, code: str) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(refused_line(call, status, code))


async def log_call(call: Call, event: SpendEvent) -> None:
    """A meter listener: the call's line, when the call log is on."""
    if log.isEnabledFor(logging.INFO):
        log.info(line(event))
