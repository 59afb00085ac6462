"""`tokenops evaluate router`: the contract's JSON keys, the table, --scores-out, dollars from the rows or from the
price catalog, and a one-line error naming the file and line (exit 2, no traceback) for each kind of bad input."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tokenops.cli.evaluate_router import DEFAULT_OUTPUT_TOKENS, router
from tokenops.errors import TokenOpsError
from tokenops.optimize.router import DifficultyRouter
from tokenops.pricing.catalog import load_catalog
from tokenops.pricing.model import price_usage
from tokenops.usage import Usage

runner = CliRunner()

EASY = ["Say hi.", "What color is the sky?", "Thanks!", "Translate 'cat' to French.", "What is 2 + 2?",
        "Name a fruit.", "Is water wet?", "Spell 'dog'."]  # fmt: skip
HARD = ["Prove that for every prime p > 3, p^2 - 1 is divisible by 24. Which of the following is NOT a step?\n"
        "I. p is odd\nII. p = 6k ± 1\nIII. 24 | p - 1",
        "Implement a lock-free queue in C++:\n```cpp\ntemplate <class T> class Q { /* ... */ };\n```\nExplain why "
        "the ABA problem does not occur, and derive the complexity of enqueue.",
        "Statement 1 | Every group of order 15 is cyclic. Statement 2 | If H and K are subgroups, then HK is a "
        "subgroup.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:",
        "If f(x) = x^3 - 6x^2 + 11x - 6, determine all real x with f(x) <= 0, and compute the integral of f from 1 "
        "to 3. Justify each step."]  # fmt: skip


def cli_app() -> typer.Typer:
    """The command as `tokenops evaluate router`, in an app of its own."""
    evaluate = typer.Typer()
    evaluate.command("router")(router)
    app = typer.Typer()
    app.add_typer(evaluate, name="evaluate")
    return app


def invoke(*args: str) -> tuple[int, str]:
    """Run the command as ``tokenops.cli.main`` does: a TokenOpsError is one line on stderr and exit code 2."""
    result = runner.invoke(cli_app(), ["evaluate", "router", *args])
    if isinstance(result.exception, TokenOpsError):
        return 2, f"error: {result.exception}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def write_rows(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def dataset(costs: bool = True) -> list[dict[str, Any]]:
    rows = []
    for i, prompt in enumerate(EASY):
        row: dict[str, Any] = {"id": f"easy-{i}", "prompt": prompt, "scores": {"big": 1, "small": 1, "other": 0.3}}
        rows.append(row)
    for i, prompt in enumerate(HARD):
        rows.append({"id": f"hard-{i}", "prompt": prompt, "scores": {"big": 1.0, "small": 0.0}})
    if costs:
        for r in rows:
            r["costs"] = {"big": 0.01, "small": "0.0005"}
    return rows


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The bundled price catalog, not a data file of the person running the tests; no config file."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TOKENOPS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    yield


def test_json_has_the_contract_keys_and_scores_out_has_every_row_in_order(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", dataset())
    out = tmp_path / "scores.jsonl"
    code, text = invoke("--data", str(data), "--strong", "big", "--weak", "small", "--format", "json",
                        "--scores-out", str(out))  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    assert {"n", "cpt50", "cpt80", "apgr"} <= doc.keys()
    assert doc["n"] == len(EASY) + len(HARD)
    assert doc["strong_quality"] == pytest.approx(1.0)
    assert doc["weak_quality"] == pytest.approx(len(EASY) / doc["n"])
    assert 0.0 <= doc["cpt50"] <= doc["cpt80"] <= 1.0
    assert doc["apgr"] > 0.5  # the shipped router puts these hard prompts above these trivial ones, mostly
    assert len(doc["curve"]) == 11
    assert doc["dollars"]["always_strong_usd"] == "0.12"
    assert doc["dollars"]["always_weak_usd"] == "0.006"
    assert doc["dollars"]["at_cpt50"]["saved_usd"] is not None
    assert doc["pricing"]["catalog_used"] is False
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [r["id"] for r in dataset()]
    shipped = DifficultyRouter.load()
    for row, line in zip(dataset(), lines, strict=True):
        assert set(line) == {"id", "p_strong"}
        assert line["p_strong"] == pytest.approx(shipped.p_strong(row["prompt"]))


def test_table_shows_the_curve_cpt_apgr_and_dollars_saved(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", dataset())
    code, text = invoke("--data", str(data), "--strong", "big", "--weak", "small")
    assert code == 0, text
    for needle in ("CPT(50%)", "CPT(80%)", "APGR", "saved vs always strong", "strong calls", "0.12"):
        assert needle in text


def test_rule_router_and_another_weights_file_can_be_evaluated(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", dataset())
    code, text = invoke("--data", str(data), "--strong", "big", "--weak", "small", "--rules", "-f", "json")
    assert code == 0, text
    assert json.loads(text)["router"] == "rules-v1"
    weights = tmp_path / "w.json"
    plain = DifficultyRouter(bias=0.0, hand_weights=DifficultyRouter.load().hand_weights, ngram_weights={},
                             hash_bits=8, name="mine")  # fmt: skip
    weights.write_text(json.dumps(plain.to_dict()))
    code, text = invoke("--data", str(data), "--strong", "big", "--weak", "small", "--model", str(weights), "-f", "json")
    assert code == 0, text
    assert json.loads(text)["router"] == "mine"


def test_costs_from_the_catalog_when_rows_have_none(tmp_path: Path) -> None:
    rows = [{"id": str(i), "prompt": p, "scores": {"gpt-4o": 1.0, "gpt-4o-mini": float(i % 2)}}
            for i, p in enumerate(EASY + HARD)]  # fmt: skip
    data = write_rows(tmp_path / "rows.jsonl", rows)
    code, text = invoke("--data", str(data), "--strong", "gpt-4o", "--weak", "gpt-4o-mini", "-f", "json")
    assert code == 0, text
    doc = json.loads(text)
    catalog = load_catalog()
    now = datetime.now(UTC)

    def cost(model: str, prompt: str) -> Decimal:
        row = catalog.lookup(["openai"], model, now)
        assert row is not None
        usage = Usage(input_tokens=(len(prompt) + 3) // 4 + 4, output_tokens=DEFAULT_OUTPUT_TOKENS)
        return price_usage(usage, row).total

    strong_total = sum((cost("gpt-4o", r["prompt"]) for r in rows), Decimal(0))
    weak_total = sum((cost("gpt-4o-mini", r["prompt"]) for r in rows), Decimal(0))
    assert Decimal(doc["dollars"]["always_strong_usd"]) == strong_total
    assert Decimal(doc["dollars"]["always_weak_usd"]) == weak_total
    assert doc["pricing"]["catalog_used"] is True
    assert doc["pricing"]["output_tokens_assumed"] == DEFAULT_OUTPUT_TOKENS
    assert doc["pricing"]["models"]["gpt-4o"]["provider"] == "openai"
    assert doc["dollars"]["unpriced_rows"] == {"gpt-4o": 0, "gpt-4o-mini": 0}
    saved = Decimal(doc["dollars"]["at_cpt80"]["saved_usd"])
    assert Decimal(0) <= saved <= strong_total - weak_total


def test_a_model_the_catalog_does_not_know_is_unpriced_and_the_metrics_are_computed(tmp_path: Path) -> None:
    rows = [{"id": str(i), "prompt": p, "scores": {"gpt-4o": 1.0, "no-such-model-xyz": float(i % 2)}}
            for i, p in enumerate(EASY + HARD)]  # fmt: skip
    data = write_rows(tmp_path / "rows.jsonl", rows)
    code, text = invoke("--data", str(data), "--strong", "gpt-4o", "--weak", "no-such-model-xyz", "-f", "json")
    assert code == 0, text
    doc = json.loads(text)
    assert doc["apgr"] is not None and doc["cpt50"] is not None
    assert doc["dollars"]["always_weak_usd"] is None
    assert doc["dollars"]["always_strong_usd"] is not None
    assert doc["dollars"]["at_cpt50"]["cost_usd"] is None
    assert doc["pricing"]["models"]["no-such-model-xyz"] is None
    assert doc["dollars"]["unpriced_rows"]["no-such-model-xyz"] == len(rows)
    code, text = invoke("--data", str(data), "--strong", "gpt-4o", "--weak", "no-such-model-xyz")
    assert code == 0 and "unpriced" in text


GOOD = {"id": "a", "prompt": "hello", "scores": {"big": 1, "small": 0}}


@pytest.mark.parametrize(("line", "why"), [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    (json.dumps({"prompt": "p", "scores": {"big": 1, "small": 0}}), 'missing field "id"'),
    (json.dumps({"id": "x", "scores": {"big": 1, "small": 0}}), 'missing field "prompt"'),
    (json.dumps({"id": "x", "prompt": "p"}), 'missing field "scores"'),
    (json.dumps({"id": "x", "prompt": 3, "scores": {"big": 1, "small": 0}}), '"prompt" must be a string'),
    (json.dumps({"id": "x", "prompt": "p", "scores": {"big": 1.5, "small": 0}}), "outside [0, 1]"),
    (json.dumps({"id": "x", "prompt": "p", "scores": {"big": -0.1, "small": 0}}), "outside [0, 1]"),
    (json.dumps({"id": "x", "prompt": "p", "scores": {"big": "high", "small": 0}}), "must be a number"),
    (json.dumps({"id": "x", "prompt": "p", "scores": {"small": 0}}), 'model "big" is not in "scores"'),
    (json.dumps({"id": "x", "prompt": "p", "scores": {"big": 1}}), 'model "small" is not in "scores"'),
    (json.dumps({"id": "x", "prompt": "p", "scores": {"big": 1, "small": 0}, "costs": {"big": -1}}), "negative"),
    (json.dumps({"id": "x", "prompt": "p", "scores": {"big": 1, "small": 0}, "costs": {"big": "lots"}}),
     "not a decimal number"),
    ('{"id": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
])  # fmt: skip
def test_a_bad_line_is_one_line_naming_the_file_and_line_exit_2(tmp_path: Path, line: str, why: str) -> None:
    data = write_rows(tmp_path / "rows.jsonl", [GOOD, GOOD, line])
    code, text = invoke("--data", str(data), "--strong", "big", "--weak", "small")
    assert code == 2
    assert text.startswith(f"error: {data}:3: ")
    assert why in text
    assert "\n" not in text.strip() and "Traceback" not in text


def test_an_empty_file_is_an_error_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("\n\n")
    code, text = invoke("--data", str(data), "--strong", "big", "--weak", "small")
    assert code == 2 and f"{data}:1: no rows" in text


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    code, text = invoke("--data", str(tmp_path / "nope.jsonl"), "--strong", "big", "--weak", "small")
    assert code == 2 and "nope.jsonl" in text and "no such file" in text


@pytest.mark.parametrize("content", [b"\x1f\x8b\x08\x00garbage", b"{\"format\": \"tokenops-router\"",
                                     gzip.compress(b'{"format": "tokenops-router", "version": 99}')])  # fmt: skip
def test_a_corrupt_weights_file_is_an_error_naming_it(tmp_path: Path, content: bytes) -> None:
    data = write_rows(tmp_path / "rows.jsonl", [GOOD])
    weights = tmp_path / "bad-weights.json.gz"
    weights.write_bytes(content)
    code, text = invoke("--data", str(data), "--strong", "big", "--weak", "small", "--model", str(weights))
    assert code == 2
    assert "bad-weights.json.gz" in text and "Traceback" not in text


def test_scores_out_that_cannot_be_written_is_an_error(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", [GOOD])
    code, text = invoke("--data", str(data), "--strong", "big", "--weak", "small",
                        "--scores-out", str(tmp_path / "no-dir" / "s.jsonl"))  # fmt: skip
    assert code == 2 and "--scores-out" in text


def test_the_same_model_twice_is_refused(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", [GOOD])
    code, text = invoke("--data", str(data), "--strong", "big", "--weak", "big")
    assert code == 2 and "same model" in text
