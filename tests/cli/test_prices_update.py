"""`tokenops prices update` as people run it (a subprocess, its exit status and message), against a local HTTP
server: a valid file is installed and then used by every price command, the previous one is kept as history; an
invalid file, a connection cut half-way and an unreachable server leave the catalog untouched and exit 2."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

SAMPLE = (Path(__file__).resolve().parents[1] / "pricing" / "data" / "genai-sample.json").read_bytes()
NEWER = SAMPLE.replace(b'"input_mtok": 0.123456789', b'"input_mtok": 0.25')


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = {"/data.json": SAMPLE, "/newer.json": NEWER, "/invalid.json": b'[{"id": "openai", "models": ['}.get(self.path)
        if self.path == "/cut.json":
            self.send_response(200)
            self.send_header("Content-Length", str(len(SAMPLE)))
            self.end_headers()
            self.wfile.write(SAMPLE[:200])
            self.close_connection = True
            return
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def tokenops(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TOKENOPS_CONFIG"} | {"HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tokenops", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd or home)  # fmt: skip


def installed(home: Path) -> Path:
    return home / ".tokenops" / "prices" / "genai-prices.json"


def test_update_installs_the_file_and_every_price_command_uses_it(server: str, home: Path) -> None:
    r = tokenops(home, "prices", "calc", "tokenops-test-model", "--input", "1000000", "--output", "0")
    assert r.returncode == 2 and "no price known" in r.stderr  # not in the bundled snapshot
    r = tokenops(home, "prices", "update", "--url", f"{server}/data.json")
    assert r.returncode == 0, r.stderr
    assert f"installed {installed(home)}: 2 providers, 4 models" in r.stdout
    assert installed(home).read_bytes() == SAMPLE
    r = tokenops(home, "prices", "calc", "tokenops-test-model", "--input", "1000000", "--output", "0", "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["cost_usd"] == "0.123456789" and out["rows"][0]["source"].startswith("genai-prices data ")
    shown = json.loads(tokenops(home, "prices", "show", "tokenops-test-model", "--format", "json").stdout)
    assert shown["rows"][0]["input_per_mtok"] == "0.123456789"

    r = tokenops(home, "prices", "update", "--url", f"{server}/data.json")
    assert r.returncode == 0 and r.stdout.startswith("already up to date")
    r = tokenops(home, "prices", "update", "--url", f"{server}/newer.json", "--format", "json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["changed"] is True and result["models"] == 4
    kept = Path(result["previous"])
    assert kept.parent == installed(home).parent / "history" and kept.name.startswith("genai-prices-")
    assert kept.read_bytes() == SAMPLE and installed(home).read_bytes() == NEWER


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/invalid.json", "not JSON"),
        ("/cut.json", "failed part-way"),
        ("/nowhere.json", "HTTP 404"),
    ],
)
def test_a_bad_download_exits_2_and_leaves_the_catalog_untouched(server: str, home: Path, path: str,
                                                                 fragment: str) -> None:  # fmt: skip
    assert tokenops(home, "prices", "update", "--url", f"{server}/data.json").returncode == 0
    r = tokenops(home, "prices", "update", "--url", f"{server}{path}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert fragment in r.stderr and "the price catalog was not changed" in r.stderr
    assert installed(home).read_bytes() == SAMPLE
    assert [p.name for p in installed(home).parent.iterdir()] == ["genai-prices.json"]


def test_offline_is_a_clear_message(home: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = tokenops(home, "prices", "update", "--url", f"http://127.0.0.1:{port}/data.json")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: cannot reach 127.0.0.1") and "are you offline?" in r.stderr
    assert not installed(home).exists()


def test_the_url_comes_from_the_config(server: str, home: Path) -> None:
    (home / "tokenops.yaml").write_text(f"pricing:\n  update_url: {server}/data.json\n")
    r = tokenops(home, "prices", "update")
    assert r.returncode == 0, r.stderr
    assert f"from {server}/data.json" in r.stdout and installed(home).is_file()
    (home / "tokenops.yaml").write_text("pricing:\n  update_url: ftp://example.com/data.json\n")
    r = tokenops(home, "prices", "update")
    assert r.returncode == 2 and "tokenops.yaml:2: pricing.update_url" in r.stderr
