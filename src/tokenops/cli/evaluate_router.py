"""``tokenops evaluate router``: score a strong/weak router on prompts whose per-model scores are known.

The router sees only each row's prompt. The report is RouteLLM's (quality against the share of calls sent to the
strong model, CPT(50 %), CPT(80 %), APGR; see :mod:`tokenops.optimize.evaluate_router`) plus dollars: each row's
cost per model comes from its ``costs``, else from the price catalog (the prompt's input tokens estimated as the
gateway estimates them, ``--output-tokens`` of output assumed), else it is unpriced.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenops.cli.common import ConfigOption, Format, emit, load
from tokenops.errors import UsageError

DEFAULT_OUTPUT_TOKENS = 256
_PREFERRED = ("openai", "anthropic", "google")  # tried first when the config names no provider that prices a model


class ReportFormat(StrEnum):
    table = "table"
    json = "json"


def router(
    data: Annotated[Path, typer.Option(
        "--data", help='JSON Lines: {"id", "prompt", "scores": {model: 0..1}, "costs": {model: USD}} ("costs" '
                       "optional).", dir_okay=False)],
    strong: Annotated[str, typer.Option("--strong", help="The strong (expensive) model, as named in the rows.")],
    weak: Annotated[str, typer.Option("--weak", help="The weak (cheap) model, as named in the rows.")],
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="Output format.")] = ReportFormat.table,
    scores_out: Annotated[Path | None, typer.Option(
        "--scores-out", help='Write each row\'s {"id", "p_strong"} here (JSON Lines, input order).',
        dir_okay=False)] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", help="Router weights file to evaluate (default: the packaged router-v1).", dir_okay=False)] = None,
    rules: Annotated[bool, typer.Option("--rules", help="Evaluate the rule-based fallback router instead.")] = False,
    output_tokens: Annotated[int, typer.Option(
        "--output-tokens", min=0, help="Output tokens assumed per call when a row has no costs and the catalog "
                                       "prices it.")] = DEFAULT_OUTPUT_TOKENS,
    config: ConfigOption = None,
) -> None:  # fmt: skip
    """Evaluate the difficulty router: quality vs share of strong calls, CPT(50%), CPT(80%), APGR, dollars saved."""
    from tokenops.optimize.evaluate_router import evaluate, read_rows
    from tokenops.optimize.router import DifficultyRouter, Router, RuleRouter

    if model is not None and rules:
        raise UsageError("--model and --rules are two different routers: give one")
    if strong == weak:
        raise UsageError("--strong and --weak name the same model")
    pricer = _CatalogPricer(config, output_tokens)
    rows = read_rows(data, strong, weak, pricer)
    chosen: Router = RuleRouter() if rules else DifficultyRouter.load(model)
    p = [chosen.p_strong(r.prompt) for r in rows]
    if scores_out is not None:
        _write_scores(scores_out, [r.id for r in rows], p)
    report = evaluate(rows, p)
    payload = _payload(report, rows, strong, weak, chosen, pricer, data)
    if fmt is ReportFormat.json:
        emit([], Format.json, payload=payload)
        return
    _table(payload)


def _write_scores(path: Path, ids: list[str], p: list[float]) -> None:
    import orjson

    try:
        with path.open("wb") as f:
            for rid, x in zip(ids, p, strict=True):
                f.write(orjson.dumps({"id": rid, "p_strong": x}))
                f.write(b"\n")
    except OSError as exc:
        raise UsageError(f"--scores-out {path}: cannot write: {exc.strerror or exc}") from None


class _CatalogPricer:
    """``pricer(model, prompt)``: the estimated cost of one call, priced with the catalog's row in force now (the
    config's ``prices:`` included), found as ``tokenops prices calc`` finds it. The catalog loads on first use."""

    def __init__(self, config: str | None, output_tokens: int) -> None:
        self.config = config
        self.output_tokens = output_tokens
        self.now = datetime.now(UTC)
        self.rows: dict[str, Any] = {}  # model -> (provider, price row) or None
        self.used = False
        self._catalog: Any = None
        self._candidates: list[tuple[str, tuple[str, ...]]] = []

    def __call__(self, model: str, prompt: str) -> Decimal | None:
        from tokenops.pricing.model import price_usage
        from tokenops.tokens import InputShape, estimate_input
        from tokenops.usage import MalformedUsage, Usage

        self.used = True
        found = self.rows.get(model, False)
        if found is False:
            found = self.rows[model] = self._lookup(model)
        if found is None:
            return None
        try:
            usage = Usage(input_tokens=estimate_input(InputShape(chars=len(prompt)), model),
                          output_tokens=self.output_tokens)  # fmt: skip
        except MalformedUsage:
            return None
        return price_usage(usage, found[1]).total

    def _lookup(self, model: str) -> tuple[str, Any] | None:
        if self._catalog is None:
            from tokenops.pricing.catalog import load_catalog

            cfg = load(self.config)
            self._catalog = load_catalog(tuple(e.to_row(cfg.source) for e in cfg.prices))
            known = {r.provider for r in self._catalog.rows()}
            self._candidates = [(name, cfg.price_catalogs(name)) for name in cfg.providers]
            ordered = [p for p in _PREFERRED if p in known] + sorted(known - set(_PREFERRED))
            self._candidates += [(p, (p,)) for p in ordered if p not in cfg.providers]
        for name, ids in self._candidates:
            row = self._catalog.lookup(ids, model, self.now)
            if row is not None:
                return name, row
        return None

    def describe(self, model: str) -> dict[str, Any] | None:
        found = self.rows.get(model)
        if not found:
            return None
        name, row = found
        return {"provider": name, "catalog_model": row.model, "price_row_id": row.id,
                "input_per_mtok": _dec(row.input_per_mtok), "output_per_mtok": _dec(row.output_per_mtok)}  # fmt: skip


