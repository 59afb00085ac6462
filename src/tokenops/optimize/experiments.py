"""Model right-sizing experiments: run the same prompts through each candidate model via a running gateway, score
the answers, and pick per task the cheapest model whose mean quality reaches a target.

    load_prompts(path, scorer)      the JSONL prompts file, checked line by line (errors name file:line)
    make_scorer(spec)               exact | contains | regex | judge:MODEL | python:module.fn
    GatewayClient(url, key, …)      one chat-completions call through the gateway: answer, cost, latency, error
    run_experiment(rows, models, …) every (prompt, model) pair, ``concurrency`` calls at a time
    summarize(outcomes, target)     per model, per task × model, and the cheapest model meeting the target per task
    task_matrix_yaml(summary)       those choices as the config's routing section, ready to paste
    router_rows(rows, outcomes)     a row per prompt with each model's score and cost (tokenops train router)

Calls are plain HTTP through :mod:`httpx` (a main dependency, so the command works on an install without the
``openai`` SDK) in the OpenAI chat-completions format, which the gateway serves for every configured model
whatever its provider. Each call carries ``X-TokenOps-Tags: feature=model-eval,workload=experimental,task=…,
eval_run=…,eval_role=candidate|judge,eval_model=…`` so the experiment's spend is attributed (and can be reported
with ``report spend --where eval_run=…``). Its cost is the gateway's ``X-TokenOps-Cost-USD`` header, an exact
decimal (``unpriced`` when the gateway knows no price: such calls are counted apart, never as $0). Calls are not
retried (a retry would be paid twice): a call the gateway or provider refuses scores 0 and is counted as an error
with its status and code (``429 budget_exceeded``). A judge's calls are priced and reported apart from the
candidates'.

:func:`task_matrix_yaml` prints the choices as the config's ``routing:`` task matrix (task -> lowest tier), ready to
paste: against the config's tiers when it has some, else with a tier per chosen model.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

import orjson

from tokenops.errors import UsageError
from tokenops.money import ZERO, format_usd, quantize
from tokenops.routing import RoutingConfig
from tokenops.tags import TagError, format_tags, parse_tags
from tokenops.textfile import read_text

if TYPE_CHECKING:
    import httpx

ScorerKind = Literal["exact", "contains", "regex", "judge", "python"]
PythonScoreFn = Callable[[dict[str, Any], str], object]
DEFAULT_TASK = "default"
EXPERIMENT_TAGS = {"feature": "model-eval", "workload": "experimental"}  # a user's --tags may replace these
_ROLES = ("system", "developer", "user", "assistant", "tool")
_WS = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class PromptRow:
    """One line of the prompts file. ``raw`` is the line's whole object (what a python scorer receives)."""

    id: str
    messages: tuple[dict[str, Any], ...]
    task: str
    line: int
    expected: tuple[str, ...] = ()  # the file's "expected": one string or a list of accepted ones
    max_tokens: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scorer:
    """How answers are scored, 0..1. ``exact``: equal to an expected string once whitespace is collapsed and case
    folded; ``contains``: an expected string appears in the answer (same normalization); ``regex``: an expected
    pattern matches somewhere in the answer (``re.search``; case-sensitive unless the pattern says ``(?i)``);
    ``judge``: ``judge_model`` grades the answer through the same gateway; ``python``: ``fn(row, answer)``."""

    kind: ScorerKind
    spec: str
    judge_model: str | None = None
    fn: PythonScoreFn | None = None

    @property
    def needs_expected(self) -> bool:
        return self.kind in ("exact", "contains", "regex")


def make_scorer(spec: str) -> Scorer:
    """Parse ``--scorer``; a python scorer is imported now (from the current folder too), so a typo fails first."""
    spec = spec.strip()
    if spec in ("exact", "contains", "regex"):
        return Scorer(spec, spec)  # type: ignore[arg-type]  # narrowed by the membership test
    kind, _, target = spec.partition(":")
    target = target.strip()
    if kind == "judge" and target:
        return Scorer("judge", spec, judge_model=target)
    if kind == "python" and target:
        return Scorer("python", spec, fn=_import_fn(target, spec))
    raise UsageError(f"--scorer {spec!r}: expected exact, contains, regex, judge:MODEL or python:module.fn")


