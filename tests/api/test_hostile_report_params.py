"""Admin report endpoints: a window that ends before it starts, a month outside the years 1 to 9999 in UTC and a
time bucket where a scope belongs are 400 with the error shape, never a 500 or an empty 200."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from test_analytics_api import ADMIN, AUTH, call

from harness import GatewayHarness


@pytest.mark.parametrize(("path", "params", "says"), [
    ("anomalies", {"since": "1d", "until": "2d"}, "must be before until"),
    ("anomalies", {"since": "9999-12-31"}, "must be before until"),  # until: now
    ("anomalies", {"signal": "vibes"}, "signal must be one of"),
    ("anomalies", {"severity": "dire"}, "severity must be one of"),
    ("forecast", {"horizon": "forever"}, "horizon: 'forever' is not a horizon"),
    ("forecast", {"horizon": "--scope"}, "horizon: '--scope' is not a horizon"),
    ("variance", {"month": "October"}, "month: 'October' is not a month"),
    ("chargeback", {"month": "2026-13"}, "month: '2026-13' is not a month"),
    ("spend", {"since": "2026-11-02", "until": "2026-11-01"}, "since must be before until"),
    ("chargeback", {"month": "0001-01", "timezone": "Asia/Tokyo"}, "outside the years 1 to 9999"),
    ("variance", {"month": "2026-10", "by": "day"}, "not time buckets"),
])  # fmt: skip
async def test_bad_report_parameters_are_400(make_gateway: Callable[..., Any], path: str, params: dict[str, str],
                                             says: str) -> None:  # fmt: skip
    h: GatewayHarness = await make_gateway(f"admin_key: {ADMIN}\n")
    h.ledger.append([call("a", d, "0.25") for d in range(1, 40)])
    r = await h.client.get(f"/v1/admin/reports/{path}", params=params, headers=AUTH)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_request" and says in err["message"]
    assert "--" not in err["message"].replace("'--", ""), err  # the API's parameters, not the CLI's options


def test_api_words_name_query_parameters_and_keep_commands() -> None:
    from tokenops.api.app import api_words

    said = "--since must be before --until; --price-change is wrong (tokenops prices list --unpriced)"
    assert api_words(said, {"since", "until", "price_change"}) == (
        "since must be before until; price_change is wrong (tokenops prices list --unpriced)")
    assert api_words("a--b and x --- y", {"b"}) == "a--b and x --- y"
    # the user's own input, echoed in quotes, is left as it was
    assert api_words("--horizon: '--scope' is not a horizon", {"horizon", "scope"}) == (
        "horizon: '--scope' is not a horizon")
    # an apostrophe inside a word is not a quote
    assert api_words("the key's --since can't be 'x' or --until", {"since", "until"}) == (
        "the key's since can't be 'x' or until")


async def test_head_on_an_admin_get_route(make_gateway: Callable[..., Any]) -> None:
    h: GatewayHarness = await make_gateway(f"admin_key: {ADMIN}\n")
    get, head = (await h.client.get("/v1/admin/keys", headers=AUTH)), (await h.client.head("/v1/admin/keys", headers=AUTH))
    assert head.status_code == get.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
