"""A time series read from a ``timestamp,value`` CSV file (``tokenops anomalies score``, ``tokenops forecast
series``), with every problem reported as ``FILE:LINE: what is wrong``.

Timestamps are ISO 8601 (``2026-11-01``, ``2026-11-01 13:00:00``, ``2026-11-01T13:00:00.5+01:00``, a trailing
``Z``); more than six fractional digits are cut to six. Rows must be in time order: a timestamp equal to or
before the previous one is an error naming both lines. Timestamps with an offset are ordered by the instant
they name, so a day that changes its UTC offset (daylight saving time) reads correctly; naive and offset
timestamps cannot be mixed. (``tokenops anomalies score`` reads in file order instead, see :func:`read_series`.) Extra columns are
ignored; blank lines are skipped; an empty value, ``nan`` or
``inf`` is an error (a gap is a missing row, not a missing value).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tokenops.errors import UsageError
from tokenops.textfile import read_text

_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True)
class Series:
    path: str
    timestamps: list[datetime]  # as read: naive, or aware with the offset it was written with
    values: list[float]
    texts: list[str]  # each timestamp exactly as written, for output files that repeat it
    lines: list[int]  # the file line of each row

    def __len__(self) -> int:
        return len(self.values)

    def step(self) -> timedelta | None:
        """The most common gap between consecutive rows (None for a single row)."""
        if len(self.timestamps) < 2:
            return None
        gaps = Counter(b - a for a, b in zip(self.timestamps, self.timestamps[1:], strict=False))
        return gaps.most_common(1)[0][0]


def parse_timestamp(text: str) -> datetime:
    """One ISO 8601 timestamp (ValueError if it is not one)."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    t = _FRACTION.sub(r"\1", t)
    return datetime.fromisoformat(t)


def _instant(dt: datetime) -> datetime:
    return dt.astimezone(UTC) if dt.tzinfo is not None else dt


def read_series(path: str | Path, *, strict_order: bool = True) -> Series:
    """Read ``timestamp,value`` rows (header required, column names case-insensitive). ``strict_order=False``
    keeps rows whose timestamp repeats or steps back (an hour repeated when clocks go back, a clock reset) in
    file order: a row-by-row detector can score them; a forecast, which needs a regular grid, cannot."""
    name = str(path)
    text = read_text(path, what="CSV file")
    stamps: list[datetime] = []
    values: list[float] = []
    texts: list[str] = []
    lines: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header: list[str] | None = None
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                if "timestamp" not in header or "value" not in header:
                    raise UsageError(f"{name}:{line}: the header must name the columns timestamp and value "
                                     f"(found {','.join(row)[:80]!r})")  # fmt: skip
                ti, vi = header.index("timestamp"), header.index("value")
                continue
            if len(row) <= max(ti, vi):
                raise UsageError(f"{name}:{line}: expected a timestamp and a value, found {','.join(row)[:80]!r}")
            ttext, vtext = row[ti].strip(), row[vi].strip()
            try:
                ts = parse_timestamp(ttext)
            except ValueError:
                raise UsageError(f"{name}:{line}: {ttext[:40]!r} is not a timestamp "
                                 "(ISO 8601, e.g. 2026-11-01 13:00:00)") from None  # fmt: skip
            try:
                value = float(vtext)
            except ValueError:
                raise UsageError(f"{name}:{line}: value {vtext[:40]!r} is not a number") from None
            if not math.isfinite(value):
                raise UsageError(f"{name}:{line}: value {vtext!r} is not a finite number")
            if stamps:
                prev = stamps[-1]
                if (prev.tzinfo is None) != (ts.tzinfo is None):
                    raise UsageError(f"{name}:{line}: timestamp {ttext!r} mixes timestamps with and without "
                                     "a UTC offset")  # fmt: skip
                if strict_order and _instant(ts) == _instant(prev):
                    raise UsageError(f"{name}:{line}: timestamp {ttext!r} repeats line {lines[-1]}")
                if strict_order and _instant(ts) < _instant(prev):
                    raise UsageError(f"{name}:{line}: timestamp {ttext!r} is before line {lines[-1]}'s "
                                     f"{texts[-1]!r} (rows must be in time order)")  # fmt: skip
            stamps.append(ts)
            values.append(value)
            texts.append(ttext)
            lines.append(line)
    except csv.Error as exc:
        raise UsageError(f"{name}:{reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise UsageError(f"{name}: empty file (expected a header timestamp,value and rows)")
    if not values:
        raise UsageError(f"{name}: no data rows after the header")
    return Series(name, stamps, values, texts, lines)
