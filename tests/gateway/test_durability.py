"""Nothing answered is lost, whatever happens to the disk, the spool folder or the writer process, and /readyz
tells the truth about each."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from faults import FaultyDisk
from harness import GatewayHarness, sql

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB file system, to fill up."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not let the tests mount a tmpfs ({done.stderr.strip()}); the same paths are "
                    "covered with injected faults in tests/ledger/test_spool_failures.py")  # fmt: skip
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path, leave: int = 0) -> None:
    """Write ``path`` until the file system has at most ``leave`` bytes free."""
    with open(path, "wb") as fh:
        try:
            while True:
                st = os.statvfs(path.parent)
                free = st.f_bavail * st.f_frsize
                if free <= leave:
                    break
                fh.write(b"\0" * min(65536, max(1, free - leave)))
                fh.flush()
        except OSError:
            pass


async def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_disk_full_refuses_calls_before_the_provider_and_keeps_what_it_answered(
    make_gateway: Any, fake_app: Any, small_disk: Path
) -> None:
    h: GatewayHarness = await make_gateway(f"gateway: {{writer: thread, writer_interval: 0.2, "
                                           f"spool_dir: {small_disk}/spool}}")  # fmt: skip
    assert (await h.client.post(CHAT, json=BODY, headers=h.auth())).status_code == 200
    filler = small_disk / "filler"

    # 1. The disk nearly full (under the spool's reserve): refused before any provider is called.
    fill(filler, leave=200_000)
    await asyncio.sleep(1.1)  # free space is looked at once a second
    seen = len(fake_app.state.received)
    r = await h.client.post(CHAT, json=BODY, headers=h.auth())
    assert r.status_code == 503 and r.json()["error"]["code"] == "spool_unavailable" and "retry-after" in r.headers
    assert len(fake_app.state.received) == seen, "the provider was called for a call that could not be recorded"
    assert (await h.client.get("/readyz")).status_code == 503

    # 2. Completely full, and the reserve gone: the provider answers, the record cannot be written. The client
    #    gets a 503 in the route's shape, never the answer; the record is kept and written when space returns.
    h.gateway.spool._reserve = 0  # type: ignore[union-attr]
    h.gateway.spool._space_checked = 0.0  # type: ignore[union-attr]
    fill(small_disk / "filler2", leave=0)
    answered = []
    for _ in range(50):  # the segment's last page may still hold a line or two
        seen = len(fake_app.state.received)
        r = await h.client.post(CHAT, json=BODY, headers=h.auth())
        if r.status_code != 200:
            break
        answered.append(r.headers["x-tokenops-request-id"])
    assert r.status_code == 503 and r.json()["error"]["code"] == "spool_unavailable"
    assert len(fake_app.state.received) == seen + 1
    failed_id = r.headers["x-tokenops-request-id"]
    ready = await h.client.get("/readyz")
    waiting = any("wait for the spool's disk" in p for p in ready.json()["problems"])
    # the record waits, and /readyz says so; unless a page freed up in between (the writer's own files on this
    # disk are rewritten as it drains) and the spool already wrote it: then it is durable, which is the point
    assert ready.status_code == 503 and (waiting or h.gateway.spool.deferred == 0)  # type: ignore[union-attr]

    filler.unlink()
    (small_disk / "filler2").unlink()
    await wait_for(lambda: h.gateway.spool.deferred == 0 and h.gateway.spool.healthy)  # type: ignore[union-attr]
    assert (await h.client.get("/readyz")).status_code == 200
    r = await h.client.post(CHAT, json=BODY, headers=h.auth())
    assert r.status_code == 200
    ev = h.event(failed_id)
    assert ev.status == "error" and ev.http_status == 503 and ev.error_code == "spool_unavailable"
    assert ev.cost_usd is not None and ev.cost_usd > 0, "what the provider billed is in the ledger"
    for rid in [*answered, r.headers["x-tokenops-request-id"]]:
        h.event(rid)
    assert not (small_disk / "spool" / "rejected.log").exists(), "no torn line was appended to"


async def test_a_stream_whose_record_fails_ends_with_an_error_not_its_final_event(make_gateway: Any) -> None:
    h = await make_gateway()
    disk = FaultyDisk()
    h.gateway.spool._ops = disk  # type: ignore[union-attr]
    disk.fail_writes = 1
    r = await h.client.post(CHAT, json={**BODY, "stream": True}, headers=h.auth())
    assert r.status_code == 200 and "[DONE]" not in r.text and "spool_unavailable" in r.text
    rid = r.headers["x-tokenops-request-id"]
    await wait_for(lambda: h.gateway.spool.deferred == 0)  # type: ignore[union-attr]
    ev = h.event(rid)
    assert ev.status == "error" and ev.error_code == "spool_unavailable" and ev.usage.output_tokens > 0


async def test_a_deleted_spool_folder_loses_no_answered_call_across_a_restart(make_gateway: Any) -> None:
    h = await make_gateway()
    ids = []
    for _ in range(3):
        ids.append((await h.client.post(CHAT, json=BODY, headers=h.auth())).headers["x-tokenops-request-id"])
    h.flush()
    for _ in range(2):
        ids.append((await h.client.post(CHAT, json=BODY, headers=h.auth())).headers["x-tokenops-request-id"])
    shutil.rmtree(h.gateway.spool_dir)  # an operator's cleanup script, while the gateway runs
    for _ in range(3):
        r = await h.client.post(CHAT, json=BODY, headers=h.auth())
        assert r.status_code == 200
        ids.append(r.headers["x-tokenops-request-id"])
    assert (await h.client.get("/readyz")).status_code == 200
    await h.gateway.close()
    restarted = await make_gateway()  # a new process on the same ledger and spool
    counts = dict(sql(restarted.ledger, "SELECT request_id, count(*) FROM events GROUP BY 1"))
    assert all(counts.get(rid) == 1 for rid in ids), {rid: counts.get(rid) for rid in ids}


async def test_readyz_says_when_the_spool_folder_cannot_be_made_again(make_gateway: Any) -> None:
    h = await make_gateway()
    shutil.rmtree(h.gateway.spool_dir)
    h.gateway.spool_dir.write_text("a file where the spool folder was")  # so it cannot be made again
    r = await h.client.get("/readyz")
    assert r.status_code == 503 and any("spool" in p for p in r.json()["problems"])
    r = await h.client.post(CHAT, json=BODY, headers=h.auth())
    assert r.status_code == 503 and r.json()["error"]["code"] == "spool_unavailable"
    h.gateway.spool_dir.unlink()
    await wait_for(lambda: h.gateway.spool.healthy)  # type: ignore[union-attr]
    assert (await h.client.get("/readyz")).status_code == 200


async def test_a_killed_writer_process_is_reported_and_restarted(make_gateway: Any,
                                                                caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    h = await make_gateway("gateway: {writer: process, writer_interval: 0.2}")
    writer = h.gateway.writer
    assert writer is not None and writer._child is not None
    first = writer._child.pid
    os.kill(first, signal.SIGKILL)
    await asyncio.to_thread(writer._child.wait, 5)
    with caplog.at_level(logging.ERROR, logger="tokenops.writer"):
        await wait_for(lambda: writer.restarts >= 1)  # the writer thread's supervisor noticed
    assert any("died" in r.getMessage() for r in caplog.records)
    await wait_for(lambda: writer._child is not None and writer._child.pid != first and writer._child.poll() is None)
    r = await h.client.post(CHAT, json=BODY, headers=h.auth())
    rid = r.headers["x-tokenops-request-id"]
    await wait_for(lambda: h.ledger.get_event(rid) is not None, timeout=30)  # drained by the new child, not by us
    await wait_for(lambda: not writer.problems())
    assert (await h.client.get("/readyz")).json()["writer"]["restarts"] == 1


async def supervised_by_hand(make_gateway: Any) -> tuple[Any, Any]:
    """A gateway with a writer process whose supervisor thread stands still: the test plays it by hand."""
    h = await make_gateway("gateway: {writer: process, writer_interval: 0.2}")
    writer = h.gateway.writer
    assert writer is not None
    writer._stop.set()
    await asyncio.to_thread(writer._thread.join)  # type: ignore[union-attr]
    writer._stop.clear()
    return h, writer


async def test_readyz_is_unavailable_while_the_writer_is_dead(make_gateway: Any) -> None:
    h, writer = await supervised_by_hand(make_gateway)
    os.kill(writer._child.pid, signal.SIGKILL)
    await asyncio.to_thread(writer._child.wait, 5)
    writer._supervise()  # notices the death, schedules a restart after a pause
    r = await h.client.get("/readyz")
    assert r.status_code == 503 and any("died" in p for p in r.json()["problems"])
    writer._next_start = 0.0
    writer._supervise()
    assert writer._child.poll() is None and not any("died" in p for p in writer.problems())


async def test_readyz_is_unavailable_when_drains_fail(make_gateway: Any) -> None:
    h = await make_gateway()
    writer = h.gateway.writer
    assert writer is not None
    writer.health.fail("ledger /x is not writable")
    r = await h.client.get("/readyz")
    assert r.status_code == 503 and any("last drain failed" in p for p in r.json()["problems"])
    writer.health.beat()
    assert (await h.client.get("/readyz")).status_code == 200


async def test_an_absurd_spooled_event_neither_stops_a_restart_nor_reports(make_gateway: Any, tmp_path: Path) -> None:
    """What an older gateway spooled (prompt_tokens 10^19) is quarantined; the gateway starts and reports work."""
    import json
    import sys

    from harness import write_config

    spool = write_config(tmp_path).spool_path()
    spool.mkdir()
    good = {"request_id": "req_good", "ts": "2026-11-01T00:00:00+00:00", "source": "gateway", "provider": "openai",
            "model_requested": "gpt-4o", "model_used": "gpt-4o", "usage": {"input_tokens": 10, "output_tokens": 2},
            "cost_usd": "0.000045", "status": "ok"}  # fmt: skip
    bad = {**good, "request_id": "req_bad", "usage": {"input_tokens": 10**19, "output_tokens": 2},
           "cost_usd": "25000000000000.00"}  # fmt: skip
    (spool / "0000000000001-1-abcdef01.jsonl").write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")
    h = await make_gateway()  # starting drains what the spool holds
    assert (await h.client.get("/readyz")).status_code == 200
    assert h.ledger.get_event("req_good") is not None and h.ledger.get_event("req_bad") is None
    done = subprocess.run([sys.executable, "-m", "tokenops", "report", "spend", "--config",
                           str(tmp_path / "tokenops.yaml"), "--format", "json"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "req_bad" in (spool / "rejected.log").read_text()


async def test_a_part_going_down_and_coming_back_sends_one_system_alert_each(make_gateway: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from tokenops.alerts import describe, subject
    from tokenops.errors import LedgerError

    h = await make_gateway("gateway: {writer: thread, writer_interval: 0.2, key_refresh: 0.1}")
    sent: list[Any] = []
    assert h.gateway.watch is not None
    monkeypatch.setattr(h.gateway.watch, "submit", sent.append)  # what the dispatcher delivers to the channels

    def unreachable(timeout: float = 0.5) -> None:
        raise LedgerError("could not connect to the ledger database")

    real_ping = h.gateway.ledger.ping
    monkeypatch.setattr(h.gateway.ledger, "ping", unreachable)
    await wait_for(lambda: any(a.details["status"] == "down" for a in sent), timeout=5)
    assert (await h.client.get("/readyz")).status_code == 503
    r = await h.client.post(CHAT, json=BODY, headers=h.auth())
    assert r.status_code == 200, "calls keep flowing while the ledger is down: the spool holds them"
    await asyncio.sleep(0.5)  # further ticks while it stays down send nothing more
    down = [a for a in sent if a.details["status"] == "down"]
    assert len(down) == 1 and down[0].kind == "system" and down[0].budget == "ledger"
    assert "could not connect" in down[0].message
    assert "TokenOps ledger" in describe(down[0]) and subject(down[0]) == "[TokenOps] ledger down"
    monkeypatch.setattr(h.gateway.ledger, "ping", real_ping)
    await wait_for(lambda: any(a.details["status"] == "recovered" for a in sent), timeout=5)
    assert (await h.client.get("/readyz")).status_code == 200


async def test_the_writer_process_needs_no_catalog_to_record_price_rows(make_gateway: Any) -> None:
    """The child drains with no price catalog of its own: a price only the gateway's config knows reaches the
    ledger's price_rows through the spool (once), and so does a catalog row an older spool did not carry."""
    from datetime import UTC, datetime

    import orjson

    from tokenops.ledger.events import SpendEvent, new_request_id
    from tokenops.usage import Usage

    h = await make_gateway("""
gateway: {writer: process, writer_interval: 0.2}
models:
  - {name: llama, provider: local, model: llama-3.1-8b}
prices:
  - {provider: local, model: llama-3.1-8b, input_per_mtok: "0.05", output_per_mtok: "0.08", effective_from: 2025-01-01}
""")
    body = {"model": "llama", "messages": [{"role": "user", "content": "x"}], "fake": {"usage": {"input": 10, "output": 2}}}
    rids = [(await h.client.post(CHAT, json=body, headers=h.auth())).headers["x-tokenops-request-id"] for _ in range(3)]
    spooled = b"".join(p.read_bytes() for p in h.gateway.spool_dir.glob("*.jsonl"))
    assert spooled.count(b'"record":"price_row"') == 1, "written once, before the first event priced with it"
    await wait_for(lambda: all(h.ledger.get_event(rid) is not None for rid in rids), timeout=30)
    event = h.ledger.get_event(rids[0])
    assert event is not None and event.price_row_id
    rows = sql(h.ledger, f"SELECT provider, model, source, prices FROM price_rows WHERE id = '{event.price_row_id}'")
    assert len(rows) == 1 and rows[0][:2] == ("local", "llama-3.1-8b")
    assert orjson.loads(rows[0][3])["input_per_mtok"] == "0.05"

    # a segment left by a gateway of an older version: events only, their price rows in the public catalog
    row = h.gateway.catalog.lookup(("openai",), "gpt-4o-mini", datetime.now(UTC))
    assert row is not None
    old = SpendEvent(request_id=new_request_id(), ts=datetime.now(UTC), source="gateway", provider="openai",
                     model_requested="gpt-4o-mini", model_used="gpt-4o-mini", usage=Usage(input_tokens=5),
                     cost_usd=Decimal("0.00000075"), price_row_id=row.id)  # fmt: skip
    (h.gateway.spool_dir / "0000000000001-1-deadbeef.jsonl").write_bytes(old.to_json() + b"\n")
    await wait_for(lambda: h.ledger.get_event(old.request_id) is not None, timeout=30)
    assert sql(h.ledger, f"SELECT count(*) FROM price_rows WHERE id = '{row.id}'") == [(1,)]


