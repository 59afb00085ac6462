"""The docs' examples are tests (typer's principle): what the docs show, runs.

* every ```yaml block of docs/configuration.md and README.md is a whole config that parses;
* every ``$ tokenops …`` line of docs/cli.md runs, top to bottom, in a folder holding the page's own config;
* every ```python block of docs/http-api.md runs against a real gateway in front of the fake provider,
  configured like ``tokenops demo``'s, with ``BASE_URL`` and ``KEY`` defined.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from harness import create_key
from tokenops.config import load_config, parse_config
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.usage import Usage

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
KEY_ID = "key_…"  # the placeholder docs/cli.md uses for the id printed by the `keys create` before it
BLOCKING = ("serve", "demo")  # commands that run until interrupted (demo unless --no-wait)


def blocks(path: Path, lang: str) -> list[tuple[str, str]]:
    """``(where, text)`` of each fenced block of ``lang`` in ``path``; ``where`` is ``file:line``."""
    text = path.read_text(encoding="utf-8")
    return [
        (f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}", m.group(2))
        for m in _FENCE.finditer(text)
        if m.group(1) == lang
    ]


def fake_env(text: str) -> dict[str, str]:
    """A made-up value for each ``${VAR}`` without a default (those with one keep their default)."""
    return {name: f"test-{name.lower()}" for name, default in _VAR.findall(text) if not default}


# --- 1. configuration examples parse ------------------------------------------------------------

YAML_BLOCKS = blocks(DOCS / "configuration.md", "yaml") + blocks(ROOT / "README.md", "yaml")


def test_there_are_config_examples() -> None:
    assert len([w for w, _ in YAML_BLOCKS if w.startswith("configuration.md")]) >= 5
    assert any(w.startswith("README.md") for w, _ in YAML_BLOCKS)


@pytest.mark.parametrize(("where", "text"), YAML_BLOCKS, ids=[w for w, _ in YAML_BLOCKS])
def test_yaml_example_is_a_valid_config(where: str, text: str, tmp_path: Path) -> None:
    cfg = parse_config(text, file=str(tmp_path / "tokenops.yaml"), env=fake_env(text))
    for name in cfg.providers:
        cfg.provider_kind(name)  # every provider resolves to a known wire format


def test_the_complete_example_sets_every_section() -> None:
    where, text = YAML_BLOCKS[0]
    top = set(re.findall(r"^([a-z_]+):", text, re.M))
    assert {"ledger", "state", "providers", "models", "prices", "tagging", "gateway", "admin_key"} <= top, where


def test_every_config_key_is_documented() -> None:
    """A key added to the config models without a word in docs/configuration.md fails here."""
    from tokenops.config import Config, GatewayConfig, ModelAlias, ProviderConfig, TaggingConfig, Timeouts
    from tokenops.pricing.entries import PriceEntry, TierEntry

    doc = (DOCS / "configuration.md").read_text(encoding="utf-8")
    models: list[Any] = [Config, GatewayConfig, ModelAlias, ProviderConfig, TaggingConfig, Timeouts, PriceEntry,
                         TierEntry]  # fmt: skip
    for model in models:
        for name, field in model.model_fields.items():
            if field.exclude:
                continue  # internal (where the config came from)
            assert re.search(rf"`([a-z_]+\.)?{name}(\.[a-z_]+)?`", doc), f"{model.__name__}.{name} is not documented"


# --- 2. CLI examples run ------------------------------------------------------------------------

CLI_DOC = DOCS / "cli.md"


def cli_lines() -> list[tuple[str, list[str]]]:
    """``(where, argv after 'tokenops')`` for every ``$ tokenops …`` line of the console blocks, in order."""
    out = []
    for where, text in blocks(CLI_DOC, "console"):
        file, line = where.split(":")
        for i, row in enumerate(text.splitlines()):
            if row.startswith("$ "):
                argv = shlex.split(row[2:], comments=True)
                assert argv[0] == "tokenops", f"{file}:{int(line) + 1 + i}: not a tokenops command: {row}"
                out.append((f"{file}:{int(line) + 1 + i}", argv[1:]))
    return out


def blocks_forever(argv: list[str]) -> bool:
    return argv[0] == "serve" or (argv[0] == "demo" and "--no-wait" not in argv)


def seed(ledger_path: Path) -> None:
    """A few calls in the ledger, so that the report examples have rows to group (one of them unpriced)."""
    now = datetime.now(UTC)
    rows = [("search", "gpt-4o-mini", "openai", Decimal("0.000123456789"), "alice"),
            ("search", "claude-sonnet-4-5", "anthropic", Decimal("0.0042"), None),
            (None, "gpt-4o", "openai", Decimal("0.3"), None),
            ("research", "mystery-7b", "local", None, "bob")]  # fmt: skip
    DuckDBLedger(ledger_path).append([
        SpendEvent(request_id=new_request_id(), ts=now - timedelta(hours=5 * i), source="test", provider=provider,
                   model_requested=model, model_used=model, usage=Usage(input_tokens=100, output_tokens=10),
                   cost_usd=cost, end_user=user,
                   tags={k: v for k, v in (("team", team), ("env", "prod"), ("feature", "docs")) if v})
        for i, (team, model, provider, cost, user) in enumerate(rows)
    ])  # fmt: skip


def test_cli_examples_run_top_to_bottom(tmp_path: Path) -> None:
    config_where, config = blocks(CLI_DOC, "yaml")[0]
    (tmp_path / "tokenops.yaml").write_text(config)
    env = {k: v for k, v in os.environ.items() if k != "TOKENOPS_CONFIG"}
    env.update(fake_env(config), COLUMNS="160")
    seed(load_config(tmp_path / "tokenops.yaml", env=env).ledger_path())

    lines = cli_lines()
    assert len(lines) >= 12, "docs/cli.md lost its examples"
    commands = {" ".join(argv[:2]) for _, argv in lines}
    for group in ("keys create", "keys list", "keys revoke", "report spend", "prices list", "prices show"):
        assert group in commands, f"docs/cli.md has no example of tokenops {group}"

    def run(where: str, argv: list[str]) -> str:
        r = subprocess.run([sys.executable, "-m", "tokenops", *argv], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, f"{where}: tokenops {shlex.join(argv)} exited {r.returncode}\n{r.stdout}{r.stderr}"
        return r.stdout

    # A `keys` line runs once every line above it has finished (it creates, lists or revokes keys); the others
    # (reports, prices, --help) do not depend on each other, so they run side by side, as they may in real use
    # (processes take turns on the ledger file). This keeps the whole page to a few seconds.
    key_id = None
    helped: set[str] = set()
    with ThreadPoolExecutor(max_workers=4) as pool:
        pending: list[Future[str]] = []
        for where, argv in lines:
            if blocks_forever(argv):
                # it would run until interrupted: check that at least its options parse
                if argv[0] in helped:
                    continue
                helped.add(argv[0])
                argv = [argv[0], "--help"]
            if argv[0] != "keys":
                pending.append(pool.submit(run, where, argv))
                continue
            for done in pending:
                done.result()
            pending = []
            if KEY_ID in argv:
                assert key_id is not None, f"{where}: {KEY_ID} is used before any `keys create`"
                argv = [key_id if a == KEY_ID else a for a in argv]
            out = run(where, argv)
            if argv[:2] == ["keys", "create"]:
                found = re.search(r"key_[0-9a-f]{12}", out)
                assert found, f"{where}: no key id in\n{out}"
                key_id = found.group(0)
        for done in pending:
            done.result()
    assert helped == set(BLOCKING), f"docs/cli.md should show {BLOCKING} (they are only --help-checked)"
    assert config_where.startswith("cli.md")


# --- 3. HTTP API examples run against a real gateway ----------------------------------------------

HTTP_BLOCKS = blocks(DOCS / "http-api.md", "python")


class DemoStack:
    """The fake provider and a gateway configured like ``tokenops demo``'s, on real loopback sockets."""

    def __init__(self, tmp: Path):
        from tokenops.demo import CONFIG, PROVIDER_KEY
        from tokenops.fakeprovider import create_fake_provider
        from tokenops.gateway.app import create_app
        from tokenops.servers import BackgroundServer

        self.fake = BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)).start()
        path = tmp / "tokenops.yaml"
        path.write_text(CONFIG.format(fake=self.fake.url, key=PROVIDER_KEY, port=0))
        self.gateway = create_app(load_config(path, env={}))
        _, self.key = create_key(self.gateway.ledger, name="search-app", tags={"team": "search", "env": "prod"},
                                 locked=("team",))  # fmt: skip
        self.server = BackgroundServer(self.gateway).start()
        self.url = self.server.url

    def close(self) -> None:
        self.server.stop()
        self.fake.stop()


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = DemoStack(tmp_path_factory.mktemp("docs-http"))
    yield stack
    stack.close()


