"""SDK clients for the modules that serve a whole stack on sockets: each such module defines its own ``stack``
fixture (a :class:`harness.SocketStack`), and these clients talk to it with its key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest


@pytest.fixture(scope="module")
def oai(stack: Any) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def claude(stack: Any) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=stack.url, api_key=stack.key, max_retries=0)
    yield client
    client.close()
