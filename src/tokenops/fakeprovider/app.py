"""Assembles the fake provider's Starlette app and the per-instance state its routes share."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import anthropic_routes, batch_routes, gemini_routes, openai_routes, responses_routes
from .accounting import PrefixMemory
from .exchange import begin
from .wire import ANTHROPIC, OPENAI, error_response, json_response

RECEIVED_LIMIT = 1000
_CREATED = 1_700_000_000  # fixed model "created" time, so /v1/models answers are stable


async def models(request: Request) -> Response:
    dialect = ANTHROPIC if "anthropic-version" in request.headers else OPENAI
    ex = await begin(request, dialect, needs_body=False)
    if isinstance(ex, Response):
        return ex
    if dialect is ANTHROPIC:
        return json_response(anthropic_routes.model_list("2025-01-01T00:00:00Z"), ex.headers)
    return json_response(openai_routes.model_list(_CREATED), ex.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods still answer in a provider's error shape, as the real APIs do."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    dialect = ANTHROPIC if "anthropic-version" in request.headers else OPENAI
    return error_response(dialect, status, f"Invalid URL ({request.method} {request.url.path})", code=None)


def create_fake_provider(*, api_key: str | None = None, clock: Callable[[], float] = time.monotonic) -> Starlette:
    """Build a fake OpenAI + Anthropic server; see :mod:`tokenops.fakeprovider` for what it answers.

    ``api_key``: when set, requests must carry it as ``Authorization: Bearer`` or ``x-api-key``.
    ``clock``: monotonic seconds used for prompt-cache expiry; tests pass a fake clock to expire entries.
    """
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", openai_routes.chat_completions, methods=["POST"]),
            Route("/v1/completions", openai_routes.completions, methods=["POST"]),
            Route("/v1/embeddings", openai_routes.embeddings, methods=["POST"]),
            Route("/v1/messages", anthropic_routes.messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", anthropic_routes.count_tokens, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1beta/models/{target:path}", gemini_routes.call, methods=["POST"]),
            Route("/v1/models/{target:path}", gemini_routes.call, methods=["POST"]),
            Route("/v1/responses", responses_routes.create, methods=["POST"]),
            Route("/v1/responses/{response_id}", responses_routes.retrieve, methods=["GET"]),
            Route("/v1/responses/{response_id}", responses_routes.delete, methods=["DELETE"]),
            Route("/v1/responses/{response_id}/cancel", responses_routes.cancel, methods=["POST"]),
            Route("/v1/responses/{response_id}/input_items", responses_routes.input_items, methods=["GET"]),
            *(Route(path, endpoint, methods=[method]) for path, endpoint, method in batch_routes.routes()),
        ],
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.api_key = api_key
    app.state.clock = clock
    app.state.received = deque(maxlen=RECEIVED_LIMIT)
    app.state.openai_cache = PrefixMemory()
    app.state.anthropic_cache = PrefixMemory()
    app.state.responses = {}  # Responses API: id -> responses_routes.Stored
    return app
