"""A fake LLM provider that speaks OpenAI's and Anthropic's wire formats, for tests, the demo and the benchmark.

No real provider is reachable from tests or the benchmark, so this ASGI app answers like one: the official
``openai`` and ``anthropic`` SDKs work against it unchanged. It is deterministic (usage can be predicted to the
token), fast (it is the upstream in a latency benchmark) and steerable (failures are asked for in the request).

    from tokenops.fakeprovider import create_fake_provider
    from tokenops.servers import BackgroundServer

    with BackgroundServer(create_fake_provider()) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")

Routes: ``POST /v1/chat/completions`` (JSON, or SSE with ``stream: true``), ``POST /v1/completions`` (legacy),
``POST /v1/responses`` (JSON, SSE, ``background``) with ``GET``/``DELETE /v1/responses/{id}``, ``…/cancel`` and
``…/input_items`` (see :mod:`tokenops.fakeprovider.responses_routes`), ``POST /v1/embeddings``,
``POST /v1/messages`` (JSON or SSE), ``POST /v1/messages/count_tokens``, ``GET /v1/models`` (Anthropic's shape
when ``anthropic-version`` is sent).
Any model name is accepted and echoed back. ``n`` answers are billed (the prompt once, the output ``n`` times)
and returned as ``n`` identical choices (a stream interleaves them, one chunk per choice index); function tools are called
only when ``fake.tool_call`` asks (below) or ``tool_choice`` forces it (OpenAI's ``required`` or a named
function, Anthropic's ``any`` or ``tool``, Gemini's ``functionCallingConfig`` mode ``ANY``: the named or first
tool, with ``"Paris"`` for required strings and a value that fits the schema for other required arguments); Anthropic's ``max_tokens`` and ``anthropic-version`` header are optional.

Token accounting
----------------
* Prompt: each message costs ``ceil(len(text) / 4) + 4`` tokens; ``text`` is the string content or the
  concatenated ``text`` of its parts/blocks (an Anthropic ``tool_result`` counts by the text inside it; images,
  tools and tool calls are free). A system prompt (Anthropic ``system``: string or text blocks) counts the same.
  Embeddings: ``ceil(len(text) / 4)`` per input string, or the length of a pre-tokenized input.
* Output: a deterministic text of words chosen by a hash of the prompt (same prompt, same answer), 8 to 40
  words, one token per word. ``max_tokens`` / ``max_completion_tokens`` caps it; a capped answer ends with
  ``finish_reason: "length"`` / ``stop_reason: "max_tokens"``.
* Structured output: a JSON schema asked for (chat ``response_format`` ``json_schema``, the Responses API's
  ``text.format``, Gemini's ``responseMimeType: application/json`` with ``responseJsonSchema`` or
  ``responseSchema``) is answered with a JSON value that validates against it (every property filled, the first
  of an ``enum`` or ``anyOf``, words for strings; :func:`~tokenops.fakeprovider.accounting.json_instance`);
  ``json_object`` (or no schema) with ``{"answer": "..."}``. One output token per 4 characters of the JSON
  text; a cap cuts the text there (``finish_reason: "length"``), as a real model's would be cut.
* Reasoning: models whose name starts with ``o1``, ``o3``, ``o4`` or ``gpt-5`` also "think" two tokens per
  visible word: ``reasoning_tokens = 2 * words`` and ``completion_tokens = 3 * words`` (the cap applies to the
  total, so a capped answer has ``cap // 3`` words).
* OpenAI prompt caching (automatic): when the whole prompt is >= 1024 tokens, ``cached_tokens`` is the token
  count of the longest run of leading messages (never the last message) that an earlier request to the same
  model also started with, rounded down to a multiple of 128. Messages compare as whole JSON objects, so two
  requests sharing a long system message but asking different questions hit, as does a conversation that
  grows by a turn. ``prompt_tokens`` includes the cached tokens. Entries live 10 minutes (refreshed on a hit)
  in a bounded LRU held on the app instance.
* Anthropic prompt caching (explicit): a system or message content block with ``cache_control: {"type":
  "ephemeral", "ttl": "5m"|"1h"}`` (default 5m) marks a breakpoint; the prefix up to and including it counts
  as the earlier units' tokens plus ``ceil(len(text so far in its unit) / 4) + 4``. The latest breakpoint whose
  prefix was seen (same model, not expired) is read (``cache_read_input_tokens``); every later breakpoint's
  prefix is written (``cache_creation_input_tokens``, split into ``cache_creation.ephemeral_5m/1h_input_tokens``
  by the ttl of the breakpoint that ends each segment). ``input_tokens`` excludes reads and writes. There is no
  minimum cacheable length.
* ``fake.usage`` (below) replaces the computed figures, and the cache is neither consulted nor updated.

Controls
--------
In the request body as ``"fake": {...}`` or as ``x-fake-<name>`` headers (``_`` written ``-``; the body wins):

* ``status``: answer with this HTTP error in the provider's error shape (429 carries ``retry-after``,
  ``rate_limit_error`` / ``rate_limit_exceeded``; 500 ``api_error`` / ``server_error``; 529 ``overloaded_error``).
* ``retry_after``: seconds for the ``retry-after`` header (default 1 on a 429).
* ``delay_ms``: wait this long before answering (errors included).
* ``chunk_delay_ms``: wait this long between SSE events.
* ``garbage``: answer 200 with a body that is not JSON (or SSE events whose data is not JSON).
* ``disconnect_after``: stream only this many SSE events then drop the connection; for a JSON answer, send
  this many bytes of the body (with a content-length promising all of it) then drop the connection.
* ``chunks``: split the streamed text into exactly this many content deltas (default: one per word).
* ``model``: the model name to report in the answer (default: the one requested).
* ``think``: hidden reasoning tokens spent before answering (a reasoning model on a hard problem), counted in
  the output and its reasoning tokens; they come out of ``max_tokens`` / ``max_completion_tokens`` first, as
  on the real APIs, so a cap below them leaves no visible answer (``finish_reason: "length"``).
* ``tool_call``: call the first function tool of ``tools`` (chat: ``tool_calls`` with ``finish_reason:
  "tool_calls"``, streamed as OpenAI does; Responses: a ``function_call`` output item), with ``"Paris"`` for each
  required string argument, unless the conversation already ends with a tool's result.
* ``pending`` (Responses, ``background: true``): retrievals that still see ``in_progress`` before it completes.
* ``pending`` also holds a batch (``/v1/batches``, ``/v1/messages/batches``) in progress for that many retrievals;
  ``drop_lines`` / ``extra_lines`` (on a batch's create) leave the last results out of its output or add results
  with an unknown ``custom_id``: see :mod:`tokenops.fakeprovider.batch_routes`.
* ``usage``: ``{"input", "cached", "cache_write_5m", "cache_write_1h", "output", "reasoning"}``, each optional,
  reported exactly: ``input`` is the whole prompt. OpenAI reports ``prompt_tokens = input``,
  ``cached_tokens = cached``, ``cache_write_tokens = cache_write_5m + cache_write_1h`` (when not 0),
  ``completion_tokens = output`` (Responses: ``input_tokens``, ``output_tokens``, the same details);
  Anthropic reports ``input_tokens = input - cached - writes``, ``cache_read_input_tokens = cached``,
  ``cache_creation_input_tokens = writes``, ``output_tokens = output``. Omitted ``input``/``output`` keep their
  computed values; omitted cache fields are 0; ``reasoning`` defaults to 0 when ``output`` is given.
  Embeddings report ``usage.input`` as their prompt tokens.

An unknown key in ``fake`` or a malformed value is a 400 (a typo should fail loudly, not be ignored); a
``status`` below 400 means "answer normally". Unknown top-level request fields are accepted and ignored.

Observability: ``app.state.received`` is a deque of the last 1000 requests, each
``{"method", "path", "query" (the raw query string), "headers" (lower-cased names), "body" (parsed JSON, or
None)}``, recorded before any check. ``POST /v1/messages/count_tokens`` counts a prompt as ``/v1/messages`` would.
Every answer carries ``x-request-id`` (OpenAI routes) or ``request-id`` (Anthropic routes, whose error bodies
also carry ``request_id``); ids look like the real ones (``chatcmpl-…``, ``msg_01…``, ``req_…``).
``create_fake_provider(clock=...)`` takes the monotonic clock used for cache expiry, for tests of expiry.
"""

from .app import create_fake_provider

__all__ = ["create_fake_provider"]
