"""The docs' examples are tests (typer's principle): what the docs show, runs.

* every ```yaml block of docs/configuration.md, docs/governance.md, docs/http-api.md and README.md is a whole
  config that parses;
* every ``$ tokenops …`` line of docs/cli.md and docs/governance.md runs, top to bottom, in a folder holding the
  page's own config (its first ```yaml block) and a few calls in the ledger;
* every ```python block of docs/http-api.md runs against a real gateway in front of the fake provider,
  configured like ``tokenops demo``'s, with ``BASE_URL`` and ``KEY`` defined; the blocks after the page's
  ```yaml block run against one whose config also has that block's policy, with ``ADMIN_KEY`` defined too;
* the webhook receiver of docs/governance.md verifies what the webhook channel signs.
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
import yaml

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
APPROVAL_ID = "apr_…"  # the placeholder for a pending approval request: the runner records one for each use
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
    """A made-up value for each ``${VAR}`` without a default (those with one keep their default); a ``…_URL``
    variable gets a URL."""
    return {name: f"https://{name.lower().replace('_', '-')}.test/x" if name.endswith("_URL") else f"test-{name.lower()}"
            for name, default in _VAR.findall(text) if not default}  # fmt: skip


# --- 1. configuration examples parse ------------------------------------------------------------

YAML_BLOCKS = [*blocks(DOCS / "configuration.md", "yaml"), *blocks(DOCS / "governance.md", "yaml"),
               *blocks(DOCS / "http-api.md", "yaml"), *blocks(ROOT / "README.md", "yaml")]  # fmt: skip


def test_there_are_config_examples() -> None:
    assert len([w for w, _ in YAML_BLOCKS if w.startswith("configuration.md")]) >= 10
    assert len([w for w, _ in YAML_BLOCKS if w.startswith("governance.md")]) >= 1
    assert any(w.startswith("README.md") for w, _ in YAML_BLOCKS)


@pytest.mark.parametrize(("where", "text"), YAML_BLOCKS, ids=[w for w, _ in YAML_BLOCKS])
def test_yaml_example_is_a_valid_config(where: str, text: str, tmp_path: Path) -> None:
    cfg = parse_config(text, file=str(tmp_path / "tokenops.yaml"), env=fake_env(text))
    for name in cfg.providers:
        cfg.provider_kind(name)  # every provider resolves to a known wire format


def test_the_complete_example_sets_every_section() -> None:
    where, text = YAML_BLOCKS[0]
    top = set(re.findall(r"^([a-z_]+):", text, re.M))
    sections = {"ledger", "state", "providers", "models", "prices", "tagging", "gateway", "admin_key", "budgets",
                "limits", "rules", "policy", "alerts"}  # fmt: skip
    assert sections <= top, where


def test_every_config_key_is_documented() -> None:
    """A key added to the config models without a word in docs/configuration.md fails here."""
    from tokenops.alerts.config import AlertsConfig, EmailChannelConfig, SlackChannelConfig, WebhookChannelConfig
    from tokenops.config import (
        AnomaliesConfig,
        ChargebackConfig,
        Config,
        CostCentreConfig,
        GatewayConfig,
        ModelAlias,
        PlanningConfig,
        ProviderConfig,
        SharedCostConfig,
        StateOptions,
        TaggingConfig,
        Timeouts,
    )
    from tokenops.policy.config import BudgetConfig, LimitConfig, PolicyDefaults, RuleConfig, ThresholdConfig
    from tokenops.pricing.entries import PriceEntry, TierEntry

    doc = (DOCS / "configuration.md").read_text(encoding="utf-8")
    models: list[Any] = [Config, GatewayConfig, ModelAlias, ProviderConfig, StateOptions, TaggingConfig, Timeouts, PriceEntry,
                         TierEntry, BudgetConfig, ThresholdConfig, LimitConfig, RuleConfig, PolicyDefaults,
                         AlertsConfig, WebhookChannelConfig, SlackChannelConfig, EmailChannelConfig, AnomaliesConfig,
                         PlanningConfig, ChargebackConfig, CostCentreConfig, SharedCostConfig]  # fmt: skip
    for model in models:
        for name, field in model.model_fields.items():
            if field.exclude:
                continue  # internal (where the config came from)
            assert re.search(rf"`([a-z_]+\.)?{name}(\.[a-z_]+)?`", doc), f"{model.__name__}.{name} is not documented"


# --- 2. CLI examples run ------------------------------------------------------------------------

CLI_DOC = DOCS / "cli.md"
CLI_PAGES = (CLI_DOC, DOCS / "governance.md")
# Lines run side by side, as they may in real use (processes take turns on the ledger file), except where one
# depends on another: a line that changes what its group shows (every `keys` line; `budgets set|delete`,
# `approvals approve|deny`) starts once the earlier lines of its group have finished, and a line of the group
# starts once the last such change above it has finished. Reports, prices and --help depend on nothing. This
# keeps each page to a few seconds.
GROUPS = ("keys", "budgets", "approvals")
WRITES = {("budgets", "set"), ("budgets", "delete"), ("approvals", "approve"), ("approvals", "deny")}


def cli_lines(page: Path = CLI_DOC) -> list[tuple[str, list[str]]]:
    """``(where, argv after 'tokenops')`` for every ``$ tokenops …`` line of the console blocks, in order."""
    out = []
    for where, text in blocks(page, "console"):
        file, line = where.split(":")
        for i, row in enumerate(text.splitlines()):
            if row.strip().startswith("$ "):
                argv = shlex.split(row.strip()[2:], comments=True)
                assert argv[0] == "tokenops", f"{file}:{int(line) + 1 + i}: not a tokenops command: {row}"
                out.append((f"{file}:{int(line) + 1 + i}", argv[1:]))
    return out


def blocks_forever(argv: list[str]) -> bool:
    return argv[0] == "serve" or (argv[0] == "demo" and "--no-wait" not in argv)


def is_write(argv: list[str]) -> bool:
    return argv[0] == "keys" or tuple(argv[:2]) in WRITES


def seed(ledger_path: Path, approvals: int = 0) -> list[str]:
    """A few calls in the ledger, so that the report examples have rows to group (one of them unpriced), and
    ``approvals`` pending approval requests as the gateway records them; returns the requests' ids."""
    from tokenops.ledger.records import new_approval_id

    now = datetime.now(UTC)
    rows = [("search", "gpt-4o-mini", "openai", Decimal("0.000123456789"), "alice"),
            ("search", "claude-sonnet-4-5", "anthropic", Decimal("0.0042"), None),
            (None, "gpt-4o", "openai", Decimal("0.3"), None),
            ("research", "mystery-7b", "local", None, "bob")]  # fmt: skip
    ledger = DuckDBLedger(ledger_path)
    ledger.append([
        SpendEvent(request_id=new_request_id(), ts=now - timedelta(hours=5 * i), source="test", provider=provider,
                   model_requested=model, model_used=model, usage=Usage(input_tokens=100, output_tokens=10),
                   cost_usd=cost, end_user=user,
                   tags={k: v for k, v in (("team", team), ("env", "prod"), ("feature", "docs")) if v})
        for i, (team, model, provider, cost, user) in enumerate(rows)
    ])  # fmt: skip
    ids = [new_approval_id() for _ in range(approvals)]
    with ledger.connect() as conn:
        for i, approval_id in enumerate(ids):  # what the gateway records for a 403 approval_required
            conn.execute(
                "INSERT INTO approvals (id, status, key_id, reason, model, message, requested_at) "
                "VALUES (?, 'pending', 'key_3f9a1c0e2b7d', 'rule:opus-needs-approval', 'claude-opus-4-1', ?, ?)",
                [approval_id, "search-app asks to use claude-opus-4-1 (rule:opus-needs-approval)",
                 (now - timedelta(minutes=10 + i)).replace(tzinfo=None)],
            )  # fmt: skip
    return ids


