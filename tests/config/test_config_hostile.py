"""Hostile config files: alias loops and bombs, deep nesting, unreadable values, secrets in errors, weak admin
keys, out-of-range numbers and money, scope values that break the ``k=v,…`` form. Each is one ConfigError."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokenops.config import parse_config
from tokenops.errors import ConfigError


def error_of(text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="t.yaml", env=env)
    return str(info.value)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9)
)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &x [*x]\n", "64 levels deep"),
        ("providers: &p {openai: {base_url: 'https://x', headers: *p}}\n", "64 levels deep"),
        ("budgets: " + "[" * 10_000 + "]" * 10_000 + "\n", "64 levels deep"),
        ("budgets: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", "64 levels deep"),
        ("budgets:\n" + "".join("  " * i + "- \n" for i in range(2000)), "64 levels deep"),
        (BOMB, "100000"),
    ],
    ids=["recursive-alias", "recursive-mapping", "deep-lists", "deep-mappings", "deep-block", "alias-bomb"],
)
def test_yaml_shapes_that_would_explode_are_config_errors(text: str, fragment: str) -> None:
    started = time.monotonic()
    message = error_of(text)
    assert message.startswith("t.yaml") and fragment in message, message
    assert time.monotonic() - started < 10


def test_a_deep_but_reasonable_config_still_parses() -> None:
    text = "budgets:\n  - {name: a, amount_usd: '1', scope: {team: x}, thresholds: [{at: 0.5}]}\n"
    assert parse_config(text, file="t.yaml", env={}).budgets[0].thresholds[0].at == 0.5
    shared = "x: &b {name: a, amount_usd: '1'}\nbudgets: [*b]\n"
    with pytest.raises(ConfigError, match="x: unknown key"):  # aliases themselves still work
        parse_config(shared, file="t.yaml", env={})


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("budgets:\n  - {name: a, amount_tokens: " + "9" * 5000 + "}\n", "t.yaml"),
        (
            "prices:\n  - {provider: a, model: b, input_per_mtok: '1', output_per_mtok: '1', effective_from: 2025-13-45}\n",
            "t.yaml",
        ),
    ],
)
def test_values_yaml_cannot_build_are_config_errors(text: str, where: str) -> None:
    assert error_of(text).startswith(where)


def test_the_cli_reports_a_bomb_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bomb.yaml"
    bad.write_text("ledger: duckdb:///./l.duckdb\nx: &x [*x]\n")
    r = subprocess.run([sys.executable, "-m", "tokenops", "keys", "list", "--config", str(bad)], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and str(bad) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout and "RecursionError" not in r.stderr


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("admin_key: [supersecretvalue]\n", "admin_key"),
        ("admin_key: {k: supersecretvalue}\n", "admin_key"),
        ("providers:\n  openai: {base_url: 'https://x/v1', api_key: [supersecretvalue]}\n", "providers.openai.api_key"),
        (
            "providers:\n  openai: {base_url: 'https://x/v1', headers: {Authorization: [Bearer supersecretvalue]}}\n",
            "providers.openai.headers.Authorization",
        ),
        ("providers:\n  openai: {base_url: 'https://x/v1', headers: [supersecretvalue]}\n", "providers.openai.headers"),
        ("providers: [{base_url: 'https://x/v1', api_key: supersecretvalue}]\n", "providers"),
        ("providers:\n  openai: [supersecretvalue]\n", "providers.openai"),
        ("gateway: {metrics_key: [supersecretvalue]}\n", "gateway.metrics_key"),
        ("alerts: {channels: [{type: webhook, url: 'https://h.example', secret: [supersecretvalue]}]}\n", "alerts"),
        ("admin_key: supersecret\n", "admin_key"),
        ("gateway: {metrics_key: supersecret}\n", "gateway.metrics_key"),
    ],
)
def test_config_errors_never_print_a_secret(text: str, path: str) -> None:
    message = error_of(text)
    assert f": {path}" in message and "supersecret" not in message, message


def test_other_errors_still_show_what_was_given() -> None:
    assert "(got 'lots')" in error_of("gateway:\n  port: lots\n")
    assert "'soon'" in error_of("providers:\n  openai: {base_url: 'https://x/v1', timeout: {read: soon}}\n")


def test_admin_and_metrics_keys_need_sixteen_characters() -> None:
    for key in ("admin_key: x\n", "admin_key: '123456789012345'\n", "gateway: {metrics_key: abc}\n"):
        assert "at least 16 characters" in error_of(key)
    cfg = parse_config("admin_key: ${A}\ngateway: {metrics_key: ${M}}\n", file="t.yaml",
                       env={"A": "a" * 16, "M": "m" * 40})  # fmt: skip
    assert cfg.admin_key is not None and cfg.admin_key.get_secret_value() == "a" * 16
    assert cfg.gateway.metrics_key is not None and cfg.gateway.metrics_key.get_secret_value() == "m" * 40
    assert "m" * 40 not in repr(cfg) and parse_config("", file="t.yaml", env={}).gateway.metrics_key is None


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("budgets:\n  - {name: a, amount_tokens: 1000000000000001}\n", "budgets[0].amount_tokens"),
        ("budgets:\n  - {name: a, amount_usd: '1e400'}\n", "budgets[0].amount_usd"),
        ("budgets:\n  - {name: a, amount_usd: '-0'}\n", "budgets[0].amount_usd"),
        ("budgets:\n  - {name: a, amount_usd: '0.0000000000001'}\n", "12 decimal places"),
        ("budgets:\n  - {name: a, amount_usd: 10000000000000000}\n", "budgets[0].amount_usd"),
        ("budgets:\n  - {name: a, amount_usd: '1', thresholds: [{at: .nan}]}\n", "budgets[0].thresholds[0].at"),
        ("budgets:\n  - {name: a, amount_usd: '1', thresholds: [{at: .inf}]}\n", "budgets[0].thresholds[0].at"),
        ("limits:\n  - {name: a, requests_per_minute: 1000000001}\n", "limits[0].requests_per_minute"),
        ("limits:\n  - {name: a, tokens_per_minute: 18446744073709551616}\n", "limits[0].tokens_per_minute"),
        ("limits:\n  - {name: a, usd_per_hour: 'Infinity'}\n", "limits[0].usd_per_hour"),
        ("rules:\n  - {name: a, max_cost_per_call_usd: '-0'}\n", "rules[0].max_cost_per_call_usd"),
        ("rules:\n  - {name: a, max_cost_per_call_usd: 'NaN'}\n", "rules[0].max_cost_per_call_usd"),
        ("rules:\n  - {name: a, max_output_tokens: 18446744073709551616}\n", "rules[0].max_output_tokens"),
        ("policy: {default_max_output_tokens: 18446744073709551616}\n", "policy.default_max_output_tokens"),
        ("budgets:\n  - {name: a, amount_usd: '1', scope: {team: 'a,b'}}\n", "budgets[0].scope"),
        ("budgets:\n  - {name: a, amount_usd: '1', scope: {team: 'a=b'}}\n", "budgets[0].scope"),
        ("budgets:\n  - {name: a, amount_usd: '1', scope: {team: ' a'}}\n", "budgets[0].scope"),
        ("limits:\n  - {name: a, requests_per_minute: 1, scope: {team: ''}}\n", "limits[0].scope"),
        (f"rules:\n  - {{name: a, deny_models: [x], scope: {{team: {'x' * 201}}}}}\n", "rules[0].scope"),
    ],
)
def test_policy_numbers_money_and_scopes_are_checked_in_the_file(item: str, fragment: str) -> None:
    assert fragment in error_of(item)


def test_money_at_its_bounds_and_with_trailing_zeros_is_accepted() -> None:
    cfg = parse_config("budgets:\n  - {name: a, amount_usd: '1000000000000000'}\n"
                       "  - {name: b, amount_usd: '0.000000000001'}\n  - {name: c, amount_usd: '2.50000000000000000'}\n"
                       "rules:\n  - {name: r, max_cost_per_call_usd: '0'}\n", file="t.yaml", env={})  # fmt: skip
    assert [str(b.amount_usd) for b in cfg.budgets] == ["1000000000000000", "1E-12", "2.50000000000000000"]
    assert cfg.rules[0].max_cost_per_call_usd == 0


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("anomalies:\n  call_factor: .inf\n", "t.yaml:2: anomalies.call_factor"),
        ("anomalies:\n  settle: .nan\n  call_factor: 50\n", "t.yaml:2: anomalies.settle"),
        ("gateway:\n  writer_interval: .inf\n", "t.yaml:2: gateway.writer_interval"),
        ("planning:\n  buffer: .nan\n", "t.yaml:2: planning.buffer"),
    ],
    ids=["inf-factor", "nan-field", "inf-timeout", "nan-buffer"],
)
def test_infinite_and_nan_numbers_are_config_errors(text: str, where: str) -> None:
    """A YAML .inf or .nan is a valid float: without this, it reached the code as one (an infinite call factor
    overflowed the anomaly scan)."""
    message = error_of(text)
    assert message.startswith(where) and "finite number" in message, message