def _import_fn(target: str, spec: str) -> PythonScoreFn:
    module_name, sep, attr = target.replace(":", ".").rpartition(".")
    if not sep or not module_name or not attr:
        raise UsageError(f"--scorer {spec!r}: expected python:module.fn")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # as `python -m` would: a scorer module beside the prompts file is found without installing it
        sys.path.insert(0, cwd)
    try:
        importlib.invalidate_caches()  # the module may have been written a moment ago
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--scorer {spec!r}: cannot import {module_name!r}: {exc}") from None
    finally:
        if added:
            sys.path.remove(cwd)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"--scorer {spec!r}: module {module_name!r} has no function {attr!r}")
    return fn


# ---- the prompts file ----------------------------------------------------------------------------------------


def load_prompts(path: str | os.PathLike[str], scorer: Scorer) -> list[PromptRow]:
    """Read and check the JSONL prompts file: one object per non-blank line with ``id``, ``prompt`` (a string)
    or ``messages`` (OpenAI chat messages), ``expected`` (a string or list of strings; required by the exact,
    contains and regex scorers), ``task`` (default ``default``) and ``max_tokens``. Other keys are kept for a
    python scorer. Raises UsageError naming the file and line of the first problem."""
    name = str(path)
    text = read_text(path, what="JSONL file")
    rows: list[PromptRow] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{name}:{number}: not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{name}:{number}: expected a JSON object, got {type(obj).__name__}")
        try:
            row = _row(obj, number, scorer)
        except ValueError as exc:
            raise UsageError(f"{name}:{number}: {exc}") from None
        if row.id in seen:
            raise UsageError(f"{name}:{number}: id {row.id!r} was already used on line {seen[row.id]}")
        seen[row.id] = number
        rows.append(row)
    if not rows:
        raise UsageError(f"{name}: no prompts in it (expected one JSON object per line)")
    return rows


def _row(obj: dict[str, Any], number: int, scorer: Scorer) -> PromptRow:
    rid = obj.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not rid.strip():
        raise ValueError('"id" must be a non-empty string')
    if ("prompt" in obj) == ("messages" in obj):
        raise ValueError('give exactly one of "prompt" (a string) and "messages" (a list)')
    if "prompt" in obj:
        if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
            raise ValueError('"prompt" must be a non-empty string')
        messages: tuple[dict[str, Any], ...] = ({"role": "user", "content": obj["prompt"]},)
    else:
        messages = _messages(obj["messages"])
    expected = _expected(obj.get("expected"))
    if scorer.needs_expected and not expected:
        raise ValueError(f'the {scorer.kind} scorer needs "expected" (a string or a list of strings)')
    if scorer.kind == "regex":
        for pattern in expected:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f'"expected" is not a valid regular expression: {exc}') from None
    task = obj.get("task", DEFAULT_TASK)
    if not isinstance(task, str):
        raise ValueError('"task" must be a string')
    try:
        parse_tags(f"task={task}")
    except TagError:
        raise ValueError(f'"task" {task!r} cannot be a tag value: 1-200 characters, no "," "=" or control '
                         "characters, not starting with a space") from None  # fmt: skip
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError('"max_tokens" must be an integer >= 1')
    return PromptRow(rid, messages, task, number, expected, max_tokens, obj)


def _messages(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not value:
        raise ValueError('"messages" must be a non-empty list of {"role", "content"} objects')
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise ValueError(f'"messages"[{i}] must be an object whose "role" is one of {", ".join(_ROLES)}')
        if not isinstance(m.get("content"), str | list):
            raise ValueError(f'"messages"[{i}] needs "content" (a string or a list of parts)')
    return tuple(value)


def _expected(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError('"expected" must be a string or a non-empty list of strings')


# ---- scoring ---------------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """What exact and contains compare: whitespace collapsed to one space, trimmed, case folded."""
    return _WS.sub(" ", text).strip().casefold()


def local_score(scorer: Scorer, row: PromptRow, answer: str) -> float:
    """The score of every scorer but the judge's. A python scorer's result must be a number in [0, 1]."""
    if scorer.kind == "exact":
        return float(any(normalize(answer) == normalize(e) for e in row.expected))
    if scorer.kind == "contains":
        return float(any(normalize(e) in normalize(answer) for e in row.expected))
    if scorer.kind == "regex":
        return float(any(re.search(e, answer) for e in row.expected))
    assert scorer.fn is not None, scorer
    try:
        value = scorer.fn(dict(row.raw), answer)
    except Exception as exc:  # any error in the user's scorer stops the run, named with the prompt it failed on
        raise UsageError(f"--scorer {scorer.spec!r}: raised {type(exc).__name__}: {exc} (prompt {row.id!r})") from exc
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float) or not 0 <= value <= 1:  # NaN fails the range test too
        raise UsageError(f"--scorer {scorer.spec!r}: returned {value!r} for prompt {row.id!r}; expected a number in "
                         "[0, 1]")  # fmt: skip
    return float(value)


JUDGE_SYSTEM = ("You grade answers. Given a prompt, optionally a reference answer, and a candidate answer, reply "
                "with only a number from 0 to 1: 1 for a fully correct and complete answer, 0 for a wrong one. "
                "Reply with the number alone, nothing else.")  # fmt: skip
_GRADE = re.compile(r"(?:0(?:\.\d+)?|1(?:\.0+)?|\.\d+)")


def judge_messages(row: PromptRow, answer: str) -> list[dict[str, Any]]:
    prompt = "\n".join(f"{m['role']}: {_text(m['content'])}" for m in row.messages)
    parts = [f"<prompt>\n{prompt}\n</prompt>"]
    if row.expected:
        parts.append("<reference>\n" + "\n---\n".join(row.expected) + "\n</reference>")
    parts.append(f"<answer>\n{answer}\n</answer>")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


def parse_grade(reply: str) -> float | None:
    """A judge's reply, read strictly: a number in [0, 1] and nothing else (a trailing period aside)."""
    text = reply.strip().removesuffix(".").strip()
    return float(text) if _GRADE.fullmatch(text) else None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if isinstance(p, dict))


