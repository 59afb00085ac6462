"""The admin REST API (FastAPI): keys, budgets, limits, rules, approvals, alerts and spend queries."""
