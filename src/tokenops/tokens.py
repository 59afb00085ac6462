"""Token counts known before a call is answered: typical estimates and true upper bounds.

What a provider bills is only known from its answer. Before it (reservations, caps, rate limits) and when an
answer never comes (a cancelled stream, a timeout), the gateway counts what the request holds, in one place:

* **Text** (messages, system prompt, tool definitions): about 4 characters a token plus 4 tokens of formatting
  a message is the *estimate*; the body's size in bytes is the *bound* (every token of a BPE tokenizer covers
  at least one byte, and the JSON around the text is more than the per-message formatting tokens).
* **Images**: a provider bills an image by its pixel size, which a request that sends a URL does not tell.
  Each image part counts the most its model family can bill for one image (:func:`image_tokens`), as the
  estimate and as the bound. An inline (base64) image still counts: its bytes can be far fewer than its
  tokens (a tiny PNG costs gpt-4o-mini 2,833 tokens).
* **Parts the body does not bound**: documents (a PDF is billed per page, as text and as page images),
  files sent by id, audio or video by reference, and server-side tools (web search, web fetch, code
  execution, MCP servers) that add what they fetch to the prompt. Only the model's context window bounds what
  one model turn reads; a server-side tool loop reads its prompt once a turn (:class:`InputShape.turns`).

Inline audio (``input_audio``) is bounded by its bytes: a second of audio is about 10 tokens and takes far
more than 10 bytes in base64.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

# The most tokens one image can be billed, by model name (upstream name, e.g. "gpt-4o-mini-2024-07-18").
# OpenAI tiles an image into at most 8 tiles of 512 px after scaling: gpt-4o bills 85 + 170 a tile (1,445 at
# most), gpt-4o-mini 2,833 + 5,667 a tile (48,169 at most: it is priced to cost what gpt-4o costs); patch-based
# models (gpt-4.1-mini/nano, o4-mini, gpt-5-mini/nano) bill at most 1,536 patches times a multiplier of up to
# 2.46 (3,779). Anthropic resizes images to about 1.15 megapixels, about 1,600 tokens. Gemini bills 258 tokens a
# 768 px tile. The default covers every family above but gpt-4o-mini.
IMAGE_TOKENS: tuple[tuple[str, int], ...] = (
    ("gpt-4o-mini*", 48_169),
    ("chatgpt-4o-mini*", 48_169),
)
DEFAULT_IMAGE_TOKENS = 6_000
# Server-side tool loops: Anthropic pauses a turn (stop_reason "pause_turn") after 10 model iterations.
SERVER_TOOL_TURNS = 10
MESSAGE_OVERHEAD = 4  # formatting tokens a message, in the estimate


def image_tokens(model: str, default: int = DEFAULT_IMAGE_TOKENS) -> int:
    """The most tokens one image part can be billed by ``model``."""
    for pattern, tokens in IMAGE_TOKENS:
        if fnmatch.fnmatchcase(model, pattern):
            return max(tokens, default)
    return default


@dataclass(frozen=True, slots=True)
class InputShape:
    """What a request's input is made of, beyond its text: filled once, when the body is validated.

    ``images``: image parts. ``unbounded``: parts whose tokens the body does not bound (documents, files by
    id, media by reference, server-side tools). ``turns``: how many times one call may read its prompt (a
    server-side tool loop runs several model turns in one call; 1 otherwise).
    """

    chars: int = 0  # characters of text
    messages: int = 1
    images: int = 0
    unbounded: int = 0
    turns: int = 1


def _text_estimate(shape: InputShape) -> int:
    return (shape.chars + 3) // 4 + MESSAGE_OVERHEAD * shape.messages


def estimate_input(shape: InputShape, model: str, image_default: int = DEFAULT_IMAGE_TOKENS) -> int:
    """A typical figure for the input tokens of a request (what an estimate records, what a rate limit counts)."""
    return _text_estimate(shape) + shape.images * image_tokens(model, image_default)


def input_bound(shape: InputShape, body_bytes: int, model: str, *, context_window: int | None,
                unbounded_default: int, image_default: int = DEFAULT_IMAGE_TOKENS) -> int:  # fmt: skip
    """The most input tokens a request can be billed: its bytes and images, or for parts the body does not
    bound, the model's context window (``unbounded_default`` when unknown), once per model turn."""
    bounded = max(body_bytes, _text_estimate(shape)) + shape.images * image_tokens(model, image_default)
    if shape.unbounded:
        bounded = max(bounded, context_window or unbounded_default)
    return bounded * max(1, shape.turns)


__all__ = ["DEFAULT_IMAGE_TOKENS", "InputShape", "estimate_input", "image_tokens", "input_bound"]
