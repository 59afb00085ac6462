"""Virtual keys: what apps send instead of provider keys.

A key is ``tok-`` followed by 40 random URL-safe characters. Only its SHA-256 is stored; the key itself is
shown once, when created. A key carries default tags (applied to every call made with it) and may lock some
of them so that requests cannot override them (a team's key keeps ``team`` whatever the request says). A key
handed to one person may name them (``end_user``): every call made with it is that person's, whatever the request
says.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime

PREFIX = "tok-"


def generate() -> str:
    return PREFIX + secrets.token_urlsafe(30)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    key_hash: str
    key_prefix: str
    tags: dict[str, str] = field(default_factory=dict)
    locked_tags: tuple[str, ...] = ()
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    end_user: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.key_prefix,
            "tags": dict(self.tags),
            "locked_tags": list(self.locked_tags),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "status": "active" if self.active else "revoked",
            "end_user": self.end_user,
        }
