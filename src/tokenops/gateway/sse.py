"""Incremental Server-Sent Events splitting, for relaying a stream event by event without buffering it.

Upstream bytes arrive in arbitrary pieces; :class:`SSEBuffer` yields each complete event as its raw bytes
(relayed to the client unchanged) together with its ``event:`` name and joined ``data:`` payload.

Line ends may be LF, CRLF or a lone CR, as the SSE specification allows (they are normalised to LF; a CR at the
end of a piece waits for the next one, which may start with its LF). A stream whose last event has no blank
line after it still delivers that event: :meth:`SSEBuffer.flush` returns it when the stream ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    raw: bytes
    event: str | None
    data: bytes | None


def parse_event(raw: bytes) -> SSEEvent:
    name = None
    data: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" ") if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return SSEEvent(raw, name, b"\n".join(data) if data else None)


class SSEBuffer:
    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        buf = self._buf + chunk
        if b"\r" in buf:
            held = buf.endswith(b"\r")  # maybe the first half of a CRLF split between two pieces
            if held:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                yield from self._split(buf, b"\r")
                return
        yield from self._split(buf, b"")

    def _split(self, buf: bytes, tail: bytes) -> Iterator[SSEEvent]:
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            raw = buf[start : end + 2]
            start = end + 2
            if raw.strip():
                yield parse_event(raw)
        self._buf = buf[start:] + tail

    def flush(self) -> SSEEvent | None:
        """The last event of a stream that ended without a blank line after it (None if nothing is left)."""
        rest, self._buf = self._buf.replace(b"\r", b"\n"), b""
        return parse_event(rest.rstrip(b"\n") + b"\n\n") if rest.strip() else None

    @property
    def leftover(self) -> bytes:
        return self._buf
