"""``tokenops serve``: run the gateway."""

from __future__ import annotations

import os
import tempfile
from typing import Annotated

import typer

from tokenops.cli.common import ConfigOption, load
from tokenops.config import METRICS_DIR_ENV
from tokenops.errors import UsageError


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: gateway.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: gateway.port, 8787).", min=0, max=65535)] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (they share the ledger file in turns).", min=1)] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the metering gateway (OpenAI and Anthropic compatible) until interrupted."""
    import uvicorn

    from tokenops.app import create_app

    cfg = load(config)  # config errors are reported here, before anything starts
    if not cfg.providers:
        typer.secho("warning: no providers configured; every call will be refused", err=True, fg="yellow")
    if workers > 1 and cfg.state == "memory":
        raise UsageError(f"--workers {workers} needs shared state: with state: memory each worker would keep its own "
                         f"budget counters and rate limits (a hard budget could be spent {workers} times). Set "
                         "state: redis://host:port/db in the config (see docs/configuration.md#state), or run one "
                         "worker.")  # fmt: skip
    host = host or cfg.gateway.host
    port = cfg.gateway.port if port is None else port
    common = dict(host=host, port=port, log_level=log_level, loop="auto", http="auto", lifespan="on",
                  access_log=False, timeout_graceful_shutdown=10)  # fmt: skip
    if workers > 1:
        if config:
            os.environ["TOKENOPS_CONFIG"] = os.path.abspath(config)
        # every worker's counters in one /metrics answer, whichever worker serves it
        os.environ.setdefault(METRICS_DIR_ENV, tempfile.mkdtemp(prefix="tokenops-metrics-"))
        uvicorn.run("tokenops.app:app_factory", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(cfg), **common)  # type: ignore[arg-type]
