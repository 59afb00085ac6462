"""Virtual keys: create (printed once, stored as a hash), list, revoke."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from tokenops import keys as keymod
from tokenops.errors import NotFoundError, UsageError
from tokenops.keys import KeyRecord
from tokenops.ledger.base import Ledger
from tokenops.tags import MAX_END_USER, TagError, check_count, check_name, parse_tags, valid_end_user

# what no ledger stores as text, or no terminal shows: NUL and other control characters
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f]")


def create_key(ledger: Ledger, name: str, tags: Mapping[str, str] | str = "", lock: Sequence[str] = (),
               end_user: str | None = None) -> tuple[KeyRecord, str]:  # fmt: skip
    """Create a key with default tags (``team=a,env=b`` or a mapping), locked tag names and, for a key handed to
    one person, the end user every call made with it is attributed to; returns the record and the key itself
    (shown once: only its hash is stored)."""
    if not name.strip():
        raise UsageError("the key's name must not be empty")
    if len(name) > 200 or _UNSTORABLE.search(name):
        raise UsageError("the key's name must be at most 200 characters of text, without control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the key's name is not valid Unicode text (it holds a lone surrogate)") from None
    try:
        tag_map = parse_tags(tags, what="tags") if isinstance(tags, str) else {
            check_name(k): v for k, v in tags.items()}  # fmt: skip
        if not isinstance(tags, str):  # a mapping's values obey the k=v form's rule too
            parse_tags(",".join(f"{k}={v}" for k, v in tag_map.items()), what="tags")
        check_count(tag_map)
        locked = tuple(check_name(n.strip()) for n in lock if n.strip())
    except TagError as exc:
        raise UsageError(str(exc), code="invalid_tags") from None
    if end_user is not None:
        end_user = end_user.strip() or None
        if end_user is not None and not valid_end_user(end_user):
            raise UsageError(f"the key's end user must be printable text of at most {MAX_END_USER} characters")
    missing = [n for n in locked if n not in tag_map]
    if missing:
        raise UsageError(f"lock names {', '.join(missing)}, which the key's tags do not set")
    key = keymod.generate()
    rec = KeyRecord(id=keymod.new_key_id(), name=name.strip(), key_hash=keymod.hash_key(key), key_prefix=key[:10],
                    tags=tag_map, locked_tags=locked, created_at=datetime.now(UTC), end_user=end_user)  # fmt: skip
    ledger.insert_key(rec)
    return rec, key


def revoke_key(ledger: Ledger, key_id: str) -> KeyRecord:
    if not ledger.revoke_key(key_id):
        raise NotFoundError(f"no key with id {key_id!r} (see: tokenops keys list)")
    return next(k for k in ledger.list_keys() if k.id == key_id)