# ---- calls through the gateway ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """One call's result. ``cost_usd`` is None when the gateway had no price (``unpriced``) or sent none."""

    answer: str | None
    cost_usd: Decimal | None
    latency_ms: float
    request_id: str | None = None
    model_used: str | None = None
    error: str | None = None  # "<status> <code>" (e.g. "429 budget_exceeded"), "timeout" or "transport: …"


class GatewayClient:
    """Chat-completions calls through a TokenOps gateway, safe to share between threads.

    with GatewayClient("http://127.0.0.1:8787", "tok-…") as gw:
        gw.chat("gpt-4o-mini", [{"role": "user", "content": "hi"}], tags={"feature": "model-eval"})
    """

    def __init__(self, url: str, key: str, *, timeout: float = 120.0, connections: int = 4) -> None:
        import httpx

        base = url.rstrip("/").removesuffix("/v1")
        self.url = base
        self._http = httpx.Client(base_url=base, timeout=timeout, headers={"authorization": f"Bearer {key}"},
                                  limits=httpx.Limits(max_connections=max(1, connections)))  # fmt: skip

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def chat(self, model: str, messages: Sequence[dict[str, Any]], *, tags: dict[str, str],
             temperature: float | None = 0.0, max_tokens: int | None = None) -> Reply:  # fmt: skip
        """One call; ``temperature=None`` leaves it out (OpenAI's reasoning models refuse any but their default)."""
        import httpx

        body: dict[str, Any] = {"model": model, "messages": list(messages)}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_completion_tokens"] = max_tokens
        started = time.perf_counter()
        try:
            resp = self._http.post("/v1/chat/completions", content=orjson.dumps(body),
                                   headers={"content-type": "application/json", "x-tokenops-tags": format_tags(tags)})  # fmt: skip
        except httpx.ConnectError as exc:  # nothing to measure: the gateway is not there
            raise UsageError(f"cannot reach the gateway at {self.url}: {exc} (is `tokenops serve` running? "
                             "see --gateway)") from None  # fmt: skip
        except httpx.TimeoutException:
            return Reply(None, None, _ms(started), error="timeout")
        except httpx.TransportError as exc:
            return Reply(None, None, _ms(started), error=f"transport: {exc}")
        latency = _ms(started)
        rid, used = resp.headers.get("x-tokenops-request-id"), resp.headers.get("x-tokenops-model")
        cost = _cost(resp.headers.get("x-tokenops-cost-usd"), ok=resp.is_success, url=self.url)
        if resp.status_code == 401:
            raise UsageError(f"the gateway at {self.url} refused the key (401 {_error_code(resp)}): check --key")
        if not resp.is_success:
            return Reply(None, cost, latency, rid, used, error=f"{resp.status_code} {_error_code(resp)}")
        try:
            answer = orjson.loads(resp.content)["choices"][0]["message"].get("content") or ""
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            return Reply(None, cost, latency, rid, used, error=f"{resp.status_code} malformed_response")
        return Reply(str(answer), cost, latency, rid, used)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _cost(header: str | None, *, ok: bool, url: str) -> Decimal | None:
    if header is None:
        if ok:
            raise UsageError(f"{url} answered without X-TokenOps-Cost-USD: is it a TokenOps gateway?")
        return None  # an error from something in front of the gateway: what it cost is not known
    if header in ("unpriced", "pending"):
        return None
    try:
        return Decimal(header)
    except InvalidOperation:
        raise UsageError(f"{url} sent X-TokenOps-Cost-USD {header!r}, not a decimal amount") from None