def _dec(v: Decimal | None) -> str | None:
    return None if v is None else format(v, "f")


def _usd(v: Decimal | None) -> str | None:
    from tokenops import money

    return None if v is None else money.format_usd(v)


def _share(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _payload(report: Any, rows: list[Any], strong: str, weak: str, chosen: Any, pricer: _CatalogPricer,
             data: Path) -> dict[str, Any]:  # fmt: skip
    import math

    def point(op: Any) -> dict[str, Any]:
        return {"target_pgr": op.target_pgr, "cpt": _share(op.cpt),
                "threshold": op.threshold if op.threshold is not None and math.isfinite(op.threshold) else None,
                "strong_share": _share(op.strong_share), "quality": op.quality, "pgr": op.pgr,
                "cost_usd": _usd(op.cost_usd), "saved_usd": _usd(op.saved_usd)}  # fmt: skip

    unpriced = {strong: sum(r.strong_cost is None for r in rows), weak: sum(r.weak_cost is None for r in rows)}
    return {
        "n": report.n, "data": str(data), "strong": strong, "weak": weak,
        "router": getattr(chosen, "name", type(chosen).__name__), "router_source": getattr(chosen, "source", None),
        "strong_quality": report.strong_quality, "weak_quality": report.weak_quality,
        "cpt20": _share(report.cpt20), "cpt50": _share(report.cpt50), "cpt80": _share(report.cpt80),
        "apgr": report.apgr, "auc": report.auc,
        "units": "shares (cpt*, strong_share) are fractions of the rows sent to the strong model, 0..1; RouteLLM "
                 "prints them as percentages",
        "curve": [{"threshold": c.threshold, "strong_share": _share(c.strong_share), "quality": c.quality,
                   "pgr": c.pgr, "cost_usd": _usd(c.cost_usd), "saved_usd": _usd(c.saved_usd)} for c in report.curve],
        "dollars": {"always_strong_usd": _usd(report.strong_cost_usd), "always_weak_usd": _usd(report.weak_cost_usd),
                    "at_cpt50": point(report.at_cpt50), "at_cpt80": point(report.at_cpt80),
                    "unpriced_rows": unpriced},
        "pricing": {"catalog_used": pricer.used, "output_tokens_assumed": pricer.output_tokens if pricer.used else None,
                    "input_tokens": "estimated: (characters + 3) // 4 + 4" if pricer.used else None,
                    "models": {m: pricer.describe(m) for m in (strong, weak)} if pricer.used else None},
    }  # fmt: skip


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _num(x: float | None, places: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{places}f}"


def _table(payload: dict[str, Any]) -> None:
    p = payload
    curve, seen = [], set()
    for c in p["curve"]:  # tied scores can repeat a point: the table shows each share once
        if c["strong_share"] in seen:
            continue
        seen.add(c["strong_share"])
        curve.append({"strong calls": _pct(c["strong_share"]), "p_strong at least": _num(c["threshold"], 4),
                      "quality": _num(c["quality"]), "PGR": _num(c["pgr"]), "cost_usd": c["cost_usd"] or "unpriced",
                      "saved_vs_strong_usd": c["saved_usd"] or "unpriced"})  # fmt: skip
    if curve and p["curve"][0]["strong_share"] == 0:
        curve[0]["p_strong at least"] = f"> {curve[0]['p_strong at least']}"  # RouteLLM's last threshold is strict
    emit(curve, Format.table, title=f"{p['router']} on {p['n']} rows: {p['strong']} (quality {p['strong_quality']:.3f})"
         f" vs {p['weak']} (quality {p['weak_quality']:.3f})", whole=True)  # fmt: skip
    d = p["dollars"]
    summary = [
        {"metric": "CPT(50%): strong calls for 50% of the quality gap", "value": _pct(p["cpt50"])},
        {"metric": "CPT(80%): strong calls for 80% of the quality gap", "value": _pct(p["cpt80"])},
        {"metric": "APGR: average performance gap recovered (random 0.5)", "value": _num(p["apgr"])},
        {"metric": "cost, always strong (USD)", "value": d["always_strong_usd"] or "unpriced"},
        {"metric": "cost, always weak (USD)", "value": d["always_weak_usd"] or "unpriced"},
    ]
    for key, label in (("at_cpt50", "CPT(50%)"), ("at_cpt80", "CPT(80%)")):
        op = d[key]
        summary.append({"metric": f"at {label}: cost (USD), {_pct(op['strong_share'])} strong calls",
                        "value": op["cost_usd"] or "unpriced"})  # fmt: skip
        summary.append({"metric": f"at {label}: saved vs always strong (USD)", "value": op["saved_usd"] or "unpriced"})
    footer = None
    if p["pricing"]["catalog_used"]:
        footer = (f"rows without costs priced from the catalog: input tokens estimated from the prompt, "
                  f"{p['pricing']['output_tokens_assumed']} output tokens assumed per call")  # fmt: skip
    emit(summary, Format.table, title="Router metrics (RouteLLM definitions)", footer=footer, whole=True)