def run_page(page: Path, tmp_path: Path) -> set[str]:
    """Run every ``$ tokenops`` line of ``page`` in ``tmp_path``; returns the commands shown only with --help."""
    config_where, config = blocks(page, "yaml")[0]
    assert config_where.startswith(page.name)
    (tmp_path / "tokenops.yaml").write_text(config)
    env = {k: v for k, v in os.environ.items() if k != "TOKENOPS_CONFIG"}
    env.update(fake_env(config), COLUMNS="160")
    lines = cli_lines(page)
    approval_ids = seed(load_config(tmp_path / "tokenops.yaml", env=env).ledger_path(),
                        approvals=sum(APPROVAL_ID in argv for _, argv in lines))  # fmt: skip

    def run(where: str, argv: list[str]) -> str:
        r = subprocess.run([sys.executable, "-m", "tokenops", *argv], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, f"{where}: tokenops {shlex.join(argv)} exited {r.returncode}\n{r.stdout}{r.stderr}"
        return r.stdout

    key_ids: list[str] = []  # printed by the `keys create` lines, in order

    def line(where: str, argv: list[str], after: list[Future[str]]) -> str:
        for done in after:
            done.result()
        if KEY_ID in argv:
            assert key_ids, f"{where}: {KEY_ID} is used before any `keys create`"
            argv = [key_ids[-1] if a == KEY_ID else a for a in argv]
        out = run(where, argv)
        if argv[:2] == ["keys", "create"]:
            found = re.search(r"key_[0-9a-f]{12}", out)
            assert found, f"{where}: no key id in\n{out}"
            key_ids.append(found.group(0))
        return out

    helped: set[str] = set()
    last_change: dict[str, Future[str]] = {}  # per group
    since_change: dict[str, list[Future[str]]] = {g: [] for g in GROUPS}  # per group: that change and the lines after
    everything: list[Future[str]] = []
    with ThreadPoolExecutor(max_workers=4) as pool:  # FIFO: a line's dependencies always started before it
        for where, argv in lines:
            if blocks_forever(argv):
                # it would run until interrupted: check that at least its options parse
                if argv[0] in helped:
                    continue
                helped.add(argv[0])
                argv = [argv[0], "--help"]
            if APPROVAL_ID in argv:
                argv = [approval_ids.pop(0) if a == APPROVAL_ID else a for a in argv]
            group = argv[0] if argv[0] in GROUPS else None
            if argv[0] == "ledger":  # copies the whole ledger: after every line before it, whatever its group
                done = pool.submit(line, where, argv, list(everything))
            elif group is None:
                done = pool.submit(line, where, argv, [])
            elif is_write(argv):
                done = pool.submit(line, where, argv, since_change[group])
                last_change[group], since_change[group] = done, [done]
            else:
                done = pool.submit(line, where, argv, [last_change[group]] if group in last_change else [])
                since_change[group].append(done)
            everything.append(done)
        for done in everything:
            done.result()
    return helped


def test_cli_examples_run_top_to_bottom(tmp_path: Path) -> None:
    lines = cli_lines(CLI_DOC)
    assert len(lines) >= 20, "docs/cli.md lost its examples"
    commands = {" ".join(argv[:2]) for _, argv in lines}
    for group in ("keys create", "keys list", "keys revoke", "report spend", "prices list", "prices show",
                  "budgets set", "budgets list", "budgets status", "budgets delete", "approvals list",
                  "approvals approve", "approvals deny"):  # fmt: skip
        assert group in commands, f"docs/cli.md has no example of tokenops {group}"
    helped = run_page(CLI_DOC, tmp_path)
    assert helped == set(BLOCKING), f"docs/cli.md should show {BLOCKING} (they are only --help-checked)"


def test_governance_cli_examples_run_top_to_bottom(tmp_path: Path) -> None:
    page = DOCS / "governance.md"
    commands = {" ".join(argv[:2]) for _, argv in cli_lines(page)}
    assert {"budgets set", "budgets status", "approvals list", "approvals approve", "approvals deny"} <= commands
    run_page(page, tmp_path)


def test_governance_webhook_receiver_verifies_signed_alerts() -> None:
    """The receiver docs/governance.md shows accepts what the webhook channel sends, and nothing else."""
    from tokenops.alerts import Alert, WebhookChannel, new_alert_id

    ((where, code),) = blocks(DOCS / "governance.md", "python")
    namespace: dict[str, Any] = {}
    exec(compile(code, f"{DOCS / 'governance.md'} (block at line {where.split(':')[1]})", "exec"), namespace)
    verify = namespace["verify"]
    now = datetime.now(UTC)
    alert = Alert(id=new_alert_id(), kind="threshold", budget="search-monthly", scope={"team": "search"},
                  period_start=now - timedelta(days=1), period_end=now + timedelta(days=1), threshold=0.8,
                  spent_usd=Decimal("2015.5"), amount_usd=Decimal("2500.00"), message="passed 80%", fired_at=now)  # fmt: skip
    channel = WebhookChannel("https://hooks.example.com/tokenops", "whsec-docs")
    body = channel.body(alert)
    headers = channel.headers(alert, body)
    assert verify("whsec-docs", headers, body)
    assert not verify("another-secret", headers, body)
    assert not verify("whsec-docs", headers, body.replace(b"2015.5", b"1.5"))
    stale = {**headers, "X-TokenOps-Timestamp": str(int(now.timestamp()) - 3600)}
    assert not verify("whsec-docs", stale, body)
    assert not verify("whsec-docs", {k: v for k, v in headers.items() if k != "X-TokenOps-Signature"}, body)


# --- 3. HTTP API examples run against a real gateway ----------------------------------------------

HTTP_DOC = DOCS / "http-api.md"
HTTP_BLOCKS = blocks(HTTP_DOC, "python")
POLICY_WHERE, POLICY = blocks(HTTP_DOC, "yaml")[0]  # the governance examples' policy


def governed(where: str) -> bool:
    """Whether a block of docs/http-api.md comes after the policy block (so runs against the governed gateway)."""
    return int(where.split(":")[1]) > int(POLICY_WHERE.split(":")[1])


class DemoStack:
    """The fake provider and a gateway configured like ``tokenops demo``'s (with ``policy``'s sections), on
    loopback sockets."""

    def __init__(self, tmp: Path, policy: str = ""):
        from tokenops.app import create_app
        from tokenops.demo import CONFIG, PROVIDER_KEY
        from tokenops.fakeprovider import create_fake_provider
        from tokenops.servers import BackgroundServer

        self.fake = BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)).start()
        text = CONFIG.format(fake=self.fake.url, key=PROVIDER_KEY, port=0)
        if policy:  # its sections replace the demo's (budgets, limits, rules), the rest of the demo's config stays
            text = yaml.safe_dump({**yaml.safe_load(text), **yaml.safe_load(policy)}, sort_keys=False)
        path = tmp / "tokenops.yaml"
        path.write_text(text)
        self.gateway = create_app(load_config(path, env=fake_env(policy)))
        admin_key = self.gateway.config.admin_key
        self.admin_key = admin_key.get_secret_value() if admin_key else None
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


