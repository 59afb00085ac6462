"""Batches in the fake: OpenAI's ``/v1/files`` and ``/v1/batches``, Anthropic's ``/v1/messages/batches``.

Stateful and in memory, on the app instance. OpenAI: ``POST /v1/files`` (multipart: ``purpose``, ``file``),
``GET``/``DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``; ``POST /v1/batches`` (``input_file_id``,
``endpoint``, ``completion_window``, ``metadata``), ``GET /v1/batches[/{id}]``, ``POST /v1/batches/{id}/cancel``.
Anthropic: ``POST /v1/messages/batches`` (``requests``: ``custom_id`` and ``params``), ``GET
/v1/messages/batches[/{id}]``, ``POST …/{id}/cancel``, ``GET …/{id}/results`` (JSONL).

A batch is ``validating`` (Anthropic: ``in_progress``) when created and completes when it is next retrieved, or
after ``fake.pending`` more retrievals that still see it in progress (``pending`` in the create body's ``fake``
object or an ``x-fake-pending`` header). Completing runs every request through the fake's own synchronous route
(``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/completions``, ``/v1/responses``, ``/v1/messages``), so each
result's usage is what that route answers for the same body, ``fake`` controls of a request included (a
request with ``"fake": {"status": 400}`` becomes an error line). Results whose route answered an error go to the
error file (OpenAI) or are ``errored`` (Anthropic). ``fake.drop_lines`` leaves the last results out,
``fake.extra_lines`` adds results with a ``custom_id`` no request had (``extra-0``, …). Cancelling a batch that
has not ended ends it with nothing run (OpenAI ``cancelled`` with no output file; Anthropic ``ended`` with every
result ``canceled``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from . import anthropic_routes, openai_routes, responses_routes
from .exchange import begin
from .wire import ANTHROPIC, OPENAI, Dialect, error_response, json_response

Handler = Callable[[Request], Awaitable[ASGIApp]]
ENDPOINTS: dict[str, Handler] = {
    "/v1/chat/completions": openai_routes.chat_completions,
    "/v1/embeddings": openai_routes.embeddings,
    "/v1/completions": openai_routes.completions,
    "/v1/responses": responses_routes.create,
}
OPENAI_TERMINAL = ("completed", "failed", "expired", "cancelled")
_FORWARDED = (b"authorization", b"x-api-key", b"anthropic-version")


@dataclass(slots=True)
class StoredFile:
    id: str
    purpose: str
    filename: str
    data: bytes
    created_at: int

    def object(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "expires_at": None,
                "status_details": None}  # fmt: skip


@dataclass(slots=True)
class StoredBatch:
    payload: dict[str, Any]
    requests: list[tuple[str, str, dict[str, Any]]]  # (custom_id, path, body)
    pending: int = 0
    drop_lines: int = 0
    extra_lines: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)  # Anthropic: result lines once ended


class _Store:
    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, StoredBatch] = {}
        self.message_batches: dict[str, StoredBatch] = {}


def _store(request: Request) -> _Store:
    state = request.app.state
    try:
        store: _Store = state.batch_store
    except AttributeError:
        store = state.batch_store = _Store()
    return store


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _run(request: Request, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """Answer one batched request with the fake's own route for ``path``: (status, JSON body)."""
    handler = ENDPOINTS.get(path) or anthropic_routes.messages
    raw = orjson.dumps({k: v for k, v in body.items() if k != "stream"})
    headers = [(k, v) for k, v in request.scope["headers"] if k in _FORWARDED]
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [*headers, (b"content-type", b"application/json")], "app": request.app}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    answer = await handler(Request(scope, receive))
    if not isinstance(answer, Response):
        return 500, {"error": {"message": "the fake cannot batch a streamed answer", "type": "server_error"}}
    try:
        return answer.status_code, orjson.loads(bytes(answer.body))
    except orjson.JSONDecodeError:
        return 500, {"error": {"message": "unparseable answer", "type": "server_error"}}


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body's fields: name -> (filename, bytes)."""
    message = BytesParser().parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if not message.is_multipart():
        return fields
    for part in message.get_payload():
        if isinstance(part, str):
            continue
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields


# --- OpenAI files --------------------------------------------------------------------------------
async def upload_file(request: Request) -> ASGIApp:
    ex = await begin(request, OPENAI, needs_body=False)
    if isinstance(ex, Response):
        return ex
    fields = _multipart(request.headers.get("content-type", ""), await request.body())
    purpose, upload = fields.get("purpose"), fields.get("file")
    if purpose is None or upload is None:
        return error_response(OPENAI, 400, "'file' and 'purpose' are required multipart fields.", param="file")
    stored = StoredFile(_id("file-"), purpose[1].decode(), upload[0] or "upload.jsonl", upload[1], int(time.time()))
    _store(request).files[stored.id] = stored
    return json_response(stored.object(), ex.headers)


async def _file(request: Request) -> tuple[dict[str, str], StoredFile] | Response:
    ex = await begin(request, OPENAI, needs_body=False)
    if isinstance(ex, Response):
        return ex
    file_id = request.path_params["file_id"]
    stored = _store(request).files.get(file_id)
    if stored is None:
        return error_response(OPENAI, 404, f"No such File object: {file_id}", param="id", code=None)
    return ex.headers, stored


async def retrieve_file(request: Request) -> ASGIApp:
    found = await _file(request)
    return found if isinstance(found, Response) else json_response(found[1].object(), found[0])


async def file_content(request: Request) -> ASGIApp:
    found = await _file(request)
    if isinstance(found, Response):
        return found
    return Response(found[1].data, headers=found[0], media_type="application/octet-stream")


async def delete_file(request: Request) -> ASGIApp:
    found = await _file(request)
    if isinstance(found, Response):
        return found
    _store(request).files.pop(found[1].id, None)
    return json_response({"id": found[1].id, "object": "file", "deleted": True}, found[0])


