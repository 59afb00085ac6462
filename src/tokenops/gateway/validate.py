"""Checks of the request body that the gateway relies on; everything else passes through untouched.

A wrong body gets a 400 naming the field (``param``) in the route's error shape, before any upstream call.
Besides the JSON shape, this is where the gateway learns what the input is made of (text, images, parts the
body does not bound: :class:`~tokenops.tokens.InputShape`) and how many answers the call asks for (``n``,
``best_of``), which its maximum cost depends on.

Text that ends up in response headers and in the ledger is checked here too: a model name or end user must be
printable text of a sane length (no CR, LF or NUL), and the body may not nest deeper than
:data:`MAX_DEPTH` (the JSON encoder that re-sends it upstream has a recursion limit).
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenops.call import Call
from tokenops.errors import GatewayError
from tokenops.tokens import SERVER_TOOL_TURNS, InputShape

MAX_DEPTH = 100
MAX_NAME = 256  # characters of a model name or an end user
MAX_CHOICES = 128  # OpenAI's own limit on n


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, "invalid_request", message, param=param)


class _Shape:
    """Counts text, images and unbounded parts while walking message contents."""

    __slots__ = ("chars", "images", "unbounded")

    def __init__(self) -> None:
        self.chars = 0
        self.images = 0
        self.unbounded = 0

    def content(self, content: Any) -> None:
        if isinstance(content, str):
            self.chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, str):
                    self.chars += len(part)
                elif isinstance(part, dict):
                    self.part(part)

    def part(self, part: dict[str, Any]) -> None:
        text = part.get("text")
        if isinstance(text, str):
            self.chars += len(text)
        kind = part.get("type")
        if kind in ("image_url", "input_image", "image"):
            self.images += 1
        elif kind in ("file", "input_file", "document", "container_upload", "video_url", "input_video"):
            source = part.get("source")
            if kind == "document" and isinstance(source, dict) and source.get("type") in ("text", "content"):
                self.content(source.get("data") if source.get("type") == "text" else source.get("content"))
            else:
                self.unbounded += 1  # a PDF is billed per page (text and page images), a file id by its content
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not (isinstance(audio, dict) and isinstance(audio.get("data"), str)):
                self.unbounded += 1  # inline audio is bounded by its bytes; any other kind is not
        elif kind in ("tool_result", "search_result") or "content" in part:
            self.content(part.get("content"))


def _optional(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> None:
    if name in body and body[name] is not None:
        value = body[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise _bad(f"'{name}' must be {what}", name)


def _name(value: Any, param: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"'{param}' must be a non-empty string", param)
    if len(value) > MAX_NAME or not value.isprintable():
        raise _bad(f"'{param}' must be printable text of at most {MAX_NAME} characters ({what})", param)
    return value


def _count(body: dict[str, Any], name: str, limit: int) -> int:
    value = body.get(name)
    if value is None:
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
        raise _bad(f"'{name}' must be an integer from 1 to {limit}", name)
    return value


def _messages(body: dict[str, Any], shape: _Shape) -> int:
    messages = body.get("messages")
    if messages is None:
        raise _bad("'messages' is required", "messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad(f"'messages[{i}]' must be an object", f"messages[{i}]")
        if not isinstance(m.get("role"), str):
            raise _bad(f"'messages[{i}].role' must be a string", f"messages[{i}].role")
        shape.content(m.get("content"))
        if isinstance(m.get("audio"), dict):
            shape.unbounded += 1  # an earlier answer's audio, sent back by id, is billed again as input
    return len(messages)


def _server_tools(body: dict[str, Any], flavor: str) -> tuple[int, int]:
    """(unbounded parts, model turns) that server-side tools add: what they fetch becomes input, and a tool
    loop re-reads the prompt each turn."""
    if flavor == "anthropic":
        tools = body.get("tools")
        server = [t for t in tools if isinstance(t, dict) and isinstance(t.get("type"), str)
                  and t["type"] != "custom"] if isinstance(tools, list) else []  # fmt: skip
        if server or body.get("mcp_servers"):
            return 1, SERVER_TOOL_TURNS
        return 0, 1
    if body.get("web_search_options") is not None:
        return 1, 1
    tools = body.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and t.get("type") not in (None, "function", "custom")
                                       for t in tools):  # fmt: skip
        return 1, SERVER_TOOL_TURNS  # Responses built-in tools: web and file search, code interpreter, MCP, …
    return 0, 1


def _response_input(body: dict[str, Any], shape: _Shape) -> int:
    """The Responses API's ``input`` (a string or a list of items) and ``instructions``; returns the item count."""
    _optional(body, "instructions", str, "a string")
    _optional(body, "max_output_tokens", int, "an integer")
    _optional(body, "previous_response_id", str, "a string")
    shape.content(body.get("instructions"))
    given = body.get("input")
    items: list[Any] = []
    if isinstance(given, str):
        shape.chars += len(given)
        items = [given]
    elif isinstance(given, list):
        items = given
        for i, item in enumerate(given):
            if not isinstance(item, dict):
                raise _bad(f"'input[{i}]' must be an object", f"input[{i}]")
            shape.content(item.get("content"))
            for name in ("output", "arguments"):  # function_call_output, function_call
                if isinstance(item.get(name), str):
                    shape.chars += len(item[name])
    elif given is not None:
        raise _bad("'input' must be a string or an array of input items", "input")
    if any(body.get(name) is not None for name in ("previous_response_id", "conversation", "prompt")):
        shape.unbounded += 1  # earlier turns, a stored conversation or prompt: billed as input, not in this body
    return max(1, len(items))