@pytest.fixture(scope="module")
def governed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = DemoStack(tmp_path_factory.mktemp("docs-http-governed"), POLICY)
    yield stack
    stack.close()


def test_there_are_http_examples() -> None:
    text = "\n".join(t for _, t in HTTP_BLOCKS)
    assert len(HTTP_BLOCKS) >= 6 and "from openai import" in text and "import anthropic" in text
    assert len([w for w, _ in HTTP_BLOCKS if governed(w)]) >= 6, "docs/http-api.md lost its governance examples"
    assert "admin_key" in POLICY and "budgets" in POLICY and "rules" in POLICY


@pytest.mark.parametrize(("where", "code"), HTTP_BLOCKS, ids=[w for w, _ in HTTP_BLOCKS])
def test_http_example_runs(where: str, code: str, request: pytest.FixtureRequest,
                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    stack: DemoStack = request.getfixturevalue("governed_stack" if governed(where) else "demo_stack")
    namespace: dict[str, Any] = {"__name__": "__docs__", "BASE_URL": stack.url, "KEY": stack.key,
                                 "ADMIN_KEY": stack.admin_key}  # fmt: skip
    try:
        exec(compile(code, f"{DOCS / where.split(':')[0]} (block at line {where.split(':')[1]})", "exec"), namespace)
    finally:
        for name in ("client", "claude", "admin"):  # close the clients the example opened
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


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [code.strip() for _, code in blocks(ROOT / "README.md", "bash")]
    assert len(commands) >= 2 and "scripts/test" in commands[1], commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines(), "`.ci/run` must run the README's second command, exactly"
    script = (ROOT / "scripts" / "test").read_text(encoding="utf-8")
    for check in ("ruff check .", "lint-imports", "mypy", "python -m pytest",
                  "TOKENOPS_TEST_STACK=postgresql-redis"):  # fmt: skip
        assert check in script, f"scripts/test does not run {check}"
    assert readme.index(commands[0]) < readme.index(commands[1])
