"""Scopes: which calls a budget, limit or rule is about.

A scope is a set of conditions, all of which must hold: tag values (``team=search``), ``key`` (a key id),
``user`` (the end user) and ``model`` (a glob over the requested model, e.g. ``gpt-4o*``). The empty scope
is the whole organisation. Scopes nest by inclusion: ``team=search`` contains ``team=search,env=prod``, and a
call counts against every scope it falls in.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from tokenops.tags import TagError, check_name, parse_tags

SPECIAL = ("key", "user", "model")


def _value(name: str, value: str) -> str:
    """A value given in a mapping obeys the rule of the text form (tags' values): it must survive being written
    as ``name=value`` in ``k=v,…`` and read back unchanged (no ',' or '=', no leading or trailing space, 1 to
    200 characters), or a scope would print as one thing and mean another."""
    try:
        same = parse_tags(f"{name}={value}", what="scope") == {name: value}
    except TagError:
        same = False
    if not same:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise ValueError(f"scope {name!r}: invalid value {shown!r}: use 1 to 200 characters, without ',' or '=' "
                         "and without leading or trailing spaces")  # fmt: skip
    return value


@dataclass(frozen=True)
class Scope:
    conditions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, value: str | Mapping[str, object] | None) -> Scope:
        """From ``team=alpha,env=prod`` or a mapping; raises ValueError on a malformed expression."""
        if value is None:
            return cls()
        if isinstance(value, str):
            try:
                items = parse_tags(value, what="scope")
            except TagError as exc:
                raise ValueError(str(exc)) from None
        elif isinstance(value, Mapping):
            items = {}
            for k, v in value.items():
                if not isinstance(k, str) or not isinstance(v, str | int) or isinstance(v, bool) or str(v) == "":
                    raise ValueError(f"scope {k!r}: expected a non-empty string value, got {v!r}")
                try:
                    check_name(k)
                except TagError as exc:
                    raise ValueError(f"scope: {exc}") from None
                items[k] = _value(k, str(v))
        else:
            raise ValueError(f"scope: expected 'k=v,…' or a mapping, got {type(value).__name__}")
        return cls(tuple(sorted(items.items())))

    def as_dict(self) -> dict[str, str]:
        return dict(self.conditions)

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.conditions) or "(all)"

    def matches(self, tags: Mapping[str, str], key_id: str | None, user: str | None, model: str | None) -> bool:
        for name, want in self.conditions:
            if name == "key":
                if key_id != want:
                    return False
            elif name == "user":
                if user != want:
                    return False
            elif name == "model":
                if model is None or not fnmatch.fnmatchcase(model, want):
                    return False
            elif tags.get(name) != want:
                return False
        return True

    def contains(self, other: Scope) -> bool:
        """True when every call in ``other`` is also in this scope."""
        mine, theirs = self.as_dict(), other.as_dict()
        return all(theirs.get(k) == v for k, v in mine.items())


class ScopeIndex:
    """Finds the items whose scope a call falls in without testing every scope.

    Items are grouped by the first condition of their scope (``team=search`` → the ``team`` column of the
    index); a call looks up only the groups its own values point to, then checks the rest of each scope.
    Scopes that start with a model glob, and the empty scope, are always candidates.
    """

    def __init__(self, items: list[tuple[Scope, object]]):
        self.items = items
        self._always: list[tuple[Scope, object]] = []
        self._by: dict[str, dict[str, list[tuple[Scope, object]]]] = {}
        for scope, item in items:
            if not scope.conditions or scope.conditions[0][0] == "model":
                self._always.append((scope, item))
                continue
            name, value = scope.conditions[0]
            self._by.setdefault(name, {}).setdefault(value, []).append((scope, item))

    def find(self, tags: Mapping[str, str], key_id: str | None, user: str | None, model: str | None) -> list:
        found = [item for scope, item in self._always if scope.matches(tags, key_id, user, model)]
        for name, groups in self._by.items():
            value = key_id if name == "key" else user if name == "user" else tags.get(name)
            if value is None:
                continue
            for scope, item in groups.get(value, ()):
                if scope.matches(tags, key_id, user, model):
                    found.append(item)
        return found
