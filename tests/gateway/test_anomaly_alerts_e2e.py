"""The anomaly watch inside a running gateway: a runaway loop in the ledger's last bucket reaches a real webhook
receiver as one signed ``anomaly`` alert, is recorded in the ledger, and is listed by the admin API (on the
default stack and again on PostgreSQL + Redis)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from anomaly_samples import NOW, traffic
from harness import write_config
from tokenops.alerts import verify_signature
from tokenops.app import create_app
from tokenops.fakeprovider import create_fake_provider
from tokenops.servers import BackgroundServer

SECRET = "whsec-anomaly"
ADMIN = "admin-secret-key-0123"


def test_a_spike_reaches_the_webhook_once_and_the_ledger(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: Request) -> Response:
        body = await request.body()
        assert verify_signature(SECRET, request.headers["x-tokenops-timestamp"], body,
                                request.headers["x-tokenops-signature"])  # fmt: skip
        received.append(orjson.loads(body))
        return Response(status_code=204)

    receiver = BackgroundServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])])).start()
    fake = BackgroundServer(create_fake_provider(api_key="sk-fake")).start()
    config = write_config(tmp_path, f"""
admin_key: {ADMIN}
anomalies: {{scopes: [[team], [feature]], min_change_usd: "0.05", history: 172800}}
alerts:
  channels:
    - {{type: webhook, name: ops, url: "{receiver.url}/hook", secret: {SECRET}}}
""", upstream=fake.url)  # fmt: skip
    gateway = create_app(config, clock=lambda: NOW)
    gateway.ledger.append(traffic())
    server = BackgroundServer(gateway).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(a["kind"] == "anomaly" for a in received):
            time.sleep(0.2)
        anomalies = [a for a in received if a["kind"] == "anomaly"]
        assert anomalies, received
        spend = [a for a in anomalies if a["details"]["signal"] == "cost"]
        assert spend and spend[0]["scope"] in ({"team": "search"}, {"feature": "search-bot"})
        assert spend[0]["details"]["severity"] in ("high", "critical") and "expected" in spend[0]["message"]
        assert len({a["budget"] for a in anomalies}) == len(anomalies)  # once per incident
        time.sleep(1.0)
        gateway.drain_now()
        listed = httpx.get(server.url + "/v1/admin/reports/anomalies",
                           params={"since": "2026-11-20T00:00:00Z", "until": "2026-11-21T00:00:00Z"},
                           headers={"authorization": f"Bearer {ADMIN}"}).json()  # fmt: skip
        assert {a["id"] for a in anomalies} <= {a["id"] for a in listed["anomalies"]}
        metrics = httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
        assert 'tokenops_anomalies_total{severity="' in metrics and 'signal="cost"' in metrics
    finally:
        server.stop()
        fake.stop()
        receiver.stop()
