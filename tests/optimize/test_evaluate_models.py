"""``tokenops evaluate models`` end to end on real sockets: the command calls a whole gateway (over a DuckDB ledger)
whose provider is the project's fake, which answers each (model, prompt) with the same words every time; the
expected answers below are computed with the fake's own answer function, so which model is right on which prompt
is known in advance. The judge model (gpt-4.1) is answered by a small stand-in in front of the fake that replies
with the grade the graded prompt carries (``[grade: 0.75]``).

Prices (genai-prices, as the gateway's catalog has them): gpt-4o $2.50 input, $10 output per 1M tokens;
gpt-4o-mini $0.15 and $0.60: the mini is the cheaper model on any prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
import yaml
from typer.testing import CliRunner

from harness import PROVIDER_KEY, create_key, free_port, write_config
from tokenops.app import create_app
from tokenops.cli.evaluate_models import models
from tokenops.errors import TokenOpsError
from tokenops.fakeprovider import create_fake_provider
from tokenops.fakeprovider.accounting import account_openai, make_completion
from tokenops.money import quantize
from tokenops.routing import RoutingConfig
from tokenops.servers import BackgroundServer

BIG, SMALL, JUDGE, DENIED = "gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3"
_GRADE = re.compile(r"\[grade: ([^\]]*)\]")


def fake_answer(model: str, prompt: str, cap: int | None = None) -> str:
    """What the fake answers ``model`` on a one-message ``prompt``."""
    seed = account_openai([{"role": "user", "content": prompt}], model, None, 0.0).seed
    return make_completion(seed, model, cap).text


class JudgeStandIn:
    """The fake provider, except that chat calls to the judge model answer with the ``[grade: …]`` text found in
    what they grade, and report 50 input tokens and 1 output token."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.graded: list[dict[str, Any]] = []  # the judge calls' bodies

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.fake(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if json.loads(body).get("model") != JUDGE:
            replayed = False

            async def replay() -> Any:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await self.fake(scope, replay, send)
        self.graded.append(json.loads(body))
        found = _GRADE.search(body.decode())
        payload = orjson.dumps({
            "id": "chatcmpl-judge", "object": "chat.completion", "created": 0, "model": JUDGE,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": found.group(1) if found else "1"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 1, "total_tokens": 51}})  # fmt: skip
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})


class Stack:
    """The fake (behind the judge stand-in) and a gateway that refuses o3, each on a loopback socket, and a key."""

    def __init__(self, tmp: Path) -> None:
        self.fake = BackgroundServer(JudgeStandIn(create_fake_provider(api_key=PROVIDER_KEY))).start()
        config = write_config(tmp, "rules:\n  - {name: no-o3, deny_models: [o3]}\n", upstream=self.fake.url)
        self.gateway = create_app(config)
        self.record, self.key = create_key(self.gateway.ledger, tags={"team": "ml"})
        self.server = BackgroundServer(self.gateway).start()
        self.url = self.server.url

    def events(self, rows: list[dict[str, Any]], field: str = "request_id") -> dict[str, Any]:
        """The ledger's events of these output rows, by request id (the spool drained first)."""
        self.gateway.ledger.drain(self.gateway.spool_dir, timeout=10)
        found = {r[field]: self.gateway.ledger.get_event(r[field]) for r in rows}
        assert None not in found.values(), found
        return found

    def close(self) -> None:
        self.server.stop()
        self.fake.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("evaluate-models"))
    yield s
    s.close()


# The command as `tokenops evaluate models`, with main()'s handling of TokenOps errors (one line, exit 2).
cli = typer.Typer()
group = typer.Typer()
group.command("models")(models)
cli.add_typer(group, name="evaluate")
runner = CliRunner()


def run(*args: str, stack: Stack | None = None, code: int = 0, **env: str) -> tuple[str, str]:
    environ = {"TOKENOPS_GATEWAY_URL": stack.url if stack else "http://127.0.0.1:9", "TOKENOPS_API_KEY":
               stack.key if stack else "tok-unused", **env}  # fmt: skip
    result = runner.invoke(cli, ["evaluate", "models", *args], env=environ)
    exit_code, stderr = result.exit_code, result.stderr
    if isinstance(result.exception, TokenOpsError):
        exit_code, stderr = 2, f"error: {result.exception}\n"
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert exit_code == code, (result.stdout, stderr)
    return result.stdout, stderr