# --- OpenAI batches ------------------------------------------------------------------------------
async def create_batch(request: Request) -> ASGIApp:
    ex = await begin(request, OPENAI)
    if isinstance(ex, Response):
        return ex
    body, store = ex.body, _store(request)
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        return error_response(OPENAI, 400, f"Invalid 'endpoint': {endpoint!r}.", param="endpoint")
    source = store.files.get(str(body.get("input_file_id")))
    if source is None or source.purpose != "batch":
        return error_response(OPENAI, 400, f"Invalid 'input_file_id': {body.get('input_file_id')!r}.",
                              param="input_file_id")  # fmt: skip
    requests: list[tuple[str, str, dict[str, Any]]] = []
    for n, line in enumerate(source.data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            return error_response(OPENAI, 400, f"Line {n} of the input file is not valid JSON.", param="input_file_id")
        if not isinstance(item, dict) or item.get("url") != endpoint or not isinstance(item.get("body"), dict):
            return error_response(OPENAI, 400, f"Line {n} of the input file does not call {endpoint}.",
                                  param="input_file_id")  # fmt: skip
        requests.append((str(item.get("custom_id")), endpoint, item["body"]))
    now = int(time.time())
    payload = {
        "id": _id("batch_"), "object": "batch", "endpoint": endpoint, "errors": None,
        "input_file_id": source.id, "completion_window": body.get("completion_window") or "24h",
        "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
        "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
        "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": len(requests), "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
    }  # fmt: skip
    c = ex.controls
    store.batches[payload["id"]] = StoredBatch(payload, requests, c.pending, c.drop_lines, c.extra_lines)
    return json_response(payload, ex.headers)


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def _complete_openai(request: Request, batch: StoredBatch) -> None:
    store = _store(request)
    ok: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for custom_id, path, body in batch.requests:
        status, answer = await _run(request, path, body)
        line = {"id": _id("batch_req_"), "custom_id": custom_id,
                "response": {"status_code": status, "request_id": _id("req_"), "body": answer}, "error": None}  # fmt: skip
        (ok if status < 400 else failed).append(line)
    if batch.drop_lines:
        ok = ok[: max(0, len(ok) - batch.drop_lines)]
    for n in range(batch.extra_lines):
        template = ok[0] if ok else {"response": {"status_code": 200, "request_id": _id("req_"), "body": {}}}
        ok.append({**template, "id": _id("batch_req_"), "custom_id": f"extra-{n}"})
    now = int(time.time())
    payload = {**batch.payload, "status": "completed", "in_progress_at": batch.payload["created_at"],
               "finalizing_at": now, "completed_at": now,
               "request_counts": {"total": len(batch.requests), "completed": len(ok), "failed": len(failed)}}  # fmt: skip
    for kind, lines in (("output_file_id", ok), ("error_file_id", failed)):
        if lines:
            f = StoredFile(_id("file-"), "batch_output", f"{batch.payload['id']}_{kind[:-8]}.jsonl", _jsonl(lines), now)
            store.files[f.id] = f
            payload[kind] = f.id
    batch.payload = payload


async def _batch(request: Request, table: str, dialect: Dialect) -> tuple[dict[str, str], StoredBatch] | Response:
    ex = await begin(request, dialect, needs_body=False)
    if isinstance(ex, Response):
        return ex
    batch_id = request.path_params["batch_id"]
    batch = getattr(_store(request), table).get(batch_id)
    if batch is None:
        message = f"No batch found with id '{batch_id}'." if dialect is OPENAI else f"batch {batch_id} not found"
        return error_response(dialect, 404, message, code=None)
    return ex.headers, batch


async def retrieve_batch(request: Request) -> ASGIApp:
    found = await _batch(request, "batches", OPENAI)
    if isinstance(found, Response):
        return found
    headers, batch = found
    if batch.payload["status"] not in OPENAI_TERMINAL:
        if batch.pending > 0:
            batch.pending -= 1
            batch.payload = {**batch.payload, "status": "in_progress", "in_progress_at": batch.payload["created_at"]}
        else:
            await _complete_openai(request, batch)
    return json_response(batch.payload, headers)


async def cancel_batch(request: Request) -> ASGIApp:
    found = await _batch(request, "batches", OPENAI)
    if isinstance(found, Response):
        return found
    headers, batch = found
    if batch.payload["status"] not in OPENAI_TERMINAL:
        now = int(time.time())
        batch.payload = {**batch.payload, "status": "cancelled", "cancelling_at": now, "cancelled_at": now}
    return json_response(batch.payload, headers)


async def list_batches(request: Request) -> ASGIApp:
    ex = await begin(request, OPENAI, needs_body=False)
    if isinstance(ex, Response):
        return ex
    data = [b.payload for b in reversed(_store(request).batches.values())]
    return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None, "has_more": False}, ex.headers)  # fmt: skip


# --- Anthropic message batches -------------------------------------------------------------------
async def create_message_batch(request: Request) -> ASGIApp:
    ex = await begin(request, ANTHROPIC)
    if isinstance(ex, Response):
        return ex
    given = ex.body.get("requests")
    if not isinstance(given, list) or not given:
        return error_response(ANTHROPIC, 400, "requests: Field required (a non-empty list)")
    requests: list[tuple[str, str, dict[str, Any]]] = []
    for n, item in enumerate(given):
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str) or \
                not isinstance(item.get("params"), dict):  # fmt: skip
            return error_response(ANTHROPIC, 400, f"requests.{n}: needs a string custom_id and an object params")
        requests.append((item["custom_id"], "/v1/messages", item["params"]))
    if len({r[0] for r in requests}) != len(requests):
        return error_response(ANTHROPIC, 400, "requests: custom_id values must be unique within a batch")
    now = datetime.now(UTC)
    payload = {
        "id": "msgbatch_01" + uuid.uuid4().hex[:22], "type": "message_batch", "processing_status": "in_progress",
        "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
        "ended_at": None, "created_at": _iso(now), "expires_at": _iso(now + timedelta(days=1)), "archived_at": None,
        "cancel_initiated_at": None, "results_url": None,
    }  # fmt: skip
    c = ex.controls
    _store(request).message_batches[str(payload["id"])] = StoredBatch(payload, requests, c.pending, c.drop_lines,
                                                                 c.extra_lines)  # fmt: skip
    return json_response(payload, ex.headers)


