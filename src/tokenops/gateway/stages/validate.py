"""Validate stage: read the body (bounded by ``gateway.max_body_bytes``) and check it for the route
(:mod:`tokenops.gateway.validate`): the model, the stream flag, the input's shape and size."""

from __future__ import annotations

from tokenops.call import Call
from tokenops.gateway import validate
from tokenops.gateway.http import read_body


class ValidateStage:
    def __init__(self, max_body_bytes: int):
        self.max_body_bytes = max_body_bytes

    async def __call__(self, call: Call) -> None:
        raw = await read_body(call.receive, call.headers, self.max_body_bytes)
        if call.path_model is not None:  # Gemini: the model is in the path
            validate.gemini_request(call, raw, call.path_model)
        else:
            validate.request(call, raw)
