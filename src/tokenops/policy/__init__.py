"""Governance at the gateway: budgets, rate limits, guardrails and approvals.

The :class:`~tokenops.policy.engine.PolicyEngine` is the gateway's policy stage. It reads the call's scope
(tags, key, end user, model), applies the rules, reserves the call's maximum cost against every budget the
call falls in (atomically, so concurrent calls cannot blow through a hard budget), and settles the reservation
to the real cost when the meter records the call.
"""