def _error_code(resp: httpx.Response) -> str:
    try:
        err = orjson.loads(resp.content).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return "error"
    if isinstance(err, dict):
        return str(err.get("code") or err.get("type") or "error")
    return "error"


# ---- the run ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One (prompt, model) pair: the answer, its score and what it cost. ``judge_*``: the judge's call, if any."""

    id: str
    task: str
    model: str
    answer: str | None
    score: float
    cost_usd: Decimal | None
    latency_ms: float
    request_id: str | None = None
    model_used: str | None = None
    error: str | None = None
    judge_cost_usd: Decimal | None = None
    judge_error: str | None = None  # the judge's call failed, or its reply was not a number in [0, 1]
    judge_request_id: str | None = None
    judged: bool = False

    def to_json(self) -> dict[str, Any]:
        asked = self.judged and self.error is None  # a failed answer is not sent to the judge
        return {"id": self.id, "task": self.task, "model": self.model, "model_used": self.model_used,
                "answer": self.answer, "score": self.score, "cost_usd": format_usd(self.cost_usd),
                "latency_ms": round(self.latency_ms, 3), "request_id": self.request_id, "error": self.error,
                **({"judge_cost_usd": format_usd(self.judge_cost_usd) if asked else None,
                    "judge_error": self.judge_error, "judge_request_id": self.judge_request_id}
                   if self.judged else {})}  # fmt: skip


def new_run_id() -> str:
    return "ev-" + uuid.uuid4().hex[:12]


def run_experiment(rows: Sequence[PromptRow], models: Sequence[str], scorer: Scorer, client: GatewayClient, *,
                   run_id: str, concurrency: int = 4, temperature: float | None = 0.0,
                   tags: dict[str, str] | None = None) -> Iterator[Outcome]:  # fmt: skip
    """Call every model on every prompt, ``concurrency`` at a time, yielding outcomes as they finish (a person's
    progress bar and ``--out`` see them live). Stops at the first error that is not a call's own (an unreachable
    gateway, a refused key, a python scorer's failure), after the calls in flight finish. The judge is called at
    temperature 0, or with none when ``temperature`` is None (models that accept no temperature)."""
    base = {**EXPERIMENT_TAGS, **(tags or {}), "eval_run": run_id}

    def one(row: PromptRow, model: str) -> Outcome:
        t = {**base, "task": row.task, "eval_model": model}
        reply = client.chat(model, row.messages, tags={**t, "eval_role": "candidate"}, temperature=temperature,
                            max_tokens=row.max_tokens)  # fmt: skip
        out = Outcome(row.id, row.task, model, reply.answer, 0.0, reply.cost_usd, reply.latency_ms, reply.request_id,
                      reply.model_used, reply.error, judged=scorer.kind == "judge")  # fmt: skip
        if reply.answer is None:
            return out
        if scorer.kind != "judge":
            return replace(out, score=local_score(scorer, row, reply.answer))
        assert scorer.judge_model is not None
        verdict = client.chat(scorer.judge_model, judge_messages(row, reply.answer),
                              temperature=None if temperature is None else 0.0,
                              tags={**t, "eval_role": "judge"})  # fmt: skip
        grade = None if verdict.answer is None else parse_grade(verdict.answer)
        problem = verdict.error or (None if grade is not None else f"unparseable reply {(verdict.answer or '')[:40]!r}")
        return replace(out, score=grade or 0.0, judge_cost_usd=verdict.cost_usd, judge_error=problem,
                        judge_request_id=verdict.request_id)  # fmt: skip

    pairs = [(row, model) for row in rows for model in models]
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="evaluate") as pool:
        pending = {pool.submit(one, row, model) for row, model in pairs}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:  # an error above, or the caller stopped iterating: calls not yet started are not made
            for future in pending:
                future.cancel()


