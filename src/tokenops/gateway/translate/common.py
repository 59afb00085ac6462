"""What every translation shares: the error for a field with no counterpart, and reading tool-call arguments."""

from __future__ import annotations

from typing import Any

import orjson

from tokenops.errors import GatewayError


class Untranslatable(GatewayError):
    def __init__(self, field: str, why: str):
        super().__init__(400, "untranslatable_field", f"'{field}' cannot be translated: {why}", param=field)


def refuse_unknown(body: dict[str, Any], only: dict[str, tuple[Any, ...]], target: str) -> None:
    for name, harmless in only.items():
        if name in body and body[name] not in harmless:
            raise Untranslatable(name, f"the model is served by a {target} provider, whose API has no such field")


def arguments(raw: Any, where: str) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        return orjson.loads(raw or "{}")
    except (orjson.JSONDecodeError, TypeError):
        raise Untranslatable(where, "tool call arguments must be a JSON object") from None
