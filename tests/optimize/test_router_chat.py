"""bench/router_chat.py turns the public judge files into strong-vs-weak rows the right way round: AlpacaEval's
preference 1 is the baseline (gpt-4-1106-preview, the strong model) winning, arena-bench's grades are 1-10, a grade
that failed to parse drops the row, and the weak consensus is the strong model's win rate against the weak models."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@pytest.fixture(scope="module")
def chat() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "router_chat.py"
    spec = importlib.util.spec_from_file_location("router_chat", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("router_chat", module)  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _commit(repo: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text, encoding="utf-8")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "data"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def _annotations(model: str, prefs: list[float]) -> str:
    return json.dumps([{"instruction": f"q{i}", "generator_1": "gpt4_1106_preview", "generator_2": model,
                        "preference": p} for i, p in enumerate(prefs)])  # fmt: skip


def test_alpaca_eval_pair_and_consensus(chat: ModuleType, tmp_path: Path) -> None:
    _commit(tmp_path, {
        chat.AE_PAIR: _annotations("Mixtral-8x7B-Instruct-v0.1", [1.0, 2.0, 1.5]),
        "results/weakling/weighted_alpaca_eval_gpt4_turbo/annotations.json": _annotations("weakling", [1.0, 1.2, 1.0]),
        "results/better/weighted_alpaca_eval_gpt4_turbo/annotations.json": _annotations("better", [2.0, 2.0, 1.9]),
        "results/NullModel/weighted_alpaca_eval_gpt4_turbo/annotations.json": _annotations("NullModel", [1.0] * 3),
    })  # fmt: skip
    src = chat.load_alpaca_eval(tmp_path, min_judged=3)
    assert src.prompts == ["q0", "q1", "q2"]
    assert src.strong == [1.0, 0.0, 0.5] and src.weak == [0.0, 1.0, 0.5]
    # the consensus: Mixtral (pair file) and "weakling"; "better" beats the baseline and NullModel is an attack
    assert sorted(m.split(" ")[0] for m in src.weak_models) == ["Mixtral-8x7B-Instruct-v0.1", "weakling"]
    assert src.consensus == pytest.approx([1.0, 0.4, 0.75])


def test_arena_bench_grades(chat: ModuleType, tmp_path: Path) -> None:
    def judgments(model: str, grades: list[object]) -> str:
        return "\n".join(
            json.dumps({"question_id": f"id{i}", "model": model, "score": g}) for i, g in enumerate(grades)
        )

    base = "data/arena-bench-v1"
    rev = _commit(tmp_path, {
        f"{base}/question.jsonl": "\n".join(json.dumps({"question_id": f"id{i}", "turns": [f"prompt {i}"]})
                                            for i in range(3)),
        f"{base}/model_judgment/gpt-4-turbo.jsonl": judgments("gpt-4-1106-preview", ["10", "8", "9"]),
        f"{base}/model_judgment/mixtral.jsonl": judgments(chat.WEAK, ["4", "8", "-1"]),
        f"{base}/model_judgment/other.jsonl": judgments("other", ["10", "9", "1"]),
    })  # fmt: skip
    src = chat.load_arena_bench(tmp_path, rev)
    assert src.ids == ["arenabench-id0", "arenabench-id1"]  # id2: Mixtral's grade failed to parse
    assert src.strong == [1.0, 0.8] and src.weak == [0.4, 0.8]
    assert src.consensus == pytest.approx([0.75, 0.25])  # vs Mixtral and "other": win + tie, tie + loss
