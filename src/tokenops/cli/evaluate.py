"""``tokenops evaluate``: measure the optimizer on data (the router, the response cache) and right-size models
by experiment. Each command lives in its own module; this one assembles the group."""

from __future__ import annotations

import typer

from tokenops.cli import evaluate_cache, evaluate_models, evaluate_router

app = typer.Typer(help="Evaluate the router, the response cache, and candidate models.", no_args_is_help=True)
app.command("router")(evaluate_router.router)
app.command("cache")(evaluate_cache.cache)
app.command("models")(evaluate_models.models)