def write_prompts(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_out(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def prompt(i: int) -> str:
    return f"Question number {i}: what is the answer?"


def right_sizing_rows() -> list[dict[str, Any]]:
    """``summarize``: only the mini is right; ``extract``: only gpt-4o; ``classify``: both (any of two answers);
    ``mixed``: gpt-4o on both, the mini on one of two; ``hard``: neither."""
    rows = []
    for i in range(4):
        rows.append({"id": f"s{i}", "task": "summarize", "prompt": prompt(i), "expected": fake_answer(SMALL, prompt(i))})
    for i in range(4, 6):
        rows.append({"id": f"e{i}", "task": "extract", "prompt": prompt(i), "expected": fake_answer(BIG, prompt(i))})
    for i in range(6, 8):
        p = prompt(i)
        rows.append({"id": f"c{i}", "task": "classify", "prompt": p, "expected": [fake_answer(BIG, p), fake_answer(SMALL, p)]})
    rows.append({"id": "m8", "task": "mixed", "prompt": prompt(8), "expected": [fake_answer(BIG, prompt(8)),
                                                                                  fake_answer(SMALL, prompt(8)).upper()]})
    rows.append({"id": "m9", "task": "mixed", "prompt": prompt(9), "expected": fake_answer(BIG, prompt(9))})
    rows.append({"id": "h10", "task": "hard", "prompt": prompt(10), "expected": "no model says this"})
    return rows


def test_the_cheapest_model_meeting_the_target_is_chosen_per_task_with_ledger_exact_costs(stack: Stack,
                                                                                          tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", right_sizing_rows())
    out = tmp_path / "answers.jsonl"
    stdout, _ = run("--prompts", prompts, "--models", f"{BIG},{SMALL}", "--out", str(out), "--format", "json",
                    "--concurrency", "3", stack=stack)  # fmt: skip
    report = json.loads(stdout)
    quality = {(r["task"], r["model"]): r["quality"] for r in report["tasks"]}
    assert quality == {("summarize", BIG): 0.0, ("summarize", SMALL): 1.0, ("extract", BIG): 1.0,
                       ("extract", SMALL): 0.0, ("classify", BIG): 1.0, ("classify", SMALL): 1.0,
                       ("mixed", BIG): 1.0, ("mixed", SMALL): 0.5, ("hard", BIG): 0.0, ("hard", SMALL): 0.0}  # fmt: skip
    choices = {task: c["model"] for task, c in report["choices"].items()}
    assert choices == {"summarize": SMALL, "extract": BIG, "classify": SMALL, "mixed": BIG, "hard": None}
    assert [t for t in report["tasks"] if t["chosen"]] == [t for t in report["tasks"]
                                                          if (t["task"], t["model"]) in choices.items()]  # fmt: skip

    # every answer, with its cost exactly as the ledger recorded it, and tagged for attribution
    rows = read_out(out)
    assert len(rows) == 2 * 11 and {r["error"] for r in rows} == {None}
    run_id = report["run_id"]
    events = stack.events(rows)
    for r in rows:
        ev = events[r["request_id"]]
        assert Decimal(r["cost_usd"]) == ev.cost_usd and ev.cost_usd > 0
        assert ev.model_used == r["model"] == r["model_used"]
        task = next(x["task"] for x in right_sizing_rows() if x["id"] == r["id"])
        assert ev.tags == {"team": "ml", "feature": "model-eval", "workload": "experimental", "task": task,
                           "eval_run": run_id, "eval_role": "candidate", "eval_model": r["model"]}  # fmt: skip
        assert r["answer"] == fake_answer(r["model"], prompt(int(r["id"][1:])))
    by_model = {m["model"]: m for m in report["models"]}
    for model in (BIG, SMALL):
        costs = [events[r["request_id"]].cost_usd for r in rows if r["model"] == model]
        assert Decimal(by_model[model]["cost_usd"]) == sum(costs)
        assert Decimal(by_model[model]["cost_per_call_usd"]) == quantize(sum(costs) / 11)
        assert by_model[model]["n"] == 11 and by_model[model]["errors"] == 0
    assert Decimal(by_model[SMALL]["cost_per_call_usd"]) < Decimal(by_model[BIG]["cost_per_call_usd"])
    assert Decimal(report["cost_usd"]) == sum(e.cost_usd for e in events.values())
    assert report["judge_cost_usd"] is None

    # the task-matrix snippet is the config's routing section, ready to paste: a tier per chosen model (no tiers
    # in this config), cheapest first, so each task's cheapest eligible model is the one chosen
    snippet = report["task_matrix_yaml"]
    routing = RoutingConfig.model_validate(yaml.safe_load(snippet)["routing"])
    assert routing.tiers == {"tier1": (SMALL,), "tier2": (BIG,)}
    assert routing.tasks == {"summarize": "tier1", "extract": "tier2", "classify": "tier1", "mixed": "tier2"}
    assert routing.eligible("summarize") == (SMALL, BIG) and routing.eligible("extract") == (BIG,)
    small_cost = next(t["cost_per_call_usd"] for t in report["tasks"] if t["task"] == "summarize" and t["model"] == SMALL)
    assert f"# summarize: tier1 -> {SMALL} (quality 1, ${small_cost} a call)" in snippet
    assert "# hard: no model reached 0.9 (best: gpt-4o at 0)" in snippet


def test_a_lower_target_picks_the_cheaper_model_and_csv_and_table_render(stack: Stack, tmp_path: Path) -> None:
    rows = [r for r in right_sizing_rows() if r["task"] == "mixed"]
    prompts = write_prompts(tmp_path / "p.jsonl", rows)
    stdout, _ = run("--prompts", prompts, "--models", f"{BIG},{SMALL}", "--target", "0.5", "-f", "csv", stack=stack)
    lines = stdout.splitlines()
    assert lines[0] == ("task,model,n,quality,cost_usd,cost_per_call_usd,latency_ms,errors,meets_target,chosen")
    chosen = [line.split(",")[:2] for line in lines[1:] if line.endswith(",True")]
    assert chosen == [["mixed", SMALL]]
    assert [line.split(",")[:4] for line in lines[1:]] == [["mixed", BIG, "2", "1.0"], ["mixed", SMALL, "2", "0.5"],
                                                           ["(all)", BIG, "2", "1.0"], ["(all)", SMALL, "2", "0.5"]]

    stdout, _ = run("--prompts", prompts, "--models", f"{SMALL},{BIG}", stack=stack)
    assert "By task (target quality 0.9)" in stdout and "<- cheapest" in stdout
    snippet = stdout[stdout.index("# cheapest model"):]
    assert yaml.safe_load(snippet)["routing"] == {"tiers": {"tier1": [BIG]}, "tasks": {"mixed": "tier1"}}


def test_rows_out_feeds_the_router_tools_and_the_matrix_follows_the_configs_tiers(stack: Stack, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", right_sizing_rows())
    config = tmp_path / "tiers.yaml"
    config.write_text(f"routing:\n  tiers:\n    small: [{SMALL}]\n    big: [{BIG}]\n")
    rows_out = tmp_path / "rows.jsonl"
    out = tmp_path / "answers.jsonl"
    stdout, _ = run("--prompts", prompts, "--models", f"{BIG},{SMALL}", "--rows-out", str(rows_out), "--out", str(out),
                    "-f", "json", "-c", str(config), stack=stack)  # fmt: skip
    report = json.loads(stdout)
    # against the config's tiers: no tiers of its own, and each task's tier serves it with a model that met 0.9
    pasted = yaml.safe_load(report["task_matrix_yaml"])["routing"]
    assert pasted == {"tasks": {"summarize": "small", "extract": "big", "classify": "small", "mixed": "big"}}
    # a row per prompt, in the prompts' order, with each model's score and its cost as the ledger has it
    rows = read_out(rows_out)
    answers = {(a["id"], a["model"]): a for a in read_out(out)}
    assert [r["id"] for r in rows] == [p["id"] for p in right_sizing_rows()]
    for r, p in zip(rows, right_sizing_rows(), strict=True):
        assert r["prompt"] == p["prompt"] and r["task"] == p["task"]
        assert r["scores"] == {m: answers[(r["id"], m)]["score"] for m in (BIG, SMALL)}
        assert r["costs"] == {m: answers[(r["id"], m)]["cost_usd"] for m in (BIG, SMALL)}
    assert rows[0]["scores"] == {BIG: 0.0, SMALL: 1.0}
    from tokenops.optimize.evaluate_router import read_rows

    read = read_rows(rows_out, BIG, SMALL)  # what tokenops evaluate router and train router read
    assert len(read) == 11 and read[0].strong == 0.0 and read[0].weak == 1.0 and read[0].strong_cost is not None
    assert sum(x.strong_cost or 0 for x in read) == Decimal(report["models"][0]["cost_usd"])
    # a config named with -c must load; an unwritable --rows-out fails before any paid call
    _, err = run("--prompts", prompts, "--models", BIG, "-c", str(tmp_path / "missing.yaml"), code=2, stack=stack)
    assert "missing.yaml" in err
    _, err = run("--prompts", prompts, "--models", BIG, "--rows-out", str(tmp_path), code=2, stack=stack)
    assert "--rows-out" in err


def test_contains_and_regex_scorers(stack: Stack, tmp_path: Path) -> None:
    rows = []
    for i in range(3):
        first_words = " ".join(fake_answer(SMALL, prompt(i)).split()[:2])
        rows.append({"id": str(i), "prompt": prompt(i), "expected": "  " + first_words.upper() + " "})
    prompts = write_prompts(tmp_path / "contains.jsonl", rows)
    report = json.loads(run("--prompts", prompts, "--models", f"{BIG},{SMALL}", "--scorer", "contains", "-f", "json",
                            stack=stack)[0])  # fmt: skip
    assert {m["model"]: m["quality"] for m in report["models"]} == {BIG: 0.0, SMALL: 1.0}
    assert report["choices"] == {"default": {"model": SMALL, "quality": 1.0, "cost_per_call_usd": report["models"][1][
        "cost_per_call_usd"], "best_model": SMALL, "best_quality": 1.0}}  # fmt: skip

    first = fake_answer(BIG, prompt(0)).split()[0]
    rows = [{"id": "any", "prompt": prompt(0), "expected": r"^\w+( \w+)*$"},
            {"id": "big", "prompt": prompt(0), "expected": f"^{first}\\b"},
            {"id": "case", "prompt": prompt(0), "expected": ["(?i)^" + first.upper(), "^" + first.upper() + "$"]}]
    prompts = write_prompts(tmp_path / "regex.jsonl", rows)
    out = tmp_path / "regex-out.jsonl"
    run("--prompts", prompts, "--models", BIG, "--scorer", "regex", "-f", "json", "-o", str(out), stack=stack)
    assert {r["id"]: r["score"] for r in read_out(out)} == {"any": 1.0, "big": 1.0, "case": 1.0}


def test_a_python_scorer_gets_the_whole_row_and_the_answer(stack: Stack, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "my_scorers_ok.py").write_text(
        "def words(row, answer):\n"
        "    return min(1.0, len(answer.split()) / row['want_words'])\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)  # found in the current folder, as `python -m` would
    rows = [{"id": "a", "prompt": prompt(1), "want_words": 40, "max_tokens": 5},
            {"id": "b", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt(2)}],
             "want_words": 1}]  # fmt: skip
    prompts = write_prompts(tmp_path / "py.jsonl", rows)
    out = tmp_path / "py-out.jsonl"
    run("--prompts", prompts, "--models", SMALL, "--scorer", "python:my_scorers_ok.words", "-o", str(out),
        "-f", "json", stack=stack)  # fmt: skip
    got = {r["id"]: r for r in read_out(out)}
    assert got["a"]["answer"] == fake_answer(SMALL, prompt(1), cap=5)  # max_tokens reached the provider
    assert got["a"]["score"] == len(got["a"]["answer"].split()) / 40 and got["b"]["score"] == 1.0


@pytest.mark.parametrize(("temperature", "sent"), [(None, 0.0), ("0.7", 0.7), ("omit", None)])
def test_the_temperature_and_token_cap_reach_the_provider(stack: Stack, tmp_path: Path, temperature: str | None,
                                                          sent: float | None) -> None:  # fmt: skip
    text = f"Temperature probe {temperature}"
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": "t", "prompt": text, "max_tokens": 7, "expected": "x"}])
    run("--prompts", prompts, "--models", SMALL, *(("--temperature", temperature) if temperature else ()), stack=stack)
    body = next(r["body"] for r in stack.fake.app.fake.state.received
                if isinstance(r["body"], dict) and r["body"].get("messages") == [{"role": "user", "content": text}])
    assert body.get("temperature") == sent and ("temperature" in body) == (sent is not None)
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 7


@pytest.mark.parametrize(("source", "spec", "message"), [
    ("def f(row, answer):\n    return 1.5\n", "python:bad_range.f", "returned 1.5 for prompt 'x'; expected a number in [0, 1]"),
    ("def f(row, answer):\n    return 'yes'\n", "python:bad_type.f", "returned 'yes' for prompt 'x'"),
    ("def f(row, answer):\n    return float('nan')\n", "python:bad_nan.f", "returned nan for prompt 'x'"),
    ("def f(row, answer):\n    raise KeyError('rubric')\n", "python:bad_raise.f", "raised KeyError: 'rubric' (prompt 'x')"),
    ("g = 1\n", "python:bad_attr.f", "module 'bad_attr' has no function 'f'"),
    ("", "python:no_such_module_here.f", "cannot import 'no_such_module_here'"),
    ("", "python:nodots", "expected python:module.fn"),
    ("", "bleu", "expected exact, contains, regex, judge:MODEL or python:module.fn"),
    ("", "judge:", "expected exact, contains, regex, judge:MODEL or python:module.fn"),
])  # fmt: skip
def test_a_bad_python_scorer_or_scorer_spec_is_one_line_error(stack: Stack, tmp_path: Path, source: str, spec: str,
                                                              message: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    if source:
        (tmp_path / f"{spec.split(':')[1].split('.')[0]}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": "x", "prompt": "hi"}])
    _, err = run("--prompts", prompts, "--models", SMALL, "--scorer", spec, stack=stack, code=2)
    assert err.startswith(f"error: --scorer {spec!r}: ")
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_judge_grades_through_the_gateway_and_its_cost_is_reported_apart(stack: Stack, tmp_path: Path) -> None:
    rows = [{"id": "j1", "task": "qa", "prompt": "Capital of France? [grade: 1]", "expected": "Paris"},
            {"id": "j2", "task": "qa", "prompt": "Capital of Spain? [grade: 0.5]"},
            {"id": "j3", "task": "qa", "prompt": "Capital of Italy? [grade: Score: high]"},
            {"id": "j4", "task": "chat", "prompt": "Say hi. [grade: .75]"}]  # fmt: skip
    prompts = write_prompts(tmp_path / "judge.jsonl", rows)
    out = tmp_path / "judge-out.jsonl"
    report = json.loads(run("--prompts", prompts, "--models", f"{SMALL},{DENIED}", "--scorer", f"judge:{JUDGE}",
                            "-o", str(out), "-f", "json", "--target", "0.7", stack=stack)[0])  # fmt: skip
    refused = [r for r in read_out(out) if r["model"] == DENIED]  # a failed answer is not sent to the judge
    assert len(refused) == 4 and {(r["judge_cost_usd"], r["judge_request_id"], r["score"]) for r in refused} == {
        (None, None, 0.0)}  # fmt: skip
    got = {r["id"]: r for r in read_out(out) if r["model"] == SMALL}
    assert {i: r["score"] for i, r in got.items()} == {"j1": 1.0, "j2": 0.5, "j3": 0.0, "j4": 0.75}
    assert got["j3"]["judge_error"] == "unparseable reply 'Score: high'" and got["j2"]["judge_error"] is None
    model = report["models"][0]
    assert model["judge_errors"] == 1 and model["errors"] == 0
    assert report["choices"]["qa"]["model"] is None and report["choices"]["chat"]["model"] == SMALL

    # the judge saw the prompt, the reference answer where there is one, and the answer, and graded at temperature 0
    seen = {b["messages"][1]["content"]: b for b in stack.fake.app.graded[-4:]}
    assert len(seen) == 4 and {b["temperature"] for b in seen.values()} == {0}
    assert ("<prompt>\nuser: Capital of France? [grade: 1]\n</prompt>\n<reference>\nParis\n</reference>\n<answer>\n"
            f"{got['j1']['answer']}\n</answer>") in seen
    assert f"<prompt>\nuser: Say hi. [grade: .75]\n</prompt>\n<answer>\n{got['j4']['answer']}\n</answer>" in seen

    # the judge's calls are in the ledger, tagged as judging, and their cost is reported apart from the answers'
    judge_costs = []
    answers = stack.events(list(got.values()))
    answer_costs = [answers[r["request_id"]].cost_usd for r in got.values()]
    for r in got.values():
        assert Decimal(r["judge_cost_usd"]) == Decimal("50") * Decimal("2") / 1_000_000 + Decimal("8") / 1_000_000
        judge_costs.append(Decimal(r["judge_cost_usd"]))
    assert Decimal(model["cost_usd"]) == sum(answer_costs) == Decimal(report["cost_usd"])
    assert Decimal(model["judge_cost_usd"]) == sum(judge_costs) == Decimal(report["judge_cost_usd"])
    assert report["models"][1]["judge_cost_usd"] == "0.00"
    judged = list(stack.events(list(got.values()), "judge_request_id").values())
    assert {e.model_used for e in judged} == {JUDGE} and sum(e.cost_usd for e in judged) == sum(judge_costs)
    assert [e.tags for e in judged] == [{"team": "ml", "feature": "model-eval", "workload": "experimental",
                                         "task": r["task"], "eval_run": report["run_id"], "eval_role": "judge",
                                         "eval_model": SMALL} for r in got.values()]  # fmt: skip


def test_a_refused_call_scores_zero_and_is_counted_with_its_code(stack: Stack, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": str(i), "prompt": prompt(i), "expected": fake_answer(
        SMALL, prompt(i))} for i in range(3)])  # fmt: skip
    out = tmp_path / "o.jsonl"
    report = json.loads(run("--prompts", prompts, "--models", f"{DENIED},{SMALL}", "-o", str(out), "-f", "json",
                            "--tags", "team=ml-eval,project=rightsizing", "--target", "0", stack=stack)[0])  # fmt: skip
    denied = report["models"][0]
    assert denied["model"] == DENIED and denied["errors"] == 3 and denied["quality"] == 0.0
    assert denied["error_codes"] == {"403 model_not_allowed": 3} and denied["latency_ms"] is None
    assert denied["cost_usd"] == "0.00" and denied["cost_per_call_usd"] is None  # no answer: no price of one
    assert report["choices"]["default"]["model"] == SMALL  # even at target 0, a model that never answered is no pick
    refused = [r for r in read_out(out) if r["model"] == DENIED]
    assert {r["error"] for r in refused} == {"403 model_not_allowed"} and {r["answer"] for r in refused} == {None}
    ok = next(r for r in read_out(out) if r["model"] == SMALL)
    assert stack.events([ok])[ok["request_id"]].tags["project"] == "rightsizing"


