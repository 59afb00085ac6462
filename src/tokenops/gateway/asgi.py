"""Entry point for ``uvicorn --factory`` (used by ``tokenops serve --workers N``): config from $TOKENOPS_CONFIG."""

from __future__ import annotations

from tokenops.config import load_config
from tokenops.gateway.app import Gateway, create_app


def app_factory() -> Gateway:
    return create_app(load_config())
