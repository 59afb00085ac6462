"""What ``tokenops recommend`` knows of a prompt without storing it: hashes and sizes, computed per call.

``prefix_hash`` hashes the prompt's stable prefix, what a provider's prompt cache could keep from one call to
the next: the tools and the system prompt (``system``, ``instructions``, ``systemInstruction``) and every
message but the last; ``prefix_tokens`` is its size in tokens, estimated (about four characters a token, on its
canonical JSON). ``request_hash`` hashes the whole request less what does not change the answer (``stream``,
``stream_options``, ``user``, ``metadata``): two calls with one request hash from one key a few seconds apart
are a duplicate or a retry. Both are truncated SHA-256 (16 hex digits): enough to group, nothing to read back.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

_IGNORED = ("stream", "stream_options", "user", "metadata", "safety_identifier", "fake")
_TURNS = {"chat.completions": "messages", "messages": "messages", "responses": "input",
          "gemini.generate": "contents", "gemini.stream": "contents"}  # fmt: skip
_FIXED = ("system", "instructions", "systemInstruction", "tools", "tool_choice")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(route: str, body: dict[str, Any]) -> tuple[str | None, int, str | None]:
    """(prefix hash, prefix tokens, request hash) of a call's body; (None, 0, None) for a body without turns."""
    turns_field = _TURNS.get(route)
    if turns_field is None or not body:
        return None, 0, None
    request = _digest(orjson.dumps({k: v for k, v in body.items() if k not in _IGNORED}, option=orjson.OPT_SORT_KEYS))
    turns = body.get(turns_field)
    earlier = turns[:-1] if isinstance(turns, list) else []
    prefix = {k: body[k] for k in _FIXED if body.get(k)}
    if earlier:
        prefix["turns"] = earlier
    if not prefix:
        return None, 0, request
    data = orjson.dumps(prefix, option=orjson.OPT_SORT_KEYS)
    return _digest(data), len(data) // 4, request
