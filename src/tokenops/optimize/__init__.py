"""Optimization: the difficulty router, the response cache's similarity model, and their evaluations.

Sits below the gateway (which routes and caches with it) and above the config, policy, ledger and pricing.
"""