def _end_message_batch(request: Request, batch: StoredBatch, results: list[dict[str, Any]], **extra: Any) -> None:
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    for r in results:
        counts[r["result"]["type"]] += 1
    base = str(request.base_url).rstrip("/")
    batch.results = results
    batch.payload = {**batch.payload, **extra, "processing_status": "ended", "request_counts": counts,
                     "ended_at": _iso(datetime.now(UTC)),
                     "results_url": f"{base}/v1/messages/batches/{batch.payload['id']}/results"}  # fmt: skip


async def _complete_anthropic(request: Request, batch: StoredBatch) -> None:
    results: list[dict[str, Any]] = []
    for custom_id, path, body in batch.requests:
        status, answer = await _run(request, path, body)
        result = {"type": "succeeded", "message": answer} if status < 400 else {"type": "errored", "error": answer}
        results.append({"custom_id": custom_id, "result": result})
    if batch.drop_lines:
        results = results[: max(0, len(results) - batch.drop_lines)]
    for n in range(batch.extra_lines):
        template = results[0]["result"] if results else {"type": "succeeded", "message": {}}
        results.append({"custom_id": f"extra-{n}", "result": template})
    _end_message_batch(request, batch, results)


async def retrieve_message_batch(request: Request) -> ASGIApp:
    found = await _batch(request, "message_batches", ANTHROPIC)
    if isinstance(found, Response):
        return found
    headers, batch = found
    if batch.payload["processing_status"] != "ended":
        if batch.pending > 0:
            batch.pending -= 1
        else:
            await _complete_anthropic(request, batch)
    return json_response(batch.payload, headers)


async def cancel_message_batch(request: Request) -> ASGIApp:
    found = await _batch(request, "message_batches", ANTHROPIC)
    if isinstance(found, Response):
        return found
    headers, batch = found
    if batch.payload["processing_status"] != "ended":
        canceled = [{"custom_id": r[0], "result": {"type": "canceled"}} for r in batch.requests]
        _end_message_batch(request, batch, canceled, cancel_initiated_at=_iso(datetime.now(UTC)))
    return json_response(batch.payload, headers)


async def list_message_batches(request: Request) -> ASGIApp:
    ex = await begin(request, ANTHROPIC, needs_body=False)
    if isinstance(ex, Response):
        return ex
    data = [b.payload for b in reversed(_store(request).message_batches.values())]
    return json_response({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None}, ex.headers)  # fmt: skip


async def message_batch_results(request: Request) -> ASGIApp:
    found = await _batch(request, "message_batches", ANTHROPIC)
    if isinstance(found, Response):
        return found
    headers, batch = found
    if batch.payload["processing_status"] != "ended":
        return error_response(ANTHROPIC, 404, f"batch {batch.payload['id']} has not ended; no results yet")
    return Response(_jsonl(batch.results), headers=headers, media_type="application/binary")


def routes() -> list[tuple[str, Any, str]]:
    """(path, endpoint, method) of every batch route, for the app to register."""
    return [
        ("/v1/files", upload_file, "POST"),
        ("/v1/files/{file_id}", retrieve_file, "GET"),
        ("/v1/files/{file_id}", delete_file, "DELETE"),
        ("/v1/files/{file_id}/content", file_content, "GET"),
        ("/v1/batches", create_batch, "POST"),
        ("/v1/batches", list_batches, "GET"),
        ("/v1/batches/{batch_id}", retrieve_batch, "GET"),
        ("/v1/batches/{batch_id}/cancel", cancel_batch, "POST"),
        ("/v1/messages/batches", create_message_batch, "POST"),
        ("/v1/messages/batches", list_message_batches, "GET"),
        ("/v1/messages/batches/{batch_id}", retrieve_message_batch, "GET"),
        ("/v1/messages/batches/{batch_id}/cancel", cancel_message_batch, "POST"),
        ("/v1/messages/batches/{batch_id}/results", message_batch_results, "GET"),
    ]
