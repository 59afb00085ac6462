"""The policy engine: the gateway's policy stage, and the settle hook the meter calls.

Per call, in order:
1. **rules** that match the call's scope and model: model allow/deny lists (403 ``model_not_allowed``), token
   caps (400 ``token_limit_exceeded`` or clamp), approval for expensive models;
2. **budgets** the call falls in: the most severe action reached by any of them decides (block > approval >
   downgrade > alert), so the tightest budget wins;
3. the call's **maximum cost** (see :mod:`tokenops.policy.estimate`), checked against a per-call cap;
4. a **reservation** of that maximum on every budget, atomically (429 ``budget_exceeded`` if a hard one is
   full), then the **rate limits** (429 ``rate_limited``);
5. when the meter records the call, the reservation is **settled** to the real cost, thresholds crossed fire
   alerts once per period, and ``X-TokenOps-Budget-Remaining-USD`` is set.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenops.call import Call
from tokenops.errors import GatewayError
from tokenops.ledger.events import SpendEvent
from tokenops.money import ZERO, format_usd
from tokenops.policy.alerting import FORECAST_MIN_ELAPSED
from tokenops.policy.approvals import Approvals, grant_counter
from tokenops.policy.config import BudgetConfig, LimitConfig, PolicyDefaults, RuleConfig, ThresholdConfig
from tokenops.policy.estimate import (
    EMBEDDING_ROUTES,
    input_bound,
    max_cost,
    needs_output_bound,
    output_bound,
    requested_output,
    typical_input,
)
from tokenops.policy.limits import RateClaim, RateLimiter
from tokenops.policy.periods import Window, window
from tokenops.policy.state import (
    Claim,
    Counter,
    CounterKey,
    CountersMissing,
    InMemoryState,
    PolicyState,
    StateUnavailable,
)
from tokenops.scopes import ScopeIndex

log = logging.getLogger("tokenops.policy")
RESERVATION_TTL = 3600.0  # seconds after which a reservation that was never settled (its process died) lapses
LAPSE_MARGIN = 60.0  # seconds before its ttl from which a call's reservation is taken as lapsed (clocks differ)
Seed = Callable[[BudgetConfig, Window], Awaitable[Decimal]]  # a budget's spend so far this period, from the ledger


@dataclass
class Held:
    """What a call holds until it is settled."""

    id: str
    budgets: list[tuple[BudgetConfig, Window]]
    claims: list[Claim]
    rate_claims: list[RateClaim] = field(default_factory=list)
    grants: list[str] = field(default_factory=list)  # approval grants with a spend cap this call reserved on
    settled: bool = False
    at: float = field(default_factory=time.monotonic)  # when it was reserved: the state lets it lapse after its ttl


class PolicyEngine:
    def __init__(
        self,
        *,
        budgets: Sequence[BudgetConfig] = (),
        limits: Sequence[LimitConfig] = (),
        rules: Sequence[RuleConfig] = (),
        defaults: PolicyDefaults | None = None,
        price_of: Callable[[Call, str], Any] | None = None,
        resolve: Callable[[Call, str], str | None] | None = None,
        reroute: Callable[[Call], None] | None = None,
        state: PolicyState | None = None,
        approvals: Approvals | None = None,
        alerts: Any = None,
        clock: Callable[[], datetime] | None = None,
        reservation_ttl: float = RESERVATION_TTL,
        seed: Seed | None = None,
        grant_spend: Callable[[str], Awaitable[Decimal]] | None = None,
    ):
        self.config_budgets = {b.name: b for b in budgets}
        self.budgets: dict[str, BudgetConfig] = {}
        self._install(dict(self.config_budgets))
        self.config_rules = tuple(rules)
        self.config_limits = tuple(limits)
        self.set_rules(())
        self.state: PolicyState = state or InMemoryState()
        self.limiter = RateLimiter(limits, self.state)
        self.defaults = defaults or PolicyDefaults()
        # The router runs before the policy stage: a routed call carries its upstream model and price row
        # (Call.routed_model, upstream_model, quote_row). These ask the router about another model (a budget's
        # downgrade target, a batch's request), and reroute routes a call whose model a downgrade changed.
        self.price_of = price_of or (lambda call, model: None)
        self.resolve = resolve or (lambda call, model: None)  # the upstream name of a model (alias, provider/...)
        self.reroute = reroute
        self.reservation_ttl = reservation_ttl
        self.seed = seed  # a budget's spend this period from the ledger: for counters the state does not hold
        self.grant_spend = grant_spend  # an approval grant's spend from the ledger, likewise
        self.approvals = approvals or Approvals()
        self.approvals.state = self.state  # grant spend is reserved and settled with the budgets
        self.alerts = alerts  # tokenops.policy.alerting.BudgetAlerts, or None
        self.clock = clock or (lambda: datetime.now(UTC))
        self._windows: dict[str, tuple[BudgetConfig, Window]] = {}
        self._ids = itertools.count()

    def _install(self, budgets: dict[str, BudgetConfig]) -> None:
        self._limits = {name: self._limit(b) for name, b in budgets.items()}
        self._budget_index = ScopeIndex([(b.scope, b) for b in budgets.values()])
        self.budgets = budgets

    @property
    def active(self) -> bool:
        return bool(self.budgets or self.rules or self.limiter.limits)

    # --- the policy stage -----------------------------------------------------------------------
    async def check(self, call: Call) -> None:
        if not self.active:
            return
        key_id = call.key.id if call.key else None
        now = call.ts
        rules = self._rules_for(call, key_id)
        self._model_rules(call, rules)
        budgets = self._budgets_for(call, key_id, now)
        blocking, approval_budgets, downgrade = await self._actions(budgets)
        if blocking is not None:
            await self._blocked(call, blocking, budgets)
        # a batch runs the models its requests name: a budget's downgrade cannot rewrite them
        if downgrade is not None and downgrade[1].model and call.preset_max is None \
                and self._cheaper(call, downgrade[1].model):  # fmt: skip
            call.response_headers["x-tokenops-downgraded-from"] = call.model_requested
            call.response_headers["x-tokenops-downgrade-reason"] = f"budget {downgrade[0].name}"
            call.downgraded_from = call.model_requested
            call.model_requested = downgrade[1].model
            call.route_reason = f"budget {downgrade[0].name}: downgrade threshold at {downgrade[1].at}"
            if self.reroute is not None:
                self.reroute(call)
            rules = self._rules_for(call, key_id)
            self._model_rules(call, rules)  # the cheaper model must be allowed too
        needs = [f"rule:{r.name}" for r in rules if r.require_approval]
        needs += [f"budget:{b.name}" for b in approval_budgets]
        grants = [await self.approvals.require(call, reason, now) for reason in needs]
        capped = [g for g in grants if g.max_usd is not None]

        out = self._caps(call, rules)  # the output limit of one answer
        model = self._upstream(call, call.model_requested) or call.model_requested
        row = self._quote(call, call.model_requested)
        bound = input_bound(call, model, row)
        cap = min((r.max_cost_per_call_usd for r in rules if r.max_cost_per_call_usd is not None), default=None)
        hard = [f"budget {b.name}" for b, _w in budgets if self._limits.get(b.name) is not None]
        hard += [f"approval {g.id}" for g in capped] + (["a cost cap"] if cap is not None else [])
        if call.preset_max is not None:  # a batch: the gateway bounded each of its requests (gateway.batches)
            tokens, cost = call.preset_max
        else:
            if hard and needs_output_bound(call):
                # Only a limit the provider enforces makes the reservation a true upper bound (a reasoning model
                # can answer far more than any default): send the ceiling upstream, and say so.
                self._set_output(call, out)
                call.response_headers["x-tokenops-clamped"] = f"max_tokens={out} (set by TokenOps: {hard[0]} is a " \
                                                              "hard limit)"  # fmt: skip
            cost = max_cost(row, bound, output_bound(call, out))
            if cap is not None and cost is not None and cost > cap:
                self._cost_cap(call, rules, row, bound, out, cost, cap)
                out = requested_output(call) or out
                cost = max_cost(row, bound, output_bound(call, out))
            tokens = bound + output_bound(call, out)
            # the call may end on one of its fallbacks: reserve for the dearest model it may be priced at, and for
            # the most tokens it may count (a model's image tokens differ), each under its upstream name (an alias
            # or provider/ prefix names no image table)
            for name, fallback in zip(call.fallbacks, call.fallback_rows, strict=True):
                upstream = self.resolve(call, name) or name
                other_bound = input_bound(call, upstream, fallback)
                tokens = max(tokens, other_bound + output_bound(call, out))
                other = max_cost(fallback, other_bound, output_bound(call, out))
                if other is not None and (cost is None or other > cost):
                    cost = other

        held = Held(str(next(self._ids)), budgets, [], grants=[g.id for g in capped])
        for b, w in budgets:
            amount = (cost or ZERO) if b.unit == "usd" else Decimal(tokens)
            held.claims.append(Claim(counter_key(b, w), amount, self._limits.get(b.name)))
        for g in capped:
            held.claims.append(Claim(grant_counter(g.id), cost or ZERO, g.max_usd))
        try:
            full = await self.state.reserve(held.id, held.claims, self.reservation_ttl, require_seeded=True)
        except CountersMissing as missing:  # a new period, or a shared state that restarted empty
            await self._seed_missing(missing.keys, budgets)
            full = await self.state.reserve(held.id, held.claims, self.reservation_ttl)
        if full is not None:
            if full[0].startswith("grant:"):
                raise GatewayError(
                    429, "budget_exceeded", f"approval {full[0][6:]} is fully reserved by calls in flight under its "
                    "spend cap; retry shortly", kind="rate_limit_error", headers={"retry-after": "1"},
                )  # fmt: skip
            blocked = next(b for b, w in budgets if counter_key(b, w) == full)
            await self._blocked(call, blocked, budgets)
        if call.preset_max is not None:
            await self._batch_fits(held, budgets)
        try:
            # A batch is not paced by the rate limits: providers run it from a queue with its own limits, over
            # hours, and the limits pace interactive traffic. Budgets, rules and approvals govern it as above.
            if call.preset_max is None:
                held.rate_claims = await self.limiter.take(call, call.model_requested,
                                                           typical_input(call, model) + out * call.choices, cost)
        except (GatewayError, StateUnavailable):
            await self.state.settle(held.id, {})
            raise
        call.reservation = held
        await self._remaining_header(call, budgets)

    async def _seed_missing(self, keys: list[CounterKey], budgets: list[tuple[BudgetConfig, Window]]) -> None:
        """Seed the counters a reservation found missing: from the ledger's spend (if no other gateway did first)."""
        for key in keys:
            if key[0].startswith("grant:"):
                spent = await self.grant_spend(key[0][6:]) if self.grant_spend else ZERO
                await self.state.raise_spent(key, spent)
                continue
            found = next(((b, w) for b, w in budgets if counter_key(b, w) == key), None)
            if found is not None:
                b, w = found
                spent = await self.seed(b, w) if self.seed else ZERO
                await self.state.seed(key, spent, expires_at=_expiry(w))

    # --- settle (the meter's hook) ---------------------------------------------------------------
    async def settle(self, call: Call, event: SpendEvent) -> None:
        held: Held | None = call.reservation
        if held is None and call.resumed:
            call.resumed = False  # charged once
            await self._charge_resumed(call, event)
            return
        if held is None or held.settled:
            return
        held.settled = True
        actual = _spent(held.budgets, event)
        cost = event.cost_usd if event.cost_usd is not None else ZERO
        for grant in held.grants:
            actual[grant_counter(grant)] = cost
        try:
            if time.monotonic() - held.at >= self.reservation_ttl - min(LAPSE_MARGIN, self.reservation_ttl / 10):
                # a call that outlived its reservation (a long background response or stream): the state let it
                # lapse, or is about to, and a settle would find nothing to replace. Release what may be left of
                # it, and add the cost on a claim without a limit: counted once either way.
                await self.state.settle(held.id, {})
                await self._charge(held.id + ":late", actual, held.budgets)
            else:
                await self.state.settle(held.id, actual)
            await self.limiter.settle(held.rate_claims, event.usage.input_tokens + event.usage.output_tokens,
                                      event.cost_usd)  # fmt: skip
        except StateUnavailable as exc:  # the state retries it, or the reservation lapses: nothing to undo here
            log.warning("call %s: not settled in the shared state yet: %s", call.request_id, exc)
            return
        counters = await self._remaining_header(call, held.budgets)
        if self.alerts is not None:
            for (b, w), counter in zip(held.budgets, counters, strict=False):
                try:
                    await self.alerts.after_settle(b, w, counter, self.clock())
                except StateUnavailable as exc:
                    log.warning("budget %s: alerts not checked: %s", b.name, exc)

    async def _charge_resumed(self, call: Call, event: SpendEvent) -> None:
        """Add a resumed call's cost to the counters of the budgets it falls in (in the windows of its start). Its
        reservation died with the process that admitted it, and the counters this process seeded from the ledger
        could not hold it: without this, a background response or batch finishing after a restart would be spent
        outside every budget. A claim without a limit, settled at once: nothing is refused, it is too late."""
        budgets = self._budgets_for(call, call.key.id if call.key else None, call.ts)
        if not budgets:
            return
        try:
            await self._charge(f"resumed:{call.request_id}", _spent(budgets, event), budgets)
        except StateUnavailable as exc:
            log.warning("call %s: its cost was not added to its budgets' counters: %s", call.request_id, exc)

    def _budgets_for(self, call: Call, key_id: str | None, at: datetime) -> list[tuple[BudgetConfig, Window]]:
        """The budgets ``call`` falls in (under its model's names), each with its window at ``at``."""
        found: dict[int, BudgetConfig] = {}
        for name in self._names(call):
            found.update((id(b), b) for b in self._budget_index.find(call.tags, key_id, call.end_user, name))
        return [(b, self.window(b, at)) for b in found.values()]

    async def _charge(self, charge_id: str, actual: dict[CounterKey, Decimal],
                      budgets: list[tuple[BudgetConfig, Window]]) -> None:  # fmt: skip
        """Add ``actual`` to its counters' spend, refusing nothing (a claim without a limit, settled at once)."""
        claims = [Claim(key, ZERO, None) for key in actual]
        try:
            await self.state.reserve(charge_id, claims, self.reservation_ttl, require_seeded=True)
        except CountersMissing as missing:
            await self._seed_missing(missing.keys, budgets)
            await self.state.reserve(charge_id, claims, self.reservation_ttl)
        await self.state.settle(charge_id, actual)

    def _cheaper(self, call: Call, target: str) -> bool:
        """Downgrade only to a model that really costs less for this call (never "down" to a dearer one, and not
        away from a model whose price is unknown)."""
        if target == call.model_requested:
            return False
        here, there = self._quote(call, call.model_requested), self.price_of(call, target)
        if here is None or there is None:
            return False
        out = output_bound(call, requested_output(call) or self.defaults.default_max_output_tokens)
        model = self._upstream(call, call.model_requested) or call.model_requested
        bound = input_bound(call, model, here)
        mine, theirs = max_cost(here, bound, out), max_cost(there, bound, out)
        return mine is not None and theirs is not None and theirs < mine

    async def release(self, call: Call) -> None:
        """Give back a reservation the meter never settled (a call that died before it was recorded)."""
        held: Held | None = call.reservation
        if held is not None and not held.settled:
            held.settled = True
            try:
                await self.state.settle(held.id, {})
                await self.limiter.settle(held.rate_claims, 0, ZERO)
            except StateUnavailable as exc:  # the reservation lapses by itself (its ttl)
                log.warning("call %s: reservation not released: %s", call.request_id, exc)

    # --- pieces ---------------------------------------------------------------------------------
    def window(self, b: BudgetConfig, at: datetime) -> Window:
        """The budget's period containing ``at``; cached, since it changes once a period."""
        cached = self._windows.get(b.name)
        if cached is not None and cached[0] is b and cached[1].start <= at < cached[1].end:
            return cached[1]
        w = window(b.period, b.timezone, at, custom=b.custom_window())
        self._windows[b.name] = (b, w)
        return w

    @staticmethod
    def _limit(b: BudgetConfig) -> Decimal | None:
        blocks = [t.at for t in b.thresholds if t.action == "block"]
        if b.hard:
            blocks.append(Decimal(1))
        return b.amount * min(blocks) if blocks else None

    async def _actions(self, budgets: list[tuple[BudgetConfig, Window]]) -> tuple[
            BudgetConfig | None, list[BudgetConfig], tuple[BudgetConfig, ThresholdConfig] | None]:  # fmt: skip
        """Actions reached, cumulatively: (a budget that blocks, budgets needing approval, the downgrade).

        Every threshold reached applies — at 85% of a budget with a downgrade at 70% and approval at 85% the
        call needs approval *and* is downgraded. Of several downgrades, the one set at the highest level wins.
        """
        approvals: list[BudgetConfig] = []
        downgrade: tuple[BudgetConfig, ThresholdConfig] | None = None
        try:
            counters = await self.state.counters([counter_key(b, w) for b, w in budgets])
        except StateUnavailable:
            # Without the counters a budget's thresholds cannot be known: refuse what a hard limit or an
            # approval threshold governs (the gateway answers 503), let a call under soft budgets only through.
            if any(self._limits.get(b.name) is not None or any(t.action == "require_approval" for t in b.thresholds)
                   for b, _w in budgets):  # fmt: skip
                raise
            return None, [], None
        now = self.clock()
        for (b, w), counter in zip(budgets, counters, strict=True):
            committed = counter.committed
            limit = self._limits.get(b.name)
            if limit is not None and committed >= limit:
                return b, [], None
            used = committed / b.amount
            projected = projected_fraction(used, w, now)
            for t in b.thresholds:
                if not t.reached(used, projected):
                    continue
                if t.action == "require_approval" and b not in approvals:
                    approvals.append(b)
                elif t.action == "downgrade" and (downgrade is None or t.at > downgrade[1].at):
                    downgrade = (b, t)
        return None, approvals, downgrade

    def _upstream(self, call: Call, model: str) -> str | None:
        """The upstream name of ``model``: the router's, when it routed the call to it."""
        return call.upstream_model if call.routed_model == model else self.resolve(call, model)

    def _quote(self, call: Call, model: str) -> Any:
        """The price row a call to ``model`` would be priced with now: the router's, when it routed it."""
        return call.quote_row if call.routed_model == model else self.price_of(call, model)

    def _names(self, call: Call) -> tuple[str, ...]:
        """The requested model and the model it resolves to: a rule on ``gpt-4o`` also holds for an alias of it
        or for ``openai/gpt-4o``."""
        resolved = self._upstream(call, call.model_requested)
        return (call.model_requested,) if not resolved or resolved == call.model_requested else (
            call.model_requested, resolved)  # fmt: skip

    def _rules_for(self, call: Call, key_id: str | None) -> list[RuleConfig]:
        found: set[int] = set()
        names = self._names(call)
        for name in names:
            found |= {id(r) for r in self._rule_index.find(call.tags, key_id, call.end_user, name)}
        return [r for r in self.rules if id(r) in found and any(r.applies(n) for n in names)]  # in config order

    def _model_rules(self, call: Call, rules: list[RuleConfig]) -> None:
        names = self._names(call)
        model = call.model_requested
        for r in rules:
            if any(fnmatch.fnmatchcase(n, g) for g in r.deny_models for n in names):
                raise GatewayError(403, "model_not_allowed",
                                   f"model {model!r} is not allowed here (rule {r.name!r}, scope {r.scope})",
                                   param="model")  # fmt: skip
            if r.allow_models and not any(fnmatch.fnmatchcase(n, g) for g in r.allow_models for n in names):
                raise GatewayError(403, "model_not_allowed",
                                   f"model {model!r} is not on the allowed list of rule {r.name!r} (scope "
                                   f"{r.scope}): {', '.join(r.allow_models)}", param="model")  # fmt: skip

    def _caps(self, call: Call, rules: list[RuleConfig]) -> int:
        """Apply input/output token caps; returns the output ceiling used for reservations."""
        est_in = typical_input(call, self._upstream(call, call.model_requested) or call.model_requested)
        if call.route in EMBEDDING_ROUTES:  # no output tokens: only the input cap applies
            for r in rules:
                if r.max_input_tokens is not None and est_in > r.max_input_tokens:
                    raise GatewayError(400, "token_limit_exceeded",
                                       f"the input is about {est_in} tokens, over the {r.max_input_tokens} allowed "
                                       f"by rule {r.name!r}", param="input")  # fmt: skip
            return 0
        for r in rules:
            if r.max_input_tokens is not None and est_in > r.max_input_tokens:
                raise GatewayError(400, "token_limit_exceeded",
                                   f"the prompt is about {est_in} tokens, over the {r.max_input_tokens} allowed by "
                                   f"rule {r.name!r}", param="messages")  # fmt: skip
        requested = requested_output(call)
        for r in rules:
            cap = r.max_output_tokens
            if cap is None:
                continue
            if requested is None or requested > cap:
                if r.on_exceed == "clamp" or requested is None:
                    self._set_output(call, cap)
                    call.response_headers["x-tokenops-clamped"] = f"max_tokens={cap} (rule {r.name})"
                    requested = cap
                else:
                    raise GatewayError(400, "token_limit_exceeded",
                                       f"max_tokens {requested} is over the {cap} allowed by rule {r.name!r}",
                                       param="max_tokens")  # fmt: skip
        return requested or self.defaults.default_max_output_tokens

    @staticmethod
    def _set_output(call: Call, value: int) -> None:
        call.output_limit = value  # the adapter writes it into the field its API reads (max_completion_tokens, …)

    def _cost_cap(self, call: Call, rules: list[RuleConfig], row: Any, bound: int, out: int, cost: Decimal,
                  cap: Decimal) -> None:  # fmt: skip
        clamp = any(r.on_exceed == "clamp" for r in rules if r.max_cost_per_call_usd is not None)
        if clamp:
            lo, hi = 1, out
            while lo < hi:  # the largest max_tokens whose maximum cost fits under the cap
                mid = (lo + hi + 1) // 2
                c = max_cost(row, bound, output_bound(call, mid))
                if c is not None and c <= cap:
                    lo = mid
                else:
                    hi = mid - 1
            fits = max_cost(row, bound, output_bound(call, lo))
            if fits is not None and fits <= cap:
                self._set_output(call, lo)
                call.response_headers["x-tokenops-clamped"] = f"max_tokens={lo} (max cost per call ${cap})"
                return
        raise GatewayError(400, "cost_limit_exceeded",
                           f"this call could cost up to ${format_usd(cost)}, over the ${format_usd(cap)} allowed per "
                           "call; lower max_tokens or shorten the prompt", param="max_tokens")  # fmt: skip

    async def check_batch_lines(self, lines: Sequence[tuple[str, Call]]) -> None:
        """The rules of every request of a batch, each as the call it will be (``(where, call)``, the call carrying
        the batch's key, tags and end user): allow and deny lists and approvals for each model the batch names,
        input, output and cost caps for each request. A batched request cannot be clamped (the provider runs it
        as it was submitted): one over a cap is refused, the error naming it."""
        if not self.rules:
            return
        checked: set[str] = set()
        for where, lc in lines:
            key_id = lc.key.id if lc.key else None
            rules = self._rules_for(lc, key_id)
            try:
                if lc.model_requested not in checked:
                    checked.add(lc.model_requested)
                    self._model_rules(lc, rules)
                    for r in rules:
                        if r.require_approval:
                            await self.approvals.require(lc, f"rule:{r.name}", lc.ts)
                self._line_caps(lc, rules)
            except GatewayError as err:
                raise GatewayError(err.status, err.code, f"{where}: {err.message}", param=err.param,
                                   headers=err.headers) from None  # fmt: skip

    def _line_caps(self, call: Call, rules: list[RuleConfig]) -> None:
        model = self._upstream(call, call.model_requested) or call.model_requested
        est_in = typical_input(call, model)
        requested = requested_output(call)
        for r in rules:
            if r.max_input_tokens is not None and est_in > r.max_input_tokens:
                raise GatewayError(400, "token_limit_exceeded", f"the prompt is about {est_in} tokens, over the "
                                   f"{r.max_input_tokens} allowed by rule {r.name!r}", param="messages")  # fmt: skip
            if r.max_output_tokens is not None and call.route not in EMBEDDING_ROUTES and (
                    requested is None or requested > r.max_output_tokens):  # fmt: skip
                raise GatewayError(400, "token_limit_exceeded", f"max_tokens {requested or 'unset'} is over the "
                                   f"{r.max_output_tokens} rule {r.name!r} allows (set it, at most that, in each "
                                   "batched request)", param="max_tokens")  # fmt: skip
            if r.max_cost_per_call_usd is not None:
                row = self._quote(call, call.model_requested)
                out = 0 if call.route in EMBEDDING_ROUTES else (requested or self.defaults.default_max_output_tokens)
                cost = max_cost(row, input_bound(call, model, row), output_bound(call, out))
                if cost is not None and cost > r.max_cost_per_call_usd:
                    raise GatewayError(400, "cost_limit_exceeded", f"this request could cost up to "
                                       f"${format_usd(cost)} at the standard price, over the "
                                       f"${format_usd(r.max_cost_per_call_usd)} rule {r.name!r} allows per call",
                                       param="max_tokens")  # fmt: skip

    async def _batch_fits(self, held: Held, budgets: list[tuple[BudgetConfig, Window]]) -> None:
        """A batch (a call with :attr:`Call.preset_max`) is many calls in one: a hard budget admits it only if its
        whole maximum fits what is left, not merely while something is left (which would let one batch overshoot
        the budget by all of it). Checked on the counters after the reservation; refused, it is given back."""
        hard = [(b, w) for b, w in budgets if self._limits.get(b.name) is not None]
        if not hard:
            return
        counters = await self.state.counters([counter_key(b, w) for b, w in hard])
        for (b, _w), counter in zip(hard, counters, strict=True):
            limit = self._limits[b.name]
            if limit is not None and counter.committed > limit:
                await self.state.settle(held.id, {})
                unit = "USD" if b.unit == "usd" else "tokens"
                claimed = _claimed(held, b, _w)
                raise GatewayError(
                    429, "budget_exceeded", f"budget {b.name!r} ({b.scope}) cannot hold this batch: it may cost up to "
                    f"{claimed} {unit} and {max(ZERO, limit - (counter.committed - claimed))} {unit} are left",
                    kind="rate_limit_error", headers={"retry-after": "60"},
                )  # fmt: skip

    async def _blocked(self, call: Call, budget: BudgetConfig, budgets: list[tuple[BudgetConfig, Window]]) -> None:
        w = self.window(budget, call.ts)
        (counter,) = await self.state.counters([counter_key(budget, w)])
        limit = self._limits.get(budget.name)
        if limit is not None and counter.spent < limit:
            # Not spent yet, only held by calls in flight: they settle in seconds, usually for less.
            raise GatewayError(
                429, "budget_exceeded",
                f"budget {budget.name!r} ({budget.scope}) is fully reserved by calls in flight; retry shortly",
                kind="rate_limit_error", headers={"retry-after": "1"},
            )  # fmt: skip
        retry = max(1, int((w.end - self.clock()).total_seconds()))
        if self.alerts is not None:
            await self.alerts.blocked(budget, w, counter, self.clock())
        raise GatewayError(
            429, "budget_exceeded",
            f"budget {budget.name!r} ({budget.scope}) is exhausted for the period ending {w.end.isoformat()}",
            kind="rate_limit_error", headers={"retry-after": str(retry)},
        )  # fmt: skip

    async def _remaining_header(self, call: Call, budgets: list[tuple[BudgetConfig, Window]]) -> list[Counter]:
        """Set the remaining-budget header; returns the counters of ``budgets`` (read once, for the alerts too; none
        when the shared state cannot be read)."""
        try:
            counters = await self.state.counters([counter_key(b, w) for b, w in budgets]) if budgets else []
        except StateUnavailable:
            return []
        remaining = [b.amount - c.committed for (b, _w), c in zip(budgets, counters, strict=True) if b.unit == "usd"]
        if remaining:
            call.response_headers["x-tokenops-budget-remaining-usd"] = format_usd(max(ZERO, min(remaining)))
        return counters

    # --- definitions and seeding -----------------------------------------------------------------
    async def set_budgets(self, extra: Sequence[BudgetConfig], seed: Seed) -> None:
        """Install run-time budgets beside the config's; a new budget's counter is seeded from the ledger (if no
        other gateway made it first). A changed scope, unit, period or time zone is a new counter (its key says
        so); a changed amount or thresholds keeps the counter."""
        merged = dict(self.config_budgets)
        for b in extra:
            if b.name not in merged:
                merged[b.name] = b
        now = self.clock()
        new = [b for name, b in merged.items()
               if (old := self.budgets.get(name)) is None or counter_name(old) != counter_name(b)]  # fmt: skip
        self._install(merged)
        for b in new:  # best effort: a counter not seeded now is seeded by the first call that needs it
            w = self.window(b, now)
            await self.state.seed(counter_key(b, w), await seed(b, w), expires_at=_expiry(w))

    def set_rules(self, extra: Sequence[RuleConfig]) -> None:
        """The config's rules, then run-time rules of other names (the config wins a name)."""
        names = {r.name for r in self.config_rules}
        self.rules = self.config_rules + tuple(r for r in extra if r.name not in names)
        self._rule_index = ScopeIndex([(r.scope, r) for r in self.rules])

    def set_limits(self, extra: Sequence[LimitConfig]) -> None:
        names = {limit.name for limit in self.config_limits}
        self.limiter.limits = self.config_limits + tuple(lim for lim in extra if lim.name not in names)

    def prune(self) -> None:
        """Drop counters of finished periods and idle rate buckets (every few seconds; memory state only)."""
        now = self.clock()
        current = {counter_key(b, self.window(b, now)) for b in self.budgets.values()}
        current |= {grant_counter(a) for a in self.approvals.grant_ids()}
        self.state.prune(lambda key: key in current)

    async def seed_all(self, seed: Seed) -> None:
        now = self.clock()
        for b in self.budgets.values():
            w = self.window(b, now)
            await self.state.seed(counter_key(b, w), await seed(b, w), expires_at=_expiry(w))

    async def counter(self, budget: str, at: datetime | None = None) -> Counter:
        """A budget's counter for the period holding ``at`` (now)."""
        b = self.budgets[budget]
        (c,) = await self.state.counters([counter_key(b, self.window(b, at or self.clock()))])
        return c

    async def status(self, at: datetime | None = None) -> list[dict[str, Any]]:
        at = at or self.clock()
        pairs = [(b, self.window(b, at)) for b in self.budgets.values()]
        counters = await self.state.counters([counter_key(b, w) for b, w in pairs])
        return [budget_status(b, w, c.spent, c.reserved, at) for (b, w), c in zip(pairs, counters, strict=True)]


