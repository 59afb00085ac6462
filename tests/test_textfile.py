"""The one reader of the files users name (metrics, series, pairs, prompts, router rows): each problem a
UsageError naming the file, and the line where there is one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenops.errors import UsageError
from tokenops.textfile import read_text


def said(path: Path | str, **kw: str) -> str:
    with pytest.raises(UsageError) as exc:
        read_text(path, **kw)
    return str(exc.value)


def test_text_with_a_bom_and_any_line_ends(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_bytes(b"\xef\xbb\xbfts,value\r\n1,\xc3\xa9\n")
    assert read_text(f) == "ts,value\r\n1,é\n"


@pytest.mark.parametrize(("data", "says"), [
    (b"a,b\n1,2\n3,\xff\n", ":3: not UTF-8 text (byte 10)"),
    (b"\xef\xbb\xbfa\n\xe9t\xe9\n", ":2: not UTF-8 text (byte 5)"),  # counted in the file's bytes, BOM included
    (b"a,b\n1,2\x00\n", ":2: a NUL byte (not a text file)"),
    (b"a,b\r1,2\r3,\xff\r", ":3: not UTF-8 text (byte 10)"),  # old Mac line ends
    ("é\nü\n".encode() + b"\n\xff", ":4: not UTF-8 text (byte 7)"),  # lines counted past multi-byte text
    (b"a,b\r\n1,2\r\n\x00", ":3: a NUL byte (not a text file)"),
])  # fmt: skip
def test_bad_bytes_name_the_line(tmp_path: Path, data: bytes, says: str) -> None:
    f = tmp_path / "in.csv"
    f.write_bytes(data)
    assert said(f) == f"{f}{says}"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert said(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: no such file"
    assert said(tmp_path, what="JSONL file") == f"{tmp_path}: is a directory, not a JSONL file"