def test_an_unpriced_model_is_counted_apart_and_ranks_after_priced_ones(stack: Stack, tmp_path: Path) -> None:
    mystery = "mystery-7b"  # served by the fake, unknown to the price catalog: recorded unpriced, never $0
    rows = [{"id": str(i), "task": "both", "prompt": prompt(i),
             "expected": [fake_answer(mystery, prompt(i)), fake_answer(SMALL, prompt(i))]} for i in range(2)]
    rows.append({"id": "m", "task": "mystery-only", "prompt": prompt(5), "expected": fake_answer(mystery, prompt(5))})
    prompts = write_prompts(tmp_path / "p.jsonl", rows)
    report = json.loads(run("--prompts", prompts, "--models", f"{mystery},{SMALL}", "-f", "json", stack=stack)[0])
    by_model = {m["model"]: m for m in report["models"]}
    assert by_model[mystery]["unpriced"] == 3 and by_model[mystery]["cost_per_call_usd"] == "unpriced"
    assert by_model[mystery]["cost_usd"] == "0.00" and by_model[mystery]["quality"] == 1.0
    assert by_model[SMALL]["unpriced"] == 0 and Decimal(report["cost_usd"]) == Decimal(by_model[SMALL]["cost_usd"])
    assert report["choices"]["both"]["model"] == SMALL
    assert report["choices"]["mystery-only"] == {"model": mystery, "quality": 1.0, "cost_per_call_usd": "unpriced",
                                                 "best_model": mystery, "best_quality": 1.0}  # fmt: skip


