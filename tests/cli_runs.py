"""The CLI run in-process, as the command-line tests call it: a run that must succeed, one that must stop with a
usage error, and a file to feed it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tokenops.cli import app
from tokenops.errors import UsageError

runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str) -> str:
    """The UsageError a command stops with (the CLI prints it as ``error: …`` and exits 2)."""
    result = runner.invoke(app, list(args))
    assert isinstance(result.exception, UsageError), (result.exception, result.output)
    return str(result.exception)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path
