"""Budgets, limits and rules defined at run time (CLI, admin API), beside those of the config file.

A name the config file defines cannot be set or deleted at run time (:class:`~tokenops.errors.ConflictError`);
a definition is validated by the same model as the config file's (one error message format for every face);
a rule that contradicts another is refused. What the ledger holds that no longer validates (a definition
stored by an older version) is skipped with a log line, never allowed to stop a gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from tokenops.errors import ConflictError, NotFoundError, UsageError
from tokenops.ledger.base import Ledger
from tokenops.policy.config import BudgetConfig, LimitConfig, RuleConfig, contradictions

log = logging.getLogger("tokenops.definitions")
Kind = Literal["budget", "limit", "rule"]
MODELS: dict[str, type[BaseModel]] = {"budget": BudgetConfig, "limit": LimitConfig, "rule": RuleConfig}


def validation_message(exc: ValidationError, what: str) -> str:
    """A pydantic error as one line naming the field: ``amount_usd: must be greater than 0``."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or what
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg'].removeprefix('Value error, ')}{more}"


class Definitions:
    """``configured``: the config file's budgets, limits and rules; ``source``: the file's name, for messages."""

    def __init__(self, ledger: Ledger, *, budgets: Sequence[BudgetConfig] = (), limits: Sequence[LimitConfig] = (),
                 rules: Sequence[RuleConfig] = (), source: str = "the config file"):  # fmt: skip
        self.ledger = ledger
        self._configured: dict[str, Sequence[Any]] = {"budget": budgets, "limit": limits, "rule": rules}
        self.source = source

    @classmethod
    def of(cls, ledger: Ledger, config: Any) -> Definitions:
        """For a :class:`tokenops.config.Config` (its budgets, limits, rules and file name)."""
        return cls(ledger, budgets=config.budgets, limits=config.limits, rules=config.rules, source=config.source)

    def configured(self, kind: Kind) -> list[Any]:
        return list(self._configured[kind])

    def stored(self, kind: Kind) -> list[Any]:
        """Run-time definitions from the ledger that validate (others are logged and skipped)."""
        out = []
        for definition in self.ledger.definitions(kind):
            try:
                out.append(MODELS[kind].model_validate(definition))
            except (ValueError, OverflowError) as exc:
                log.error("ignoring invalid %s %s in the ledger: %s", kind, definition.get("name"), exc)
        return out

    def all(self, kind: Kind) -> list[tuple[Any, str]]:
        """The config's, then the ledger's of other names, each with where it comes from."""
        items = [(item, "config") for item in self.configured(kind)]
        names = {item.name for item, _ in items}
        items += [(item, "api") for item in self.stored(kind) if item.name not in names]
        return items

    def validate(self, kind: Kind, name: str, definition: Mapping[str, Any]) -> Any:
        try:
            return MODELS[kind].model_validate({**definition, "name": name})
        except ValidationError as exc:
            raise UsageError(f"invalid {kind} {validation_message(exc, kind)}", code=f"invalid_{kind}") from None

    def put(self, kind: Kind, name: str, definition: Mapping[str, Any], by: str | None) -> Any:
        """Create or replace a run-time definition; returns the validated model."""
        if any(item.name == name for item in self.configured(kind)):
            raise ConflictError(f"{kind} {name!r} is defined in {self.source}; change it there")
        item = self.validate(kind, name, definition)
        if kind == "rule":
            others = [r for r, _ in self.all("rule") if r.name != name]
            problems = contradictions([*others, item])
            if problems:
                raise UsageError("; ".join(problems), code="invalid_rule")
        self.ledger.put_definition(kind, name, {**definition, "name": name}, by)
        return item

    def delete(self, kind: Kind, name: str) -> None:
        if any(item.name == name for item in self.configured(kind)):
            raise ConflictError(f"{kind} {name!r} is defined in {self.source}; remove it there")
        if not self.ledger.delete_definition(kind, name):
            raise NotFoundError(f"no {kind} named {name!r}")
