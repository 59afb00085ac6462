"""Config errors name the file, the line, the key path and what was expected; ${VAR} comes from the env."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tokenops.config import load_config, parse_config
from tokenops.errors import ConfigError

GOOD = """\
ledger: duckdb:///./x.duckdb
providers:
  openai: {base_url: https://api.openai.com/v1, api_key: ${OPENAI_API_KEY}}
  local: {base_url: "http://127.0.0.1:8000/v1", kind: openai}
models:
  - {name: cheap, provider: openai, model: gpt-4o-mini}
prices:
  - {provider: local, model: llama-3.1-8b, input_per_mtok: "0.05", output_per_mtok: "0.08", effective_from: 2025-01-01}
"""


def test_design_example_parses_and_secrets_do_not_print() -> None:
    cfg = parse_config(GOOD, file="t.yaml", env={"OPENAI_API_KEY": "sk-secret-123"})
    assert cfg.providers["openai"].api_key.get_secret_value() == "sk-secret-123"
    assert "sk-secret-123" not in repr(cfg) and "sk-secret-123" not in str(cfg.model_dump())
    assert cfg.provider_kind("local") == "openai" and cfg.provider_kind("openai") == "openai"
    assert cfg.prices[0].to_row("t.yaml").model == "llama-3.1-8b"


def test_missing_env_var_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD, file="t.yaml", env={})
    assert "OPENAI_API_KEY" in str(info.value) and "providers.openai.api_key" in str(info.value)


def test_env_default() -> None:
    cfg = parse_config("ledger: ${LEDGER:-duckdb:///./d.duckdb}", file="t.yaml", env={})
    assert cfg.ledger == "duckdb:///./d.duckdb"


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("ledgr: duckdb:///x\n", "t.yaml:1: ledgr", "unknown key"),
        ("gateway:\n  port: lots\n", "t.yaml:2: gateway.port", "integer"),
        ("providers:\n  openai: {base_url: 12}\n", "t.yaml:2: providers.openai.base_url", "string"),
        ("providers:\n  openai: {api_key: x}\n", "providers.openai.base_url", "required"),
        ("ledger: mysql://x\n", "t.yaml:1: ledger", "duckdb:///"),
        ("prices:\n  - {provider: a, model: b, input_per_mtok: 0.05, output_per_mtok: '1', effective_from: 2025-01-01}\n",
         "prices[0].input_per_mtok", "quoted"),
        ("tagging: {mode: maybe}\n", "tagging.mode", "warn"),
        ("models:\n  - {name: x, provider: nope, model: y}\n", "t.yaml:1: models", "not configured"),
        ("a: [1\n", "t.yaml:", "not valid YAML"),
        ("- just\n- a list\n", "t.yaml", "mapping"),
        ("prices:\n  - {provider: a, model: b, input_per_mtok: '1', output_per_mtok: '1', effective_from: 2025-01-01}\n"
         "  - {provider: a, model: b, input_per_mtok: '2', output_per_mtok: '2', effective_from: 2025-01-01}\n",
         "t.yaml:1: prices", "repeats [0]"),
        ("tagging: {allowed: {'bad name': [x]}}\n", "tagging.allowed", "invalid tag name"),
    ],
)
def test_config_errors_name_file_line_path_and_expectation(text: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="t.yaml", env={})
    message = str(info.value)
    assert where in message and what in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_relative_ledger_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("ledger: duckdb:///./sub/l.duckdb\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.ledger_path() == tmp_path / "sub" / "l.duckdb"
    assert cfg.spool_path() == tmp_path / "sub" / "l.duckdb.spool"


def test_cli_reports_config_errors_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ledger: duckdb:///./l.duckdb\ngateway:\n  prot: 1\n")
    r = subprocess.run([sys.executable, "-m", "tokenops", "serve", "--config", str(bad)], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert f"{bad}:3: gateway.prot: unknown key" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_env_values_with_yaml_special_characters_survive() -> None:
    cfg = parse_config("providers:\n  openai: {base_url: 'https://x/v1', api_key: ${K}}\n", file="t.yaml",
                       env={"K": "a#b: {c}, d"})  # fmt: skip
    assert cfg.providers["openai"].api_key.get_secret_value() == "a#b: {c}, d"
