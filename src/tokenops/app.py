"""The served app: the gateway with its admin API (``tokenops serve``, the demo, end-to-end tests).

The gateway does not import the admin API (a face above it); this module, at the top, hands the gateway the
factory that builds it on first use (FastAPI is slow to import, and a gateway without admin traffic never pays).
"""

from __future__ import annotations

from typing import Any

from tokenops.config import Config
from tokenops.gateway.app import Gateway
from tokenops.gateway.http import ASGIApp


def _admin_api(gateway: Gateway) -> ASGIApp:
    from tokenops.api.app import create_admin_api

    return create_admin_api(gateway)  # type: ignore[return-value]


def create_app(config: Config, **parts: Any) -> Gateway:
    """The gateway for ``config`` with its admin API; ``parts`` are injected as :class:`Gateway` takes them."""
    parts.setdefault("admin", _admin_api)
    return Gateway(config, **parts)


def app_factory() -> Gateway:
    """For ``uvicorn --factory`` (``tokenops serve --workers N``): the config from $TOKENOPS_CONFIG."""
    from tokenops.config import load_config

    return create_app(load_config())


__all__ = ["app_factory", "create_app"]