def test_there_are_http_examples() -> None:
    text = "\n".join(t for _, t in HTTP_BLOCKS)
    assert len(HTTP_BLOCKS) >= 6 and "from openai import" in text and "import anthropic" in text


@pytest.mark.parametrize(("where", "code"), HTTP_BLOCKS, ids=[w for w, _ in HTTP_BLOCKS])
def test_http_example_runs(where: str, code: str, demo_stack: DemoStack, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {"__name__": "__docs__", "BASE_URL": demo_stack.url, "KEY": demo_stack.key}
    exec(compile(code, str(DOCS / where.split(":")[0]) + f" (block at line {where.split(':')[1]})", "exec"), namespace)
    for name in ("client", "claude"):  # close the SDK clients the example opened
        if hasattr(namespace.get(name), "close"):
            namespace[name].close()


def test_http_tags_example_records_what_the_doc_says(demo_stack: DemoStack) -> None:
    """The first example's prose promises tags and an end user: check them in the ledger."""
    where, code = HTTP_BLOCKS[0]
    namespace: dict[str, Any] = {"BASE_URL": demo_stack.url, "KEY": demo_stack.key}
    exec(compile(code, where, "exec"), namespace)
    event = demo_stack.gateway.meter.lookup_recent(namespace["raw"].headers["X-TokenOps-Request-Id"])
    assert event is not None and event.end_user == "alice"
    assert event.tags == {"team": "search", "env": "prod", "project": "q3-review", "feature": "summary"}
    namespace["client"].close()
