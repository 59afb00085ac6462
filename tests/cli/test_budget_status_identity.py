"""`tokenops budgets status` sends the admin key only to a gateway that proves it serves the same ledger, never
shows what anything else on that port says, and never hides a budget of its own config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from harness import PROVIDER_KEY, write_config
from tokenops.app import create_app
from tokenops.fakeprovider import create_fake_provider
from tokenops.servers import BackgroundServer

ADMIN = "admin-secret-key-for-status"


class Impostor:
    """Whatever else may listen on the gateway's port: it answers like a gateway and keeps what it was sent."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        if scope["path"] == "/readyz":
            body = {"status": "ready", "problems": [], "identity": "0" * 64}
        else:
            body = {"budgets": [{"name": "impostor-budget", "spent": "999.00", "thresholds": []}]}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": orjson.dumps(body)})


def status(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokenops", "budgets", "status", "--config", str(config),
                           "--format", "json"], capture_output=True, text=True, timeout=60)  # fmt: skip


def test_the_admin_key_goes_only_to_a_gateway_of_the_same_ledger(tmp_path: Path) -> None:
    impostor = Impostor()
    with BackgroundServer(impostor) as server:
        write_config(tmp_path, f"""
admin_key: {ADMIN}
gateway: {{port: {server.port}, writer: thread}}
budgets:
  - {{name: from-config, amount_usd: "10", period: month}}
""")  # fmt: skip
        done = status(tmp_path / "tokenops.yaml")
    assert done.returncode == 0, done.stderr
    names = [b["name"] for b in orjson.loads(done.stdout)["budgets"]]
    assert names == ["from-config"], "the impostor's answer was shown"
    assert "does not prove" in done.stderr
    assert impostor.headers, "the CLI did ask"
    assert all(ADMIN not in " ".join(h.values()) for h in impostor.headers), "the admin key was sent to an impostor"


def test_live_figures_from_the_real_gateway_and_every_budget_of_the_config(tmp_path: Path) -> None:
    with BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)) as fake:
        gw_dir = tmp_path / "gw"
        gw_dir.mkdir()
        cfg = write_config(gw_dir, f"""
admin_key: {ADMIN}
budgets:
  - {{name: on-the-gateway, amount_usd: "10", period: month}}
""", upstream=fake.url)  # fmt: skip
        # the same ledger from another folder: a DuckDB file by its absolute path, a server by its URL
        ledger = f"duckdb:///{cfg.ledger_path()}" if cfg.ledger.startswith("duckdb:") else cfg.ledger
        with BackgroundServer(create_app(cfg)) as server:
            # the CLI's config: the same ledger, one more budget the gateway does not know
            (tmp_path / "cli.yaml").write_text(f"""
ledger: {ledger}
admin_key: {ADMIN}
gateway: {{port: {server.port}}}
budgets:
  - {{name: on-the-gateway, amount_usd: "99", period: month}}
  - {{name: only-in-this-config, amount_usd: "5", period: week}}
""")
            done = status(tmp_path / "cli.yaml")
    assert done.returncode == 0, done.stderr
    budgets = {b["name"]: b for b in orjson.loads(done.stdout)["budgets"]}
    assert set(budgets) == {"on-the-gateway", "only-in-this-config"}
    assert budgets["on-the-gateway"]["amount"] == "10", "the gateway's live answer was used"
    assert budgets["only-in-this-config"]["amount"] == "5"
    assert "does not prove" not in done.stderr
