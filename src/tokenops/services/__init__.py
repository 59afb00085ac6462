"""One place for each action a person takes: creating a key, setting a budget, deciding an approval, asking
for a report. The CLI, the admin API, the demo and the tests all call these, so a fix lands everywhere at once.

Services take a ledger (and the config where it matters), check what they are given, and raise
:class:`~tokenops.errors.UsageError` (``NotFoundError``, ``ConflictError``) with a message and a ``code`` that
every face shows as it is.
"""