def _claimed(held: Held, b: BudgetConfig, w: Window) -> Decimal:
    key = counter_key(b, w)
    return sum((c.amount for c in held.claims if c.key == key), ZERO)


def counter_name(b: BudgetConfig) -> str:
    """The name of a budget's counters: its name and what it counts (scope, unit, period, zone), so a changed
    definition starts a new counter while a changed amount keeps it."""
    what = f"{b.scope}|{b.unit}|{b.period}|{b.timezone}|{b.custom_window()}"
    return f"{b.name}@{hashlib.sha256(what.encode()).hexdigest()[:10]}"


def counter_key(b: BudgetConfig, w: Window) -> CounterKey:
    return (counter_name(b), w.key)


def _expiry(w: Window) -> float:
    """When a period's counter may be forgotten: a day after the period ends."""
    return w.end.timestamp() + 86_400


def projected_fraction(used: Decimal, w: Window, now: datetime) -> Decimal:
    """The share of the budget the period will have used at its end at the current run rate (``used`` itself
    in the first tenth of the period: too early to project)."""
    elapsed = w.fraction_elapsed(now)
    return used / Decimal(str(elapsed)) if elapsed >= FORECAST_MIN_ELAPSED else used


def budget_status(b: BudgetConfig, w: Window, spent: Decimal, reserved: Decimal, at: datetime) -> dict[str, Any]:
    elapsed = w.fraction_elapsed(at)
    forecast = (spent / Decimal(str(elapsed))) if elapsed > 0.0 else spent
    fmt = format_usd if b.unit == "usd" else (lambda d: str(int(d)))
    used = (spent + reserved) / b.amount
    return {
        **b.to_public(),
        "period_start": w.start.isoformat(),
        "period_end": w.end.isoformat(),
        "spent": fmt(spent),
        "reserved": fmt(reserved),
        "remaining": fmt(max(ZERO, b.amount - spent - reserved)),
        "forecast_at_period_end": fmt(forecast.quantize(Decimal("0.000001")) if b.unit == "usd" else forecast),
        "used_fraction": round(float(used), 4),
        "thresholds": [{"at": float(t.at), "action": t.action, "when": t.when,
                        "reached": t.reached(used, projected_fraction(used, w, at)),
                        **({"model": t.model} if t.model else {})} for t in b.thresholds],  # fmt: skip
    }


def _spent(budgets: Sequence[tuple[BudgetConfig, Window]], event: SpendEvent) -> dict[CounterKey, Decimal]:
    """What ``event`` adds to each of ``budgets``' counters: its cost, or its tokens for a token budget."""
    tokens = Decimal(event.usage.input_tokens + event.usage.output_tokens)
    cost = event.cost_usd if event.cost_usd is not None else ZERO
    return {counter_key(b, w): cost if b.unit == "usd" else tokens for b, w in budgets}


__all__ = ["PolicyEngine", "budget_status"]