# ---- aggregation and the choice --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    """The outcomes of one model (on one task, or on all). ``quality`` is the mean score over all ``n`` calls (a
    failed call scores 0). ``cost_usd`` sums the priced calls and ``unpriced`` counts the others. ``cost_per_call_usd``
    is what an answer cost: the answered calls' cost over their number (None when none was answered or one of
    them was unpriced: then it cannot be compared). ``latency_ms``: mean over the answered calls."""

    task: str | None
    model: str
    n: int
    answered: int
    quality: float
    cost_usd: Decimal
    cost_per_call_usd: Decimal | None
    latency_ms: float | None
    errors: int
    error_codes: dict[str, int]
    unpriced: int
    judge_cost_usd: Decimal | None  # None: no judge
    judge_unpriced: int
    judge_errors: int
    rerouted: int  # calls the gateway served with another model than the one asked for

    def row(self) -> dict[str, Any]:
        return {**({"task": self.task} if self.task is not None else {}), "model": self.model, "n": self.n,
                "quality": round(self.quality, 4), "cost_usd": format_usd(self.cost_usd),
                "cost_per_call_usd": format_usd(self.cost_per_call_usd) if self.answered else None,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
                "errors": self.errors, "error_codes": self.error_codes, "unpriced": self.unpriced,
                "judge_cost_usd": None if self.judge_cost_usd is None else format_usd(self.judge_cost_usd),
                "judge_unpriced": self.judge_unpriced, "judge_errors": self.judge_errors,
                "rerouted": self.rerouted}  # fmt: skip


def stats(outcomes: Sequence[Outcome], model: str, task: str | None = None) -> Stats:
    n = len(outcomes)
    cost = sum((o.cost_usd for o in outcomes if o.cost_usd is not None), ZERO)
    ok = [o for o in outcomes if o.error is None]
    per_call = None
    if ok and all(o.cost_usd is not None for o in ok):
        per_call = quantize(sum((o.cost_usd for o in ok if o.cost_usd is not None), ZERO) / len(ok))
    codes: dict[str, int] = {}
    for o in outcomes:
        if o.error is not None:
            codes[o.error] = codes.get(o.error, 0) + 1
    judged = [o for o in outcomes if o.judged and o.error is None]  # a failed answer is not sent to the judge
    judge_cost = sum((o.judge_cost_usd for o in judged if o.judge_cost_usd is not None), ZERO)
    return Stats(
        task, model, n, len(ok), math.fsum(o.score for o in outcomes) / n if n else 0.0, cost, per_call,
        math.fsum(o.latency_ms for o in ok) / len(ok) if ok else None, n - len(ok), codes,
        sum(o.cost_usd is None for o in outcomes), judge_cost if any(o.judged for o in outcomes) else None,
        sum(o.judge_cost_usd is None for o in judged), sum(o.judge_error is not None for o in judged),
        sum(o.model_used is not None and o.model_used != o.model for o in outcomes),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Choice:
    """The cheapest model of a task whose mean quality reached the target, or None with the best one seen."""

    task: str
    model: str | None
    quality: float
    cost_per_call_usd: Decimal | None
    best_model: str
    best_quality: float


@dataclass(frozen=True, slots=True)
class Summary:
    target: float
    by_model: list[Stats]
    by_task: list[Stats]  # task × model, tasks in first-seen order, models in the order given
    choices: list[Choice]
    cost_usd: Decimal  # the candidates' priced calls
    judge_cost_usd: Decimal | None


_EPSILON = 1e-9  # a mean of 0/1 scores summed in floating point may fall a hair below an exact target


def summarize(outcomes: Sequence[Outcome], models: Sequence[str], target: float) -> Summary:
    tasks = list(dict.fromkeys(o.task for o in outcomes))
    by_model = [stats([o for o in outcomes if o.model == m], m) for m in models]
    by_task = [stats(sel, m, t) for t in tasks for m in models if (sel := [o for o in outcomes if o.task == t
                                                                           and o.model == m])]  # fmt: skip
    choices = []
    for t in tasks:
        cands = [s for s in by_task if s.task == t]
        best = max(cands, key=lambda s: s.quality)
        ok = [s for s in cands if s.answered and s.quality + _EPSILON >= target]
        # unknown prices rank last; equal prices go to the better, then the faster model
        ok.sort(key=lambda s: (s.cost_per_call_usd is None, s.cost_per_call_usd or ZERO, -s.quality,
                               math.inf if s.latency_ms is None else s.latency_ms))  # fmt: skip
        pick = ok[0] if ok else None
        choices.append(Choice(t, pick.model if pick else None, pick.quality if pick else best.quality,
                              pick.cost_per_call_usd if pick else None, best.model, best.quality))  # fmt: skip
    judged = [s.judge_cost_usd for s in by_model if s.judge_cost_usd is not None]
    return Summary(target, by_model, by_task, choices, sum((s.cost_usd for s in by_model), ZERO),
                   sum(judged, ZERO) if judged else None)  # fmt: skip


def router_rows(rows: Sequence[PromptRow], outcomes: Sequence[Outcome]) -> bytes:
    """One JSON line per prompt in the rows format of ``tokenops evaluate router`` and ``tokenops train router``:
    ``{"id", "task", "prompt", "scores": {model: score}, "costs": {model: USD or null}}``, the prompt being the text
    the gateway's router reads of the call (:func:`tokenops.optimize.router.prompt_text`). A failed call scores 0, as
    in the report; an unpriced one has a null cost."""
    import orjson

    from tokenops.optimize.router import prompt_text

    by_prompt: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_prompt.setdefault(o.id, []).append(o)
    lines = []
    for r in rows:
        got = by_prompt.get(r.id, [])
        lines.append(orjson.dumps({"id": r.id, "task": r.task,
                                   "prompt": prompt_text("chat.completions", {"messages": list(r.messages)}),
                                   "scores": {o.model: o.score for o in got},
                                   "costs": {o.model: None if o.cost_usd is None else format_usd(o.cost_usd)
                                             for o in got}}))  # fmt: skip
    return b"".join(line + b"\n" for line in lines)


def task_matrix_yaml(summary: Summary, *, scorer: str, run_id: str, routing: RoutingConfig | None = None) -> str:
    """The choices as the config's ``routing:`` task matrix, ready to paste. A task names the lowest tier that may
    serve it and the gateway sends its calls to the cheapest model of that tier or above, so with the config's
    tiers each task gets the lowest tier whose cheapest model there (by this run's cost per call) met the target;
    models of those tiers this run did not measure are named, since one of them may be cheaper. Without tiers in the
    config: a tier per chosen model, cheapest first (``tier1`` …), so each task's cheapest eligible model is its own
    choice. A task no model served well enough gets no line (``null`` would not load): a comment says why."""
    import yaml

    tiers = dict(routing.tiers) if routing is not None and routing.tiers else None
    made: dict[str, tuple[str, ...]] = {}
    if tiers is None:  # a tier per chosen model, cheapest first: each task's tier has its model as the cheapest
        chosen = {c.model: c.cost_per_call_usd for c in summary.choices if c.model is not None}
        order = sorted(chosen, key=lambda m: (chosen[m] is None, chosen[m] or ZERO, m))
        made = {f"tier{i}": (m,) for i, m in enumerate(order, start=1)}
    levels = tiers or made
    names = list(levels)
    tasks: dict[str, str] = {}
    notes = []
    for c in summary.choices:
        if c.model is None:
            notes.append(f"# {c.task}: no model reached {summary.target:g} (best: {c.best_model} at "
                         f"{round(c.best_quality, 4):g})")  # fmt: skip
            continue
        measured = {s.model: s for s in summary.by_task if s.task == c.task}
        for i, tier in enumerate(names):
            eligible = [m for t in names[i:] for m in levels[t]]
            priced = sorted((measured[m] for m in eligible if m in measured and measured[m].answered
                             and measured[m].cost_per_call_usd is not None),
                            key=lambda s: (s.cost_per_call_usd or ZERO, -s.quality))  # fmt: skip
            if priced and priced[0].quality + _EPSILON >= summary.target:
                pick = priced[0]
                tasks[c.task] = tier
                unmeasured = [m for m in eligible if m not in measured]
                notes.append(f"# {c.task}: {tier} -> {pick.model} (quality {round(pick.quality, 4):g}, "
                             f"${format_usd(pick.cost_per_call_usd)} a call)"
                             + (f"; not measured, check: {', '.join(unmeasured)}" if unmeasured else ""))  # fmt: skip
                break
        else:
            notes.append(f"# {c.task}: {c.model} met {summary.target:g} (quality {round(c.quality, 4):g}) but no tier "
                         "has it as its cheapest measured model: give it a tier of its own below the dearer ones")  # fmt: skip
    body: dict[str, Any] = {"tiers": {t: list(m) for t, m in made.items()}} if made else {}
    body["tasks"] = tasks
    text = yaml.safe_dump({"routing": body}, default_flow_style=False, sort_keys=False, width=1000)
    head = (f"# cheapest model with mean quality >= {summary.target:g} per task (tokenops evaluate models, scorer "
            f"{scorer}, run {run_id})\n")  # fmt: skip
    return head + text + "".join(n + "\n" for n in notes)