def test_the_gateway_and_key_are_checked(stack: Stack, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": "x", "prompt": "hi", "expected": "hi"}])
    _, err = run("--prompts", prompts, "--models", SMALL, "--key", "tok-not-a-real-key", stack=stack, code=2)
    assert err.startswith("error: the gateway at") and "refused the key (401" in err
    url = f"http://127.0.0.1:{free_port()}"
    _, err = run("--prompts", prompts, "--models", SMALL, "--gateway", url + "/v1", stack=stack, code=2)
    assert err.startswith(f"error: cannot reach the gateway at {url}: ")
    _, err = run("--prompts", prompts, "--models", SMALL, stack=stack, code=2, TOKENOPS_API_KEY="")
    assert err.startswith("error: no key: pass --key")


@pytest.mark.parametrize(("args", "message"), [
    (("--models", "a,,b"), "--models 'a,,b': expected model names separated by commas"),
    (("--models", "a,a"), "--models 'a,a': a model is named twice"),
    (("--models", "a", "--tags", "team"), "malformed --tags: 'team' is not key=value"),
    (("--models", "a", "--tags", "task=x"), "--tags: task is set by the experiment itself"),
    (("--models", "a", "--temperature", "hot"), "--temperature 'hot': expected a number from 0 to 2, or omit"),
    (("--models", "a", "--temperature", "2.5"), "--temperature '2.5': expected a number from 0 to 2, or omit"),
])  # fmt: skip
def test_bad_arguments(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": "x", "prompt": "hi", "expected": "hi"}])
    _, err = run("--prompts", prompts, *args, code=2)
    assert err == f"error: {message}\n"


@pytest.mark.parametrize(("lines", "scorer", "message"), [
    (['{"id": "a", "prompt": "hi", "expected": "x"}', '{"id": "b", "prompt": "hi"'], "exact", ":2: not valid JSON"),
    (['["a", "b"]'], "exact", ":1: expected a JSON object, got list"),
    (['', '{"prompt": "hi", "expected": "x"}'], "exact", ':2: "id" must be a non-empty string'),
    (['{"id": "a", "prompt": "hi", "messages": [], "expected": "x"}'], "exact", ':1: give exactly one of "prompt"'),
    (['{"id": "a", "expected": "x"}'], "exact", ':1: give exactly one of "prompt" (a string) and "messages" (a list)'),
    (['{"id": "a", "prompt": " ", "expected": "x"}'], "exact", ':1: "prompt" must be a non-empty string'),
    (['{"id": "a", "messages": [{"role": "robot", "content": "hi"}]}'], "contains",
     ':1: "messages"[0] must be an object whose "role" is one of'),
    (['{"id": "a", "messages": [{"role": "user"}], "expected": "x"}'], "exact", ':1: "messages"[0] needs "content"'),
    (['{"id": "a", "prompt": "hi"}'], "exact", ':1: the exact scorer needs "expected"'),
    (['{"id": "a", "prompt": "hi", "expected": 3}'], "contains", ':1: "expected" must be a string or a non-empty list'),
    (['{"id": "a", "prompt": "hi", "expected": "(unclosed"}'], "regex", ':1: "expected" is not a valid regular expression'),
    (['{"id": "a", "prompt": "hi", "expected": "x", "task": "a,b"}'], "exact", ":1: \"task\" 'a,b' cannot be a tag value"),
    (['{"id": "a", "prompt": "hi", "expected": "x", "task": 7}'], "exact", ':1: "task" must be a string'),
    (['{"id": "a", "prompt": "hi", "expected": "x", "max_tokens": 0}'], "exact", ':1: "max_tokens" must be an integer >= 1'),
    (['{"id": "a", "prompt": "hi", "expected": "x", "max_tokens": true}'], "exact", ':1: "max_tokens" must be'),
    (['{"id": 1, "prompt": "hi", "expected": "x"}', '{"id": "1", "prompt": "yo", "expected": "x"}'], "exact",
     ":2: id '1' was already used on line 1"),
    (["", "   "], "exact", ": no prompts in it (expected one JSON object per line)"),
])  # fmt: skip
def test_a_malformed_prompts_file_is_one_line_naming_file_and_line(tmp_path: Path, lines: list[str], scorer: str,
                                                                   message: str) -> None:  # fmt: skip
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    _, err = run("--prompts", str(path), "--models", SMALL, "--scorer", scorer, code=2)
    assert err.startswith(f"error: {path}{message}"), err
    assert len(err.strip().splitlines()) == 1


def test_an_unreadable_prompts_file_is_an_error(tmp_path: Path) -> None:
    _, err = run("--prompts", str(tmp_path / "missing.jsonl"), "--models", SMALL, code=2)
    assert err == f"error: {tmp_path / 'missing.jsonl'}: no such file\n"
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": "a", "prompt": "caf\xe9"}\n')
    _, err = run("--prompts", str(tmp_path / "latin1.jsonl"), "--models", SMALL, code=2)
    assert err == f"error: {tmp_path / 'latin1.jsonl'}:1: not UTF-8 text (byte 26)\n"
