"""Key stage: the client's virtual key, from ``Authorization: Bearer``, ``x-api-key``, or (Gemini's way)
``x-goog-api-key`` or ``?key=``."""

from __future__ import annotations

from urllib.parse import parse_qsl

from tokenops.call import Call
from tokenops.errors import GatewayError
from tokenops.gateway.keycache import KeyCache


def presented_key(headers: dict[str, str], query: str = "") -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key") or headers.get("x-goog-api-key")
    if key and key.strip():
        return key.strip()
    if "key=" in query:  # Gemini clients may put the key in the query string
        for k, v in parse_qsl(query):
            if k == "key" and v.strip():
                return v.strip()
    return None


class KeyStage:
    def __init__(self, keys: KeyCache):
        self.keys = keys

    async def __call__(self, call: Call) -> None:
        key = presented_key(call.headers, call.query)
        if key is None:
            raise GatewayError(401, "missing_api_key", "no API key: send a TokenOps key as 'Authorization: Bearer "
                               "tok-…', 'x-api-key' or (Gemini) 'x-goog-api-key'")  # fmt: skip
        record = await self.keys.lookup(key)
        if record is None:
            raise GatewayError(401, "invalid_api_key", "unknown API key")
        if not record.active:
            raise GatewayError(401, "invalid_api_key", f"API key {record.id} has been revoked")
        call.key = record
        call.tags = dict(record.tags)  # so that even a call refused later is attributed to the key's owner
