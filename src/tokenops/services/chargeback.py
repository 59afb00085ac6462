"""Showback and chargeback statements (``tokenops report chargeback``): a calendar month's spend per cost centre.

The month's spend is read from the ledger's spend report, grouped by every key the rules look at (the
``lines`` of ``chargeback:``, the keys its matches name, the cost-centre tag), and handed to
:func:`tokenops.analytics.allocation.allocate`, which splits it over the cost centres and rounds every line to
the cent so that the statements add up to the month's bill (the ledger's exact total rounded half-up to the
cent). The report shows that reconciliation, the rounding rule, each pool and how it was spread, and the calls
that had no price (their cost is unknown, not $0: they are counted on every line).

Without a ``chargeback:`` section the cost centres are the values of the ``team`` tag and spend without a team
is kept on its own ``Unallocated`` statement.
"""

from __future__ import annotations

import csv
import html
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from tokenops.analytics.allocation import (
    ROUNDING,
    Allocation,
    CostCentre,
    Item,
    Line,
    Rules,
    SharedPool,
    Spread,
    Statement,
    allocate,
    fraction_usd,
)
from tokenops.config import ChargebackConfig, Config
from tokenops.errors import UsageError
from tokenops.ledger.base import Ledger
from tokenops.ledger.reports import ReportQuery, check_timezone
from tokenops.money import format_usd

BILL_RULE = "the ledger's exact total rounded half-up to the cent"
ROUNDING_TEXT = {ROUNDING: "largest remainder: every line rounded down to the cent, then one cent each to the lines "
                           "that lost the most, until the statements add up to the bill"}  # fmt: skip
CSV_COLUMNS = ("cost_centre", "kind", "label", "pool", "rule", "share", "requests", "unpriced_requests", "exact_usd",
               "amount_usd")  # fmt: skip
TABLE_COLUMNS = ("kind", "line", "rule", "share", "requests", "unpriced", "exact_usd", "amount_usd")


def month_window(month: str, timezone: str = "UTC") -> tuple[datetime, datetime]:
    """``2026-10`` as [first instant, first instant of the next month) in ``timezone``."""
    found = re.fullmatch(r"(\d{4})-(\d{2})", month.strip())
    if not found or not 1 <= int(found.group(2)) <= 12 or not 1 <= int(found.group(1)) <= 9998:
        raise UsageError(f"--month: {month[:20]!r} is not a month like 2026-10")
    year, mon = int(found.group(1)), int(found.group(2))
    zone = ZoneInfo(check_timezone(timezone))
    start = datetime(year, mon, 1, tzinfo=zone)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=zone)
    try:  # 0001-01 in Asia/Tokyo begins before the year 1 in UTC
        start.astimezone(UTC), end.astimezone(UTC)
    except OverflowError:
        raise UsageError(f"--month: {month!r} in {timezone} is outside the years 1 to 9999 in UTC") from None
    return start, end


def rules_of(cb: ChargebackConfig) -> Rules:
    """The allocation rules of the config's ``chargeback:`` section."""
    untagged = (Spread("weights", dict(cb.untagged_weights)) if cb.untagged == "weights"
                else Spread(cb.untagged) if cb.untagged in ("proportional", "even", "keep")
                else Spread("to", to=cb.untagged))  # fmt: skip
    return Rules(
        cost_centres=tuple(CostCentre(c.name, dict(c.match)) for c in cb.cost_centres),
        cost_centre_tag=cb.cost_centre_tag,
        shared=tuple(SharedPool(dict(p.match), Spread(p.rule, dict(p.weights)), p.name or "") for p in cb.shared),
        untagged=untagged,
        lines=tuple(cb.lines),
        rounding=cb.rounding,
    )


def dimensions(rules: Rules) -> list[str]:
    """What the month's spend is grouped by: the lines' keys, then every key a match names."""
    names = list(rules.lines)
    for match in [c.match for c in rules.cost_centres] + [p.match for p in rules.shared]:
        names += [k for k in match if k not in names]
    if not rules.cost_centres and rules.cost_centre_tag not in names:
        names.append(rules.cost_centre_tag)
    return names


