"""``tokenops evaluate models``: the same prompts through each candidate model via a running gateway, scored and
priced, and the cheapest model meeting a target quality per task (see :mod:`tokenops.optimize.experiments`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, emit
from tokenops.errors import UsageError

if TYPE_CHECKING:
    from tokenops.optimize.experiments import Outcome, Summary

DEFAULT_GATEWAY = "http://127.0.0.1:8787"  # `tokenops serve`'s default (gateway.port)


def models(
    prompts: Annotated[str, typer.Option("--prompts", "-p", help="JSONL file: one {id, prompt|messages, expected, "
                                         "task, max_tokens} object per line.")],
    model_list: Annotated[str, typer.Option("--models", "-m", help="Candidate models, comma-separated: "
                                            "gpt-4o,gpt-4o-mini.")],
    scorer: Annotated[str, typer.Option(help="exact, contains, regex, judge:MODEL or python:module.fn.")] = "exact",
    target: Annotated[float, typer.Option(help="Quality a model must reach (mean score, 0-1) to be chosen.",
                                          min=0.0, max=1.0)] = 0.9,
    gateway: Annotated[str, typer.Option(help="The TokenOps gateway's URL.", envvar="TOKENOPS_GATEWAY_URL",
                                         show_envvar=True)] = DEFAULT_GATEWAY,
    key: Annotated[str | None, typer.Option(help="A TokenOps key (tok-…) for the calls.", envvar="TOKENOPS_API_KEY",
                                            show_envvar=True, show_default=False)] = None,
    tags: Annotated[str, typer.Option("--tags", "-t", help="More tags for every call: team=ml,project=x "
                                      "(feature=model-eval and workload=experimental unless given).")] = "",
    concurrency: Annotated[int, typer.Option(help="Calls in flight at once.", min=1, max=64)] = 4,
    temperature: Annotated[str, typer.Option(help="Sampling temperature, 0-2, or 'omit' to send none (OpenAI's "
                                             "reasoning models refuse any but their default).")] = "0",
    timeout: Annotated[float, typer.Option(help="Seconds one call may take before it counts as an error.",
                                           min=0.1)] = 120.0,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Write every answer, score and cost to this "
                                            "JSONL file as they arrive.")] = None,
    rows_out: Annotated[str | None, typer.Option("--rows-out", help="Write a row per prompt with every model's "
                                                 "score and cost, for tokenops train router / evaluate router.")] = None,
    fmt: FormatOption = Format.table,
    config: ConfigOption = None,
) -> None:
    """Run prompts through each candidate model via the gateway, score the answers, and print quality against cost
    per model and per task, with the cheapest model reaching --target per task as the config's task matrix, ready to
    paste under routing: (against the config's tiers). Every call is tagged feature=model-eval and
    eval_run=<the run id printed>, so `report spend` shows what the experiment cost."""
    from tokenops.optimize import experiments as ex
    from tokenops.tags import TagError, parse_tags

    candidates = [m.strip() for m in model_list.split(",")]
    if not all(candidates) or any(" " in m for m in candidates):
        raise UsageError(f"--models {model_list!r}: expected model names separated by commas")
    if len(set(candidates)) != len(candidates):
        raise UsageError(f"--models {model_list!r}: a model is named twice")
    try:
        extra = parse_tags(tags, what="--tags")
    except TagError as exc:
        raise UsageError(str(exc)) from None
    reserved = sorted(set(extra) & {"task", "eval_run", "eval_role", "eval_model"})
    if reserved:
        raise UsageError(f"--tags: {', '.join(reserved)} is set by the experiment itself")
    from urllib.parse import urlsplit

    try:
        url = urlsplit(gateway)
        url.port  # noqa: B018 (raises ValueError for a port that is not a number or out of range)
    except ValueError:
        url = urlsplit("")
    if url.scheme not in ("http", "https") or not url.hostname:  # else every call fails and the report is errors
        raise UsageError(f"--gateway {gateway!r}: expected the gateway's URL, e.g. {DEFAULT_GATEWAY}")
    if not key:
        raise UsageError("no key: pass --key tok-… or set TOKENOPS_API_KEY (create one with `tokenops keys create`)")
    heat = _temperature(temperature)
    score = ex.make_scorer(scorer)
    rows = ex.load_prompts(prompts, score)
    routing = _routing(config)
    rows_file = _open_rows(rows_out)  # before any paid call: an unwritable path is an error now, not after the run
    run_id = ex.new_run_id()
    order = {(r.id, m): (i, j) for i, r in enumerate(rows) for j, m in enumerate(candidates)}
    outcomes: list[Outcome] = []
    with ex.GatewayClient(gateway, key, timeout=timeout, connections=concurrency) as client, \
            _Sink(out) as sink, _Progress(len(order), fmt) as advance:  # fmt: skip
        for outcome in ex.run_experiment(rows, candidates, score, client, run_id=run_id, concurrency=concurrency,
                                         temperature=heat, tags=extra):  # fmt: skip
            outcomes.append(outcome)
            sink.write(outcome)
            advance()
    outcomes.sort(key=lambda o: order[(o.id, o.model)])
    if rows_file is not None:
        with rows_file:
            rows_file.write(ex.router_rows(rows, outcomes))
    summary = ex.summarize(outcomes, candidates, target)
    _render(summary, fmt, scorer=score.spec, run_id=run_id, prompts=len(rows), judged=score.kind == "judge",
            routing=routing)  # fmt: skip


def _routing(config: str | None) -> Any:
    """The config's routing section (its tiers shape the task matrix printed), or None without tiers. A config
    named with --config or $TOKENOPS_CONFIG must load; ./tokenops.yaml found by default that does not load is
    passed over with a note (the experiment itself needs only the gateway)."""
    from tokenops.cli.common import load
    from tokenops.errors import ConfigError

    try:
        cfg = load(config)
    except ConfigError as exc:
        if config:
            raise
        typer.echo(f"note: tokenops.yaml not read ({exc}): the task matrix gets tiers of its own", err=True)
        return None
    return cfg.routing if cfg.routing.tiers else None


def _open_rows(path: str | None) -> Any:
    if path is None:
        return None
    try:
        return open(path, "wb")  # noqa: SIM115 (closed once the rows are written)
    except OSError as exc:
        raise UsageError(f"--rows-out {path}: cannot write it: {exc.strerror or exc}") from None


def _temperature(text: str) -> float | None:
    if text.strip().lower() == "omit":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 2:  # NaN too
        raise UsageError(f"--temperature {text!r}: expected a number from 0 to 2, or omit")
    return value


_COLUMNS = ["model", "n", "quality", "cost_usd", "cost_per_call_usd", "latency_ms", "errors", "error_codes", "unpriced",
            "judge_cost_usd", "judge_unpriced", "judge_errors", "rerouted"]  # fmt: skip


def _render(summary: Summary, fmt: Format, *, scorer: str, run_id: str, prompts: int, judged: bool,
            routing: Any = None) -> None:  # fmt: skip
    from tokenops.money import format_usd
    from tokenops.optimize.experiments import task_matrix_yaml

    chosen = {(c.task, c.model) for c in summary.choices}
    model_rows = [s.row() for s in summary.by_model]
    task_rows = [{**s.row(), "meets_target": s.quality + 1e-9 >= summary.target, "chosen": (s.task, s.model) in chosen}
                 for s in summary.by_task]  # fmt: skip
    snippet = task_matrix_yaml(summary, scorer=scorer, run_id=run_id, routing=routing)
    if fmt is Format.json:
        payload = {"run_id": run_id, "scorer": scorer, "target": summary.target, "prompts": prompts,
                   "models": model_rows, "tasks": task_rows,
                   "choices": {c.task: {"model": c.model, "quality": round(c.quality, 4),
                                        "cost_per_call_usd": None if c.model is None else format_usd(c.cost_per_call_usd),
                                        "best_model": c.best_model, "best_quality": round(c.best_quality, 4)}
                               for c in summary.choices},
                   "cost_usd": format_usd(summary.cost_usd),
                   "judge_cost_usd": None if summary.judge_cost_usd is None else format_usd(summary.judge_cost_usd),
                   "task_matrix_yaml": snippet}  # fmt: skip
        emit(model_rows, fmt, payload=payload)
        return
    columns = [c for c in _COLUMNS if _shown(c, model_rows, judged)]
    if fmt is Format.csv:  # one table: a row per task and model, then each model over all tasks as task "(all)"
        rows = task_rows + [{"task": "(all)", **r} for r in model_rows]
        emit(rows, fmt, columns=["task", *columns, "meets_target", "chosen"])
        return
    judging = "" if summary.judge_cost_usd is None else f"   judging: ${format_usd(summary.judge_cost_usd)}"
    emit(model_rows, fmt, columns=columns, whole=True,
         title=f"Models: {prompts} prompts, scorer {scorer}, run {run_id} (tag eval_run={run_id})",
         footer=f"calls: ${format_usd(summary.cost_usd)}{judging}")  # fmt: skip
    shown_tasks = [{**r, "meets_target": "yes" if r["meets_target"] else "",
                    "chosen": "<- cheapest" if r["chosen"] else ""} for r in task_rows]  # fmt: skip
    emit(shown_tasks, fmt, columns=["task", *columns, "meets_target", "chosen"], whole=True,
         title=f"By task (target quality {summary.target:g})")  # fmt: skip
    if any(s.rerouted for s in summary.by_model):
        typer.secho("warning: the gateway served some calls with another model than the one asked for (a routing "
                    "rule or budget downgrade): see the rerouted column", err=True, fg="yellow")  # fmt: skip
    sys.stdout.write("\n" + snippet)


def _shown(column: str, rows: list[dict[str, Any]], judged: bool) -> bool:
    if column in ("judge_cost_usd", "judge_errors"):
        return judged
    if column in ("error_codes", "unpriced", "judge_unpriced", "rerouted"):  # only when there is something to say
        return any(r[column] for r in rows)
    return True


class _Sink:
    """``--out``: one JSON line per outcome, written as it arrives so an interrupted run keeps what it paid for."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._file: Any = None

    def __enter__(self) -> _Sink:
        if self.path is not None:
            try:
                self._file = open(self.path, "wb")  # closed by __exit__
            except OSError as exc:
                raise UsageError(f"--out {self.path}: cannot write it: {exc}") from None
        return self

    def write(self, outcome: Outcome) -> None:
        import orjson

        if self._file is not None:
            self._file.write(orjson.dumps(outcome.to_json()) + b"\n")
            self._file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


class _Progress:
    """A progress bar on stderr for a person watching (a terminal, table output); nothing otherwise."""

    def __init__(self, total: int, fmt: Format) -> None:
        self.total = total
        self.bar: Any = None
        if fmt is Format.table and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)

    def __enter__(self) -> Any:
        if self.bar is None:
            return lambda: None
        self.bar.start()
        task = self.bar.add_task("calls", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
