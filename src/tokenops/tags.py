"""Tags: key/value attribution on every spend event.

Tags come from three places, merged in this order (later wins): the key's default tags, the OpenAI
``metadata`` object, the ``X-TokenOps-Tags`` header; then the key's *locked* tags are applied again, so a
key can pin e.g. ``team`` whatever the request says. A :class:`TaggingPolicy` says which tags are required
and which values are allowed: in ``warn`` mode a call that breaks it goes through and is recorded with the
tags it missed; in ``enforce`` mode it gets a 400 naming the tag.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# The standard tags are columns of their own in the ledger (fast group-bys); any other tag lives in a JSON map.
STANDARD_TAGS = ("team", "project", "feature", "env", "owner", "workload", "customer")
UNTAGGED = "(untagged)"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
# a value: up to 200 characters, no ',' or '=' (they delimit the k=v,k=v form), no control characters
_VALUE = re.compile(r"^[^,=\s\x00-\x1f\x7f][^,=\x00-\x1f\x7f]{0,199}$")
MAX_TAGS = 32  # tags on one call, the key's included
MAX_HEADER_BYTES = 4096  # the X-TokenOps-Tags header
MAX_END_USER = 256  # characters of an end user id


class TagError(ValueError):
    pass


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise TagError(f"invalid tag name {name!r}: use letters, digits, '_', '-', '.' (start with a letter or '_')")
    return name


def parse_tags(text: str, *, what: str = "tags") -> dict[str, str]:
    """Parse ``team=search,feature=summary``. Empty text is no tags; anything malformed raises TagError."""
    tags: dict[str, str] = {}
    if len(text.encode()) > MAX_HEADER_BYTES:
        raise TagError(f"malformed {what}: longer than {MAX_HEADER_BYTES} bytes")
    if text.count(",") >= MAX_TAGS:
        raise TagError(f"malformed {what}: more than {MAX_TAGS} tags (at most {MAX_TAGS} on one call)")
    text = text.strip()
    if not text:
        return tags
    for part in text.split(","):
        part = part.strip()
        if "=" not in part:
            raise TagError(f"malformed {what}: {part!r} is not key=value")
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip()
        try:
            check_name(key)
        except TagError as exc:
            raise TagError(f"malformed {what}: {exc}") from None
        if not _VALUE.match(value):
            raise TagError(f"malformed {what}: tag {key!r} has an empty or invalid value {value!r}")
        if key in tags and tags[key] != value:
            raise TagError(f"malformed {what}: tag {key!r} given twice")
        tags[key] = value
    return tags


def check_count(tags: Mapping[str, str], what: str = "tags") -> None:
    if len(tags) > MAX_TAGS:
        raise TagError(f"too many {what}: {len(tags)}, at most {MAX_TAGS} on one call")


def format_tags(tags: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def tags_from_metadata(metadata: object) -> dict[str, str]:
    """OpenAI's ``metadata`` object: string values with tag-like names become tags; others are ignored."""
    if not isinstance(metadata, dict):
        return {}
    out = {}
    for key, value in metadata.items():
        if isinstance(key, str) and isinstance(value, str) and _NAME.match(key) and _VALUE.match(value):
            out[key] = value
    return out


@dataclass(frozen=True)
class TaggingPolicy:
    required: tuple[str, ...] = ()
    allowed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    mode: Literal["warn", "enforce"] = "warn"

    def violations(self, tags: Mapping[str, str]) -> list[str]:
        """Human-readable problems; empty when the tags satisfy the policy."""
        problems = []
        for name in self.required:
            if name not in tags:
                problems.append(f"missing required tag {name!r}")
        for name, values in self.allowed.items():
            if name in tags and tags[name] not in values:
                problems.append(f"tag {name}={tags[name]!r} is not one of {', '.join(values)}")
        return problems

    def missing(self, tags: Mapping[str, str]) -> list[str]:
        """Tag names that are missing or carry a value the policy does not allow."""
        bad = [n for n in self.required if n not in tags]
        bad += [n for n, values in self.allowed.items() if n in tags and tags[n] not in values]
        return bad


# Claude Code's Anthropic metadata.user_id: a JSON string (newer versions) or user_<device>_account_<uuid>_session_
# <uuid> (older ones). The session changes every run; the person is the account, else the device.
_DEVICE = re.compile(r"^[0-9a-fA-F]{64}$")
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ACCOUNT = re.compile(f"^(?:{_UUID})?$")
_CLAUDE_CODE_LEGACY = re.compile(f"^user_([0-9a-fA-F]{{64}})_account_((?:{_UUID})?)_session_({_UUID})$")


def _person(device: object, account: object) -> str | None:
    if not (isinstance(device, str) and _DEVICE.match(device) and isinstance(account, str | None)
            and _ACCOUNT.match(account or "")):  # fmt: skip
        return None
    return f"account:{account.lower()}" if account else f"device:{device.lower()}"


def claude_code_person(user_id: str) -> str | None:
    """The person behind a Claude Code ``metadata.user_id`` (``account:<uuid>``, else ``device:<64 hex>``; never
    the session), or None when ``user_id`` is not in one of Claude Code's formats."""
    text = user_id.strip()
    if text.startswith("{") and text.endswith("}"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the interpreter's stack
            return None
        if not isinstance(data, dict) or not isinstance(data.get("session_id"), str):
            return None
        return _person(data.get("device_id"), data.get("account_uuid"))
    found = _CLAUDE_CODE_LEGACY.match(text)
    return _person(found.group(1), found.group(2)) if found else None


def end_user_id(user_id: str) -> str:
    """An end user as recorded: Claude Code's session-bearing ids become the stable person
    (:func:`claude_code_person`); any other id is kept as it is."""
    return claude_code_person(user_id) or user_id


def valid_end_user(value: str) -> bool:
    """An end user id is non-empty printable text of at most :data:`MAX_END_USER` characters."""
    return bool(value.strip()) and len(value) <= MAX_END_USER and value.isprintable()
