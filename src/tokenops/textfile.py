"""Input files a user names (CSV and JSON Lines for imports and evaluations), read whole as UTF-8 text.

Every problem is a :class:`~tokenops.errors.UsageError` that names the file, and the line where there is one:

>>> import tempfile, os
>>> with tempfile.NamedTemporaryFile("wb", suffix=".csv", delete=False) as f:
...     _ = f.write(b"a,b\\n1,\\xff\\n")
>>> try:
...     read_text(f.name)
... except UsageError as exc:
...     str(exc).endswith(".csv:2: not UTF-8 text (byte 6)")
True
>>> os.unlink(f.name)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tokenops.errors import UsageError

__all__ = ["read_text"]


def read_text(path: str | os.PathLike[str], *, what: str = "text file") -> str:
    """The file's text (a leading byte-order mark dropped). ``what`` names the kind of file expected, for the
    message when ``path`` is a directory."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{name}: is a directory, not a {what}") from None
    except OSError as exc:
        raise UsageError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = bom + exc.start
        before = data[bom:at].decode("utf-8")  # valid up to the bad byte
        line = _line_of(before, len(before))
        raise UsageError(f"{name}:{line}: not UTF-8 text (byte {at})") from None
    if "\x00" in text:  # the csv module and str.splitlines take NUL as text: it means a binary or damaged file
        raise UsageError(f"{name}:{_line_of(text, text.index(chr(0)))}: a NUL byte (not a text file)")
    return text


_BREAK = re.compile(r"\r\n|\r|\n")  # the line ends the csv module counts (so FILE:LINE agrees with its errors)


def _line_of(text: str, at: int) -> int:
    """The line number of ``text[at]``."""
    return len(_BREAK.findall(text, 0, at)) + 1