async def test_an_unexpected_error_in_one_tick_does_not_stop_the_next(make_gateway: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The tick reloads keys: if one bug ended it for good, a key revoked afterwards would work until a restart."""
    h = await make_gateway("gateway: {writer: thread, writer_interval: 0.2, key_refresh: 0.1}")
    real, failed = h.gateway.keys.reload, []

    def broken_once() -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("a bug in one tick")
        real()

    monkeypatch.setattr(h.gateway.keys, "reload", broken_once)
    await wait_for(lambda: bool(failed), timeout=5)
    assert h.ledger.revoke_key(h.key_record.id)
    deadline = asyncio.get_running_loop().time() + 5
    while (r := await h.client.post(CHAT, json=BODY, headers=h.auth())).status_code == 200:
        assert asyncio.get_running_loop().time() < deadline, "the revocation was never seen: the ticks stopped"
        await asyncio.sleep(0.1)
    assert r.status_code == 401
    assert not h.gateway.tick_errors  # working again: no warning left


async def test_a_tick_step_that_keeps_failing_is_a_readyz_warning_and_does_not_stop_the_others(
        make_gateway: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    h = await make_gateway("gateway: {writer: thread, writer_interval: 0.2, key_refresh: 0.05}")
    calls: list[int] = []

    async def broken() -> None:
        calls.append(1)
        raise RuntimeError("policy reload bug")

    monkeypatch.setattr(h.gateway, "reload_policy", broken)
    with caplog.at_level(logging.WARNING, logger="tokenops.gateway"):
        await wait_for(lambda: len(calls) >= 4, timeout=5)
        body = (await h.client.get("/readyz")).json()
        assert "gateway tick (policy) failing: RuntimeError: policy reload bug" in body["warnings"]
        assert h.ledger.revoke_key(h.key_record.id)  # the keys step still runs beside the failing one
        deadline = asyncio.get_running_loop().time() + 5
        while (await h.client.post(CHAT, json=BODY, headers=h.auth())).status_code != 401:
            assert asyncio.get_running_loop().time() < deadline, "the revocation was never seen"
            await asyncio.sleep(0.05)
    tracebacks = [r for r in caplog.records if r.exc_info and "policy" in r.getMessage()]
    assert len(tracebacks) == 1, "one traceback for an error that repeats, not one a tick"


async def test_the_writer_outlives_an_unexpected_error_in_one_drain(make_gateway: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    h = await make_gateway("gateway: {writer: thread, writer_interval: 0.1}")
    real, failed = h.ledger.drain, []

    def broken_once(*args: Any, **kwargs: Any) -> int:
        if not failed:
            failed.append(True)
            raise ValueError("a bug in one drain")
        return real(*args, **kwargs)

    monkeypatch.setattr(h.ledger, "drain", broken_once)
    r = await h.client.post(CHAT, json=BODY, headers=h.auth())
    assert r.status_code == 200
    await wait_for(lambda: bool(failed), timeout=5)
    rid = r.headers["x-tokenops-request-id"]
    await wait_for(lambda: h.ledger.get_event(rid) is not None, timeout=5)  # a later round drained it


async def test_a_writer_stopped_with_the_gateway_is_not_restarted_but_one_stopped_alone_is(make_gateway: Any) -> None:
    # SIGTERM to the whole process group (systemd, a timeout): the child exits cleanly and the gateway stops a
    # moment later; no "died", no new child. SIGTERM to the child alone: restarted after a short grace.
    _, writer = await supervised_by_hand(make_gateway)
    first = writer._child
    first.terminate()  # type: ignore[union-attr]
    assert await asyncio.to_thread(first.wait, 5) == 0  # type: ignore[union-attr]
    writer._supervise()
    assert writer._child is first and writer.child_exit is None and writer.problems() == []  # not yet "died"
    writer._clean_exit_at -= 10  # the grace is over and the gateway did not stop: it was the child alone
    writer._supervise()
    assert writer.child_exit == 0 and writer.restarts == 1
    writer._next_start = 0.0
    writer._supervise()
    assert writer._child is not first and writer._child.poll() is None  # type: ignore[union-attr]
