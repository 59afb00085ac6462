"""`tokenops prices update`'s engine: download genai-prices' data file, check it with the catalog's own loader,
keep the old file as history and swap the new one in atomically; the catalog then prefers it. Served by a local
HTTP server: a valid file, invalid ones, a connection cut half-way, a refused connection, a failed DNS lookup."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tokenops.pricing import datafile
from tokenops.pricing.catalog import load_catalog
from tokenops.pricing.datafile import (
    DATA_FILE_NAME,
    DEFAULT_UPDATE_URL,
    PriceUpdateError,
    current_data,
    installed_data_file,
    update_data,
)
from tokenops.pricing.genai import PriceDataError, bundled_data, data_source

SAMPLE = (Path(__file__).parent / "data" / "genai-sample.json").read_bytes()
AT = datetime(2025, 10, 15, tzinfo=UTC)


def variant(price: str) -> bytes:
    """The sample with another price for tokenops-test-model."""
    data = json.loads(SAMPLE)
    data[1]["models"][2]["prices"]["input_mtok"] = price
    return json.dumps(data).encode()


FILES = {
    "/valid.json": SAMPLE,
    "/other.json": variant("0.5"),
    "/invalid.json": b'[{"id": "openai", "models": [',
    "/empty.json": b"[]",
    "/object.json": b'{"providers": []}',
    "/wrong-shape.json": b'[{"id": "openai", "name": "OpenAI"}]',
    "/no-models.json": b'[{"id": "openai", "name": "OpenAI", "api_pattern": "x", "models": []}]',
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/cut.json":  # promises the whole file, sends half of it, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(SAMPLE)))
            self.end_headers()
            self.wfile.write(SAMPLE[: len(SAMPLE) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        body = FILES.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "prices"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def installed(data_dir: Path) -> bytes:
    return (data_dir / DATA_FILE_NAME).read_bytes()


def leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir() if p.name.endswith(".part"))


def test_a_valid_file_is_installed_and_the_catalog_prefers_it(server: str, data_dir: Path) -> None:
    result = update_data(f"{server}/valid.json", data_dir)
    assert result.changed and result.previous is None and result.path == data_dir / DATA_FILE_NAME
    assert (result.providers, result.models, result.size) == (2, 4, len(SAMPLE))
    assert installed(data_dir) == SAMPLE and leftovers(data_dir) == []
    data = current_data(data_dir)
    assert data is not bundled_data() and data.source == data_source(SAMPLE)
    catalog = load_catalog(data_dir=data_dir)
    row = catalog.lookup(["openai"], "tokenops-test-model", AT)  # only the new file has it
    assert row is not None and row.input_per_mtok == Decimal("0.123456789")  # read as a decimal, never a float
    assert row.source.startswith(f"{data_source(SAMPLE)}, file_search_per_k per https://")  # + the shipped tool fee
    assert row.source.startswith("genai-prices data ") and row.file_search_per_k == Decimal("2.50")
    # the shipped corrections apply to the new file too; one it already has right changes nothing
    sonnet = catalog.lookup(["anthropic"], "claude-sonnet-4-20250514", AT)
    assert sonnet is not None and [t.above_input_tokens for t in sonnet.tiers] == [200_000]
    o3 = catalog.lookup(["openai"], "o3", datetime(2025, 5, 1, tzinfo=UTC))
    assert o3 is not None and o3.cache_read_per_mtok == Decimal("2.5")
    assert o3.source == f"{data_source(SAMPLE)}, file_search_per_k per https://platform.openai.com/docs/pricing#built-in-tools"
    assert load_catalog(data_dir=data_dir / "none").lookup(["openai"], "tokenops-test-model", AT) is None


def test_the_previous_file_is_kept_as_history(server: str, data_dir: Path) -> None:
    update_data(f"{server}/valid.json", data_dir)
    same = update_data(f"{server}/valid.json", data_dir)
    assert not same.changed and same.previous is None and not (data_dir / "history").exists()
    at = datetime(2026, 12, 2, 10, 30, 5, 123456, tzinfo=UTC)
    result = update_data(f"{server}/other.json", data_dir, now=at)
    assert result.changed and result.previous == data_dir / "history" / "genai-prices-20261202T103005123456Z.json"
    assert result.previous.read_bytes() == SAMPLE and installed(data_dir) == FILES["/other.json"]
    row = load_catalog(data_dir=data_dir).lookup(["openai"], "tokenops-test-model", AT)
    assert row is not None and row.input_per_mtok == Decimal("0.5")


def test_history_keeps_the_newest_copies(server: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datafile, "HISTORY_KEPT", 2)
    for i, name in enumerate(["valid", "other", "valid", "other", "valid"]):
        update_data(f"{server}/{name}.json", data_dir, now=datetime(2026, 1, 1 + i, tzinfo=UTC))
    kept = sorted(p.name for p in (data_dir / "history").iterdir())
    assert kept == ["genai-prices-20260104T000000000000Z.json", "genai-prices-20260105T000000000000Z.json"]


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/invalid.json", "not JSON"),
        ("/empty.json", "holds no models"),
        ("/no-models.json", "holds no models"),
        ("/object.json", "expected a JSON list of providers"),
        ("/wrong-shape.json", "not in the genai-prices format"),
        ("/missing.json", "answered HTTP 404"),
        ("/cut.json", "failed part-way"),
    ],
)
def test_a_bad_download_leaves_the_catalog_as_it_was(server: str, data_dir: Path, path: str, fragment: str) -> None:
    update_data(f"{server}/valid.json", data_dir)
    with pytest.raises(PriceUpdateError) as err:
        update_data(f"{server}{path}", data_dir)
    assert fragment in str(err.value) and str(err.value).endswith("the price catalog was not changed")
    assert installed(data_dir) == SAMPLE and leftovers(data_dir) == [] and not (data_dir / "history").exists()


def test_a_bad_download_with_nothing_installed_leaves_the_bundled_catalog(server: str, data_dir: Path) -> None:
    with pytest.raises(PriceUpdateError):
        update_data(f"{server}/cut.json", data_dir)
    assert installed_data_file(data_dir) is None and current_data(data_dir) is bundled_data()


def test_offline_connection_refused(data_dir: Path) -> None:
    with pytest.raises(PriceUpdateError, match=r"cannot reach 127\.0\.0\.1 .*are you offline\?"):
        update_data(f"http://127.0.0.1:{free_port()}/data.json", data_dir, timeout=5)
    assert installed_data_file(data_dir) is None


def test_offline_dns_failure(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(PriceUpdateError, match=r"cannot reach raw\.githubusercontent\.com \(.*Name or service"):
        update_data(DEFAULT_UPDATE_URL, data_dir, timeout=5)
    assert installed_data_file(data_dir) is None


def test_only_http_urls(data_dir: Path) -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/x.json", "not a url"):
        with pytest.raises(PriceUpdateError, match="http"):
            update_data(url, data_dir)


def test_the_default_place_is_the_home_folder(server: str, tmp_path: Path) -> None:
    """With no data_dir: ~/.tokenops/prices (the pricing tests' HOME is a folder of their own)."""
    assert load_catalog().lookup(["openai"], "tokenops-test-model", AT) is None
    result = update_data(f"{server}/valid.json")
    assert result.path == Path.home() / ".tokenops" / "prices" / DATA_FILE_NAME
    assert load_catalog().lookup(["openai"], "tokenops-test-model", AT) is not None


def test_a_damaged_installed_file_is_an_error_naming_it(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / DATA_FILE_NAME).write_text("[{")
    with pytest.raises(PriceDataError, match=rf"{DATA_FILE_NAME}: not JSON.*tokenops prices update"):
        load_catalog(data_dir=data_dir)


def test_the_default_url_is_genai_prices_own() -> None:
    from genai_prices.update_prices import DEFAULT_UPDATE_URL as GENAI_DEFAULT

    from tokenops.config import Config

    assert DEFAULT_UPDATE_URL == GENAI_DEFAULT
    assert Config().pricing.update_url == DEFAULT_UPDATE_URL
