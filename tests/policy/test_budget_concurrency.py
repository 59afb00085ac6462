"""No overshoot under concurrency: hundreds of calls at once against a hard budget end with spend <= B + one
call's maximum cost, every run."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from harness import GatewayHarness, sql_value
from tokenops.policy.estimate import max_cost

BUDGET = Decimal("0.05")


@pytest.mark.parametrize("run", range(3))
async def test_hard_budget_holds_under_hundreds_of_concurrent_calls(make_gateway, run: int) -> None:  # noqa: ANN001
    h: GatewayHarness = await make_gateway(f"""
budgets:
  - {{name: search-hard, scope: {{team: search}}, amount_usd: "{BUDGET}", period: month, hard: true}}
""", key_tags={"team": "search"})  # fmt: skip

    async def one(i: int) -> tuple[int, str | None]:
        stream = i % 4 == 0
        body = {"model": "gpt-4o", "max_tokens": 40, "stream": stream,
                "messages": [{"role": "user", "content": f"call number {i} " + "x" * (i % 50)}]}  # fmt: skip
        r = await h.client.post("/v1/chat/completions", json=body, headers=h.auth())
        code = r.json()["error"]["code"] if r.status_code != 200 else None
        return r.status_code, code

    # waves of 150 concurrent calls until a whole wave is refused: the budget is then used up
    results: list[tuple[int, str | None]] = []
    for wave in range(20):
        batch = await asyncio.gather(*(one(wave * 150 + i) for i in range(150)))
        results += batch
        if all(s == 429 for s, _ in batch):
            break
    ok = sum(1 for s, _ in results if s == 200)
    blocked = [c for s, c in results if s == 429]
    assert ok > 0 and blocked and set(blocked) == {"budget_exceeded"}
    assert ok + len(blocked) == len(results)
    h.flush()
    spent = sql_value(h.ledger, "SELECT sum(cost_usd) FROM events WHERE team = 'search' AND status = 'ok'")
    row = h.gateway.catalog.lookup(("openai",), "gpt-4o", h.gateway.clock())
    # the largest single call: the longest body of the run, 40 output tokens
    one_call_max = max_cost(row, 400, 40)
    assert spent <= BUDGET + one_call_max, f"overshoot {spent - BUDGET} > one call's max {one_call_max}"
    assert spent >= BUDGET, "a hard budget refuses calls only once it is used up"
    counter = await h.gateway.engine.counter("search-hard")
    assert counter.reserved == 0 and counter.spent == spent  # every reservation settled, no count lost
    overshoot = max(Decimal(0), spent - BUDGET)
    print(f"\nrun {run}: {ok} admitted, {len(blocked)} blocked, spent {spent} of {BUDGET}, "
          f"overshoot {overshoot} / bound {one_call_max}")


async def test_hard_budget_holds_through_real_sockets(tmp_path) -> None:  # noqa: ANN001
    """The same bound with real concurrency: uvicorn on loopback, calls racing over separate connections."""
    import httpx

    from harness import PROVIDER_KEY, create_key, write_config
    from tokenops.app import create_app
    from tokenops.fakeprovider import create_fake_provider
    from tokenops.servers import BackgroundServer

    fake = BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)).start()
    cfg = write_config(tmp_path, f"""
budgets:
  - {{name: sock-hard, scope: {{team: s}}, amount_usd: "{BUDGET}", period: month, hard: true}}
""", upstream=fake.url)  # fmt: skip
    gw = create_app(cfg)
    _, key = create_key(gw.ledger, tags={"team": "s"})
    server = BackgroundServer(gw).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     # under uvicorn's 5 s keep-alive, so no pooled connection is reused as
                                     # the server closes it (a client-side race, not the gateway's)
                                     limits=httpx.Limits(max_connections=200, keepalive_expiry=2)) as client:  # fmt: skip

            async def one(i: int) -> int:
                body = {"model": "gpt-4o", "max_tokens": 40, "stream": i % 3 == 0,
                        "messages": [{"role": "user", "content": f"socket call {i} " + "y" * (i % 40)}]}  # fmt: skip
                r = await client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
                return r.status_code

            statuses: list[int] = []
            for wave in range(30):
                batch = await asyncio.gather(*(one(wave * 100 + i) for i in range(100)))
                statuses += batch
                if all(s == 429 for s in batch):
                    break
        assert set(statuses) == {200, 429}
    finally:
        server.stop()
        fake.stop()
    spent = sql_value(gw.ledger, "SELECT sum(cost_usd) FROM events WHERE team = 's' AND status = 'ok'")
    row = gw.catalog.lookup(("openai",), "gpt-4o", gw.clock())
    bound = max_cost(row, 400, 40)
    assert BUDGET <= spent <= BUDGET + bound, f"spent {spent}, budget {BUDGET}, one call's max {bound}"
    print(f"\nsockets: {statuses.count(200)} admitted, spent {spent} of {BUDGET}, overshoot "
          f"{max(Decimal(0), spent - BUDGET)} / bound {bound}")