def _prompt(body: dict[str, Any], shape: _Shape) -> int:
    """Legacy completions' ``prompt``: a string, strings, or token arrays."""
    prompt = body.get("prompt")
    if prompt is None:
        raise _bad("'prompt' is required", "prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) and prompt else None
    if prompts is None:
        raise _bad("'prompt' must be a string or a non-empty array", "prompt")
    for p in prompts:
        if isinstance(p, str):
            shape.chars += len(p)
        elif isinstance(p, int) and not isinstance(p, bool):
            shape.chars += 4  # one token of a pre-tokenized prompt
        elif isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            shape.chars += 4 * len(p)
        else:
            raise _bad("'prompt' must be a string, an array of strings or an array of token arrays", "prompt")
    return len(prompts)


def _too_deep(raw: bytes, body: Any) -> bool:
    # Fewer brackets than the limit cannot nest deeper than it (brackets inside strings only add to the count),
    # which settles almost every body without a walk.
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    return _depth(body) > MAX_DEPTH


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                break
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return deepest


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or the 400 that says what is wrong."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():
            raise _bad(f"the request body nests deeper than {MAX_DEPTH} levels") from None
        raise _bad(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    if _too_deep(raw, body):
        raise _bad(f"the request body nests deeper than {MAX_DEPTH} levels")
    return body


def body_and_model(raw: bytes) -> tuple[dict[str, Any], str]:
    """The JSON object of a request body and the model it names, or the 400 that says what is wrong."""
    body = json_object(raw)
    model = body.get("model")
    if model is None:
        raise _bad("'model' is required", "model")
    return body, _name(model, "model", "a model name")


def request(call: Call, raw: bytes) -> None:
    """Parse and check the JSON body; fill the call's model, stream flag, input shape and answer count."""
    body, model = body_and_model(raw)
    _optional(body, "stream", bool, "a boolean")
    _optional(body, "user", str, "a string")
    if body.get("user") is not None:
        _name(body["user"], "user", "an end user id")
    _optional(body, "metadata", dict, "an object")
    _optional(body, "max_tokens", int, "an integer")
    _optional(body, "max_completion_tokens", int, "an integer")
    shape = _Shape()
    messages = 1
    if call.route == "chat.completions":
        messages = _messages(body, shape)
        _optional(body, "stream_options", dict, "an object")
        call.choices = _count(body, "n", MAX_CHOICES)
    elif call.route == "messages":
        messages = _messages(body, shape)
        shape.content(body.get("system"))
        if "max_tokens" not in body:
            raise _bad("'max_tokens' is required", "max_tokens")
        meta = body.get("metadata")
        if isinstance(meta, dict) and meta.get("user_id") is not None:
            _name(meta["user_id"], "metadata.user_id", "an end user id")
    elif call.route == "responses":
        messages = _response_input(body, shape)
        if body.get("safety_identifier") is not None:
            _name(body["safety_identifier"], "safety_identifier", "an end user id")
        _optional(body, "background", bool, "a boolean")
    elif call.route == "completions":
        messages = _prompt(body, shape)
        _optional(body, "stream_options", dict, "an object")
        n = _count(body, "n", MAX_CHOICES)
        best_of = _count(body, "best_of", 20)
        if best_of < n:
            raise _bad("'best_of' must be at least 'n'", "best_of")
        call.choices = max(n, best_of) * messages  # each prompt gets best_of completions, all billed
    elif call.route == "embeddings":
        inp = body.get("input")
        if inp is None:
            raise _bad("'input' is required", "input")
        if isinstance(inp, str):
            shape.chars = len(inp)
        elif isinstance(inp, list) and inp:
            shape.chars = sum(len(x) if isinstance(x, str) else 4 for x in inp)
        else:
            raise _bad("'input' must be a string or a non-empty array", "input")
    unbounded, turns = _server_tools(body, call.flavor)
    call.shape = InputShape(chars=shape.chars, messages=messages, images=shape.images,
                            unbounded=shape.unbounded + unbounded, turns=turns)  # fmt: skip
    call.body = body
    call.body_bytes = len(raw)
    call.model_requested = model
    call.stream = body.get("stream") is True and call.route != "embeddings"


_GOOGLE_SERVER_TOOLS = ("googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext", "googleMaps",
                        "fileSearch", "computerUse")  # fmt: skip


def _gemini_parts(value: Any, shape: _Shape, param: str) -> None:
    """A Gemini ``Content`` (``{"role", "parts": [...]}``): text counted, inline images counted, other media
    and files by reference are unbounded (billed by their length, which the body does not say)."""
    if not isinstance(value, dict):
        raise _bad(f"'{param}' must be an object with 'parts'", param)
    parts = value.get("parts")
    if not isinstance(parts, list):
        raise _bad(f"'{param}.parts' must be an array", f"{param}.parts")
    for part in parts:
        if not isinstance(part, dict):
            raise _bad(f"'{param}.parts' must hold objects", f"{param}.parts")
        if isinstance(part.get("text"), str):
            shape.chars += len(part["text"])
        inline = part.get("inlineData") or part.get("inline_data")
        if isinstance(inline, dict):
            mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
            if mime.startswith("image/"):
                shape.images += 1
            else:
                shape.unbounded += 1  # audio, video, PDF: billed by duration or pages
        if part.get("fileData") or part.get("file_data"):
            shape.unbounded += 1
        for name in ("functionCall", "functionResponse"):
            if isinstance(part.get(name), dict):
                shape.chars += len(orjson.dumps(part[name]))


def model_name(value: Any) -> str:
    """A model name fit for headers and the ledger (printable, at most 256 characters), or the 400."""
    return _name(value, "model", "a model name")


def gemini_request(call: Call, raw: bytes, model: str) -> None:
    """A Gemini call: the model is in the path; the body is a GenerateContentRequest, an EmbedContentRequest
    (``content``) or a BatchEmbedContentsRequest (``requests``)."""
    body = json_object(raw)
    model = _name(model, "model", "a model name")
    shape = _Shape()
    turns, messages = 1, 1
    if call.route == "gemini.embed":
        _gemini_parts(body.get("content"), shape, "content")
    elif call.route == "gemini.batch_embed":
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _bad("'requests' must be a non-empty array", "requests")
        for i, r in enumerate(requests):
            _gemini_parts(r.get("content") if isinstance(r, dict) else None, shape, f"requests[{i}].content")
        messages = len(requests)
    else:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _bad("'contents' must be a non-empty array", "contents")
        for i, c in enumerate(contents):
            _gemini_parts(c, shape, f"contents[{i}]")
        messages = len(contents)
        if body.get("systemInstruction") is not None:
            _gemini_parts(body["systemInstruction"], shape, "systemInstruction")
        if body.get("cachedContent") is not None:
            shape.unbounded += 1  # the cached content is billed as (cached) input; the body does not hold it
        tools = body.get("tools")
        if isinstance(tools, list) and any(isinstance(t, dict) and any(k in t for k in _GOOGLE_SERVER_TOOLS)
                                           for t in tools):  # fmt: skip
            shape.unbounded += 1
            turns = SERVER_TOOL_TURNS
        config = body.get("generationConfig")
        if config is not None:
            if not isinstance(config, dict):
                raise _bad("'generationConfig' must be an object", "generationConfig")
            _optional(config, "maxOutputTokens", int, "an integer")
            candidates = config.get("candidateCount")
            if candidates is not None:
                if not isinstance(candidates, int) or isinstance(candidates, bool) or not 1 <= candidates <= 8:
                    raise _bad("'generationConfig.candidateCount' must be an integer from 1 to 8",
                               "generationConfig.candidateCount")  # fmt: skip
                call.choices = candidates
    call.shape = InputShape(chars=shape.chars, messages=messages, images=shape.images, unbounded=shape.unbounded,
                            turns=turns)  # fmt: skip
    call.body = body
    call.body_bytes = len(raw)
    call.model_requested = model
    call.stream = call.route == "gemini.stream"