@dataclass
class ChargebackReport:
    month: str
    timezone: str
    since: datetime
    until: datetime
    allocation: Allocation
    ledger_total: Decimal  # the ledger's exact total of the month

    @property
    def no_data(self) -> bool:
        return self.allocation.requests == 0

    @property
    def message(self) -> str:
        return f"no data for {self.month} ({self.timezone}): the ledger holds no calls in that month"

    # --- machines -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        a = self.allocation
        return {
            "month": self.month, "timezone": self.timezone, "since": self.since.isoformat(),
            "until": self.until.isoformat(), "no_data": self.no_data,
            "rounding": {"rule": a.rounding, "bill": BILL_RULE, "how": ROUNDING_TEXT[a.rounding]},
            "statements": [_statement_json(s) for s in a.statements],
            "pools": [{"name": p.name, "kind": p.kind, "rule": p.rule, "exact_usd": format_usd(p.exact),
                       "requests": p.requests, "unpriced_requests": p.unpriced,
                       "shares": {c: _share(f) for c, f in p.shares.items()}, "note": p.note} for p in a.pools],
            "reconciliation": self.reconciliation(),
            "requests": a.requests, "unpriced_requests": a.unpriced,
        }  # fmt: skip

    def reconciliation(self) -> dict[str, Any]:
        a = self.allocation
        return {"statements_total_usd": format(a.statements_total, "f"), "bill_usd": format(a.total, "f"),
                "ledger_total_usd": format_usd(self.ledger_total),
                "reconciled": a.reconciled and a.total_exact == self.ledger_total}  # fmt: skip

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per line, a ``total`` row per statement, and the ``bill`` row (the reconciliation)."""
        rows: list[dict[str, Any]] = []
        for s in self.allocation.statements:
            rows += [{"cost_centre": s.cost_centre, **_line_row(line)} for line in s.lines]
            rows.append({"cost_centre": s.cost_centre, "kind": "total", "label": "statement total",
                         "requests": s.requests, "unpriced_requests": s.unpriced,
                         "exact_usd": format_usd(fraction_usd(s.exact)), "amount_usd": format(s.total, "f")})  # fmt: skip
        r = self.reconciliation()
        rows.append({"cost_centre": "(all)", "kind": "bill",
                     "label": f"sum of statements == bill ({BILL_RULE}): {'yes' if r['reconciled'] else 'NO'}",
                     "rule": self.allocation.rounding, "requests": self.allocation.requests,
                     "unpriced_requests": self.allocation.unpriced, "exact_usd": r["ledger_total_usd"],
                     "amount_usd": r["statements_total_usd"]})  # fmt: skip
        return rows

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.csv_rows():
            writer.writerow({c: row.get(c, "") for c in CSV_COLUMNS})
        return buf.getvalue()

    # --- people -------------------------------------------------------------------------------------
    def table_rows(self, s: Statement) -> list[dict[str, Any]]:
        return [{"kind": line.kind, "line": line.label, "rule": line.rule or "",
                 "share": "" if line.share is None else _percent(line.share),
                 "requests": line.requests if line.share is None else "",
                 "unpriced": line.unpriced if line.share is None else "",
                 "exact_usd": _exact_cell(line), "amount_usd": format(line.amount, "f")} for line in s.lines]  # fmt: skip

    def footer(self) -> str:
        a = self.allocation
        r = self.reconciliation()
        text = (f"bill {self.month} ({self.timezone}): ${r['statements_total_usd']} = sum of the statements; ledger "
                f"total ${r['ledger_total_usd']} rounded half-up to the cent = ${r['bill_usd']}: "
                f"{'reconciled' if r['reconciled'] else 'NOT RECONCILED'}. Rounding: {ROUNDING_TEXT[a.rounding]}. "
                f"Calls: {a.requests}, unpriced: {a.unpriced}")  # fmt: skip
        if a.unpriced:
            text += " (no price known: their cost is not in these amounts; tokenops prices list --unpriced)"
        return text

    def html(self) -> str:
        """A self-contained, printable HTML document: one statement per page, every value escaped."""
        e = html.escape
        a = self.allocation
        r = self.reconciliation()
        parts = [
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Chargeback statements {e(self.month)}</title>",
            "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#111}"
            "section{page-break-after:always;break-after:page;margin-bottom:3em}"
            "table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ccc;padding:4px 8px;"
            "text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}"
            "tfoot td{font-weight:bold;border-top:2px solid #111}.note{color:#555;font-size:.9em}"
            "@media print{body{margin:0}}</style></head><body>",
        ]
        if self.no_data:
            parts.append(f"<p>{e(self.message)}</p></body></html>")
            return "\n".join(parts)
        for s in a.statements:
            parts.append(f"<section><h1>Statement: {e(s.cost_centre)}</h1>"
                         f"<p>{e(self.month)} ({e(self.timezone)}), {e(self.since.isoformat())} to "
                         f"{e(self.until.isoformat())}</p><table><thead><tr>"
                         + "".join(f'<th class="{"n" if c in _NUMERIC else ""}">{e(c)}</th>' for c in TABLE_COLUMNS)
                         + "</tr></thead><tbody>")  # fmt: skip
            for row in self.table_rows(s):
                parts.append("<tr>" + "".join(f'<td class="{"n" if c in _NUMERIC else ""}">{e(str(row[c]))}</td>'
                                              for c in TABLE_COLUMNS) + "</tr>")  # fmt: skip
            parts.append(f'<tfoot><tr><td colspan="{len(TABLE_COLUMNS) - 1}">Total (calls: {s.requests}, unpriced: '
                         f'{s.unpriced})</td><td class="n">${e(format(s.total, "f"))}</td></tr></tfoot></table>'
                         "</section>")  # fmt: skip
        parts.append("<section><h1>Reconciliation</h1><table><thead><tr><th>cost centre</th>"
                     '<th class="n">amount_usd</th></tr></thead><tbody>')  # fmt: skip
        parts += [f'<tr><td>{e(s.cost_centre)}</td><td class="n">{e(format(s.total, "f"))}</td></tr>'
                  for s in a.statements]  # fmt: skip
        parts.append(f'</tbody><tfoot><tr><td>sum of statements</td><td class="n">${e(r["statements_total_usd"])}'
                     "</td></tr></tfoot></table>")  # fmt: skip
        parts.append(f'<p class="note">{e(self.footer())}</p>')
        for p in a.pools:
            shares = ", ".join(f"{c}: {_percent(f)}" for c, f in p.shares.items()) or "kept apart"
            parts.append(f'<p class="note">Pool {e(p.name)} ({e(p.kind)}): ${e(format_usd(p.exact))}, rule '
                         f"{e(p.rule)}: {e(shares)}{e('; ' + p.note if p.note else '')}</p>")  # fmt: skip
        parts.append("</section></body></html>")
        return "\n".join(parts)


_NUMERIC = {"share", "requests", "unpriced", "exact_usd", "amount_usd"}


def chargeback_report(ledger: Ledger, config: Config, month: str, timezone: str = "UTC") -> ChargebackReport:
    """The statements of ``month`` (``2026-10``, a calendar month in ``timezone``)."""
    since, until = month_window(month, timezone)
    rules = rules_of(config.chargeback)
    report = ledger.spend_report(ReportQuery.build(dimensions(rules), since, until, timezone=timezone))
    items = [Item(dict(r.keys), r.cost_usd, r.requests, r.unpriced_requests) for r in report.rows]
    allocation = allocate(items, rules)
    return ChargebackReport(month.strip(), timezone, since, until, allocation, report.total_cost_usd)


def _statement_json(s: Statement) -> dict[str, Any]:
    return {"cost_centre": s.cost_centre, "total_usd": format(s.total, "f"),
            "exact_usd": format_usd(fraction_usd(s.exact)), "requests": s.requests, "unpriced_requests": s.unpriced,
            "lines": [_line_row(line) for line in s.lines]}  # fmt: skip


def _line_row(line: Line) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": line.kind, "label": line.label, "pool": line.pool, "rule": line.rule,
                           "share": None if line.share is None else _share(line.share), "requests": line.requests,
                           "unpriced_requests": line.unpriced, "exact_usd": format_usd(line.exact_usd),
                           "amount_usd": format(line.amount, "f")}  # fmt: skip
    if line.keys:
        row["keys"] = dict(line.keys)
    return row


def _exact_cell(line: Line) -> str:
    if line.share is None and line.requests and line.unpriced == line.requests:
        return "unpriced"  # no call of the line had a price: its 0 is not a cost
    return format_usd(line.exact_usd)


def _share(f: Fraction) -> str:
    return format(fraction_usd(f).quantize(Decimal("0.000001")), "f")


def _percent(f: Fraction) -> str:
    return format((fraction_usd(f) * 100).quantize(Decimal("0.01")), "f") + "%"
