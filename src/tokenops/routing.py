"""The ``routing:`` section of the config: model tiers and the task matrix.

.. code-block:: yaml

    routing:
      tiers:                 # lowest first: each tier's models are interchangeable for the tasks it serves
        small: [gpt-4o-mini, claude-haiku-4-5]
        medium: [gpt-4.1, claude-sonnet-4-5]
        frontier: [gpt-5, claude-opus-4-1]
      tasks:                 # a `task` tag -> the lowest tier that does that task well enough
        classify: small
        summarize: small
        code: frontier
      fallbacks:             # when a model's provider fails (429, 5xx, timeout): the next models to try, in order
        gpt-5: [claude-sonnet-4-5, gpt-4.1]
      backoff: 0.2           # seconds before trying the next model (doubled for each further one)
      breaker: {failures: 5, cooldown: 30}   # a provider failing 5 times running is skipped for 30 s
      auto:                  # tokenops/auto without a task: the difficulty router picks one of two models
        strong: gpt-5
        weak: gpt-4o-mini
        threshold: 0.5       # route to strong when the estimate that it is needed is at least this

A call tagged with a task (``task=summarize``) whose model is one of the tiers' models, or the routing alias
``tokenops/auto``, is served by the cheapest healthy model of the task's tier or a higher one (priced for that
call; see :class:`tokenops.gateway.stages.router.RouterStage`). A model named in no tier (a fine-tuned model, an
embedding model) is served as asked. Names are model names as calls give them: an alias of ``models:``, a
``provider/model`` or a catalog model name.

A model's ``fallbacks`` are tried in order when its provider answers 429 or 5xx or cannot be reached in time,
before anything reaches the client (a stream falls back only before its first byte); the call is priced for
the model that answered, and its reservation is sized for the dearest model it may end on. Chains are not
followed further (a fallback's own fallbacks are not tried), so they cannot loop.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

FALLBACK_ON = (429, 500, 502, 503, 504)  # provider statuses worth another model (plus timeouts, unreachable)

AUTO_MODEL = "tokenops/auto"  # the routing alias: "route this call for me"

_Name = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]


class BreakerConfig(BaseModel):
    """A provider that fails ``failures`` times in a row is skipped for ``cooldown`` seconds, then tried again."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    failures: int = Field(5, ge=1, le=1000)
    cooldown: float = Field(30.0, gt=0, le=3600)


class AutoConfig(BaseModel):
    """``tokenops/auto`` without a task: the difficulty router chooses between a strong and a weak model."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    strong: _Name
    weak: _Name
    # the quality/cost trade-off: a call goes to the strong model when the router's estimate that it is needed is at
    # least this (lower: more calls to the strong model, more quality; higher: cheaper)
    threshold: float = Field(0.5, ge=0, le=1)
    model_file: str | None = None  # another trained router (tokenops train router); default: the one shipped

    @model_validator(mode="after")
    def _two(self) -> AutoConfig:
        if self.strong == self.weak:
            raise ValueError("auto: strong and weak must be two models")
        if AUTO_MODEL in (self.strong, self.weak):
            raise ValueError(f"auto: {AUTO_MODEL!r} is the routing alias, not a model")
        return self


class RoutingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    tiers: dict[_Name, tuple[_Name, ...]] = Field(default_factory=dict)
    tasks: dict[_Name, _Name] = Field(default_factory=dict)
    fallbacks: dict[_Name, tuple[_Name, ...]] = Field(default_factory=dict)
    backoff: float = Field(0.2, ge=0, le=30)
    breaker: BreakerConfig = BreakerConfig()
    auto: AutoConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RoutingConfig:
        seen: dict[str, str] = {}
        for tier, models in self.tiers.items():
            if not models:
                raise ValueError(f"tier {tier!r} has no models: a task of this tier could not be served")
            for model in models:
                if model == AUTO_MODEL:
                    raise ValueError(f"tier {tier!r}: {AUTO_MODEL!r} is the routing alias, not a model")
                if model in seen:
                    raise ValueError(f"model {model!r} is in tiers {seen[model]!r} and {tier!r}: a model has one tier")
                seen[model] = tier
        for model, chain in self.fallbacks.items():
            if model == AUTO_MODEL or AUTO_MODEL in chain:
                raise ValueError(f"fallbacks of {model!r}: {AUTO_MODEL!r} is the routing alias, not a model")
            if not chain:
                raise ValueError(f"fallbacks of {model!r}: the list is empty")
            if model in chain or len(set(chain)) != len(chain):
                raise ValueError(f"fallbacks of {model!r} repeat a model (a chain is tried once, in order): "
                                 f"{', '.join(chain)}")  # fmt: skip
        for task, tier in self.tasks.items():
            if tier not in self.tiers:
                known = ", ".join(self.tiers) or "none"
                raise ValueError(f"task {task!r} needs tier {tier!r}, which is not a tier (tiers: {known})")
        return self

    def eligible(self, task: str) -> tuple[str, ...]:
        """The models that may serve ``task``: those of its tier and every higher one (empty: not a task)."""
        tier = self.tasks.get(task)
        if tier is None:
            return ()
        names = list(self.tiers)
        return tuple(m for t in names[names.index(tier):] for m in self.tiers[t])

    def tier_of(self, model: str) -> str | None:
        return next((t for t, models in self.tiers.items() if model in models), None)
