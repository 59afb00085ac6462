"""Alert channels against real receivers: an HTTP server on loopback and an aiosmtpd SMTP server.

The HTTP receiver records every request (headers, exact body bytes, arrival time) and answers from a script of
failures before succeeding, so retries, backoff and Retry-After are observed from the receiving side.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
import yaml
from aiosmtpd.controller import Controller
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenops.alerts import (
    Alert,
    AlertDeliveryError,
    AlertsConfig,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
    build_channels,
    describe,
    parse_alerts,
    subject,
    verify_signature,
)
from tokenops.alerts.webhook import parse_retry_after
from tokenops.config import parse_config
from tokenops.errors import ConfigError, TokenOpsError
from tokenops.servers import BackgroundServer

BERLIN = ZoneInfo("Europe/Berlin")
SECRET = "whsec-test-4f1d"


def make_alert(**overrides: Any) -> Alert:
    fields: dict[str, Any] = dict(
        id="alert_0001",
        kind="threshold",
        budget="alpha-monthly",
        scope={"team": "alpha"},
        period_start=datetime(2026, 11, 1, tzinfo=BERLIN),
        period_end=datetime(2026, 12, 1, tzinfo=BERLIN),
        threshold=0.8,
        spent_usd=Decimal("200.000000000001"),
        amount_usd=Decimal("250"),
        message="team alpha passed 80% of its monthly budget",
        fired_at=datetime(2026, 11, 17, 9, 30, tzinfo=UTC),
        details={"calls": 1234},
    )
    fields.update(overrides)
    return Alert(**fields)


def free_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the HTTP receiver --------------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Records requests; answers each scripted (status, headers) in turn, then 200. ``delay`` slows every answer."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    delay: float = 0.0
    url: str = ""

    def fail(self, times: int, status: int = 500, headers: dict[str, str] | None = None) -> None:
        self.script += [(status, headers or {})] * times

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(Received(request.url.path, dict(request.headers), body, time.monotonic()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.script:
            status, headers = self.script.pop(0)
            return Response(b"nope", status_code=status, headers=headers)
        return JSONResponse({"ok": True})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.endpoint, methods=["POST"])])

    def gaps(self) -> list[float]:
        return [b.at - a.at for a, b in zip(self.requests, self.requests[1:], strict=False)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    server = BackgroundServer(rec.app()).start()
    rec.url = server.url
    yield rec
    server.stop()


# --- the alert value ----------------------------------------------------------------------------------------


def test_to_json_is_exact_and_utc() -> None:
    alert = make_alert(
        amount_usd=Decimal("1E+2"),
        details={"estimated_usd": Decimal("0.000000012"), "exhausts_at": datetime(2026, 11, 19, tzinfo=BERLIN)},
    )
    data = orjson.loads(orjson.dumps(alert.to_json()))
    assert data["spent_usd"] == "200.000000000001"
    assert data["amount_usd"] == "100"
    assert data["period_start"] == "2026-10-31T23:00:00Z"
    assert data["period_end"] == "2026-11-30T23:00:00Z"
    assert data["fired_at"] == "2026-11-17T09:30:00Z"
    assert data["timezone"] == "Europe/Berlin"
    assert data["details"] == {"estimated_usd": "0.000000012", "exhausts_at": "2026-11-18T23:00:00Z"}
    assert data["threshold"] == 0.8 and data["scope"] == {"team": "alpha"} and data["kind"] == "threshold"


def test_alert_refuses_naive_datetimes_and_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="period_start must be a time-zone-aware"):
        make_alert(period_start=datetime(2026, 11, 1))
    with pytest.raises(ValueError, match="kind must be one of"):
        make_alert(kind="warning")
    with pytest.raises(ValueError, match="spent_usd must be a finite Decimal"):
        make_alert(spent_usd=200.0)


def test_descriptions_read_well_for_each_kind() -> None:
    assert describe(make_alert(spent_usd=Decimal("200"))) == (
        "TokenOps budget alpha-monthly (team=alpha) passed 80% — $200.00 of $250.00 spent (Nov 2026, Europe/Berlin)."
    )
    forecast = make_alert(
        kind="forecast",
        threshold=None,
        spent_usd=Decimal("1234.5"),
        amount_usd=Decimal("2500"),
        details={"exhausts_at": "2026-11-19T10:00:00+00:00"},
    )
    assert describe(forecast) == (
        "TokenOps budget alpha-monthly (team=alpha) will run out on 19 Nov at the current "
        "rate — $1,234.50 of $2,500.00 spent (Nov 2026, Europe/Berlin)."
    )
    assert subject(forecast) == "[TokenOps] Budget alpha-monthly projected to run out on 19 Nov"
    as_the_engine_says = make_alert(kind="forecast", threshold=None, details={"exhausted_at": "2026-11-19T10:00:00"})
    assert "will run out on 19 Nov at the current rate" in describe(as_the_engine_says)
    day = datetime(2026, 11, 17, tzinfo=UTC)
    blocked = make_alert(kind="blocked", threshold=None, scope={}, period_start=day, period_end=day + timedelta(1))
    assert (
        describe(blocked)
        == "TokenOps budget alpha-monthly blocked a call — $200.00 of $250.00 spent (17 Nov 2026, UTC)."
    )
    assert subject(blocked) == "[TokenOps] Budget alpha-monthly blocked a call"
    assert subject(make_alert(threshold=0.5, budget="a\r\nBcc: x@y")) == "[TokenOps] Budget a Bcc: x@y at 50%"


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 17, 9, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Tue, 17 Nov 2026 09:00:07 GMT", now=now) == 7.0
    assert parse_retry_after("Tue, 17 Nov 2026 08:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# --- webhook ------------------------------------------------------------------------------------------------


async def test_webhook_posts_signed_json(receiver: Receiver) -> None:
    alert = make_alert()
    await WebhookChannel(receiver.url + "/hook", SECRET, backoff=0.01).send(alert)

    [req] = receiver.requests
    assert req.path == "/hook"
    assert orjson.loads(req.body) == alert.to_json()
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-tokenops-alert-id"] == "alert_0001"
    ts, sig = req.headers["x-tokenops-timestamp"], req.headers["x-tokenops-signature"]
    assert abs(int(ts) - time.time()) < 60
    assert sig.startswith("sha256=") and len(sig) == len("sha256=") + 64
    assert verify_signature(SECRET, ts, req.body, sig)
    assert verify_signature(SECRET, int(ts), req.body, sig, tolerance=300)
    assert not verify_signature("wrong-secret", ts, req.body, sig)
    assert not verify_signature(SECRET, ts, req.body.replace(b"alpha", b"alphb"), sig)
    assert not verify_signature(SECRET, str(int(ts) + 1), req.body, sig)
    assert not verify_signature(SECRET, ts, req.body, sig, tolerance=300, now=int(ts) + 301)
    assert not verify_signature(SECRET, "not-a-number", req.body, sig)


async def test_webhook_without_secret_is_unsigned(receiver: Receiver) -> None:
    await WebhookChannel(receiver.url, None).send(make_alert())
    [req] = receiver.requests
    assert "x-tokenops-signature" not in req.headers
    assert req.headers["x-tokenops-alert-id"] == "alert_0001"


async def test_webhook_retries_5xx_with_backoff_and_a_stable_id(receiver: Receiver) -> None:
    receiver.fail(2, 500)
    await WebhookChannel(receiver.url, SECRET, retries=3, backoff=0.05).send(make_alert())

    assert len(receiver.requests) == 3
    assert {r.headers["x-tokenops-alert-id"] for r in receiver.requests} == {"alert_0001"}
    assert len({r.body for r in receiver.requests}) == 1
    for r in receiver.requests:  # every attempt is signed with its own timestamp
        assert verify_signature(SECRET, r.headers["x-tokenops-timestamp"], r.body, r.headers["x-tokenops-signature"])
    first, second = receiver.gaps()
    assert first >= 0.05 and second >= 0.10  # backoff doubles (the jitter only adds)


async def test_webhook_honours_retry_after_capped(receiver: Receiver) -> None:
    receiver.fail(1, 429, {"Retry-After": "30"})
    await WebhookChannel(receiver.url, SECRET, backoff=0.001, max_retry_after=0.3).send(make_alert())
    assert len(receiver.requests) == 2
    [gap] = receiver.gaps()
    assert 0.3 <= gap < 5  # waited for Retry-After (not the 1 ms backoff), but no longer than the cap


@pytest.mark.parametrize("status", [400, 401, 404, 410])
async def test_webhook_does_not_retry_other_4xx(receiver: Receiver, status: int) -> None:
    receiver.fail(5, status)
    with pytest.raises(AlertDeliveryError) as info:
        await WebhookChannel(receiver.url + "/secret-path-token", SECRET, backoff=0.001).send(make_alert())
    assert len(receiver.requests) == 1
    assert info.value.status == status and info.value.channel == "webhook"
    assert f"HTTP {status}" in str(info.value) and "secret-path-token" not in str(info.value)
    assert isinstance(info.value, TokenOpsError)


async def test_webhook_gives_up_after_its_retries(receiver: Receiver) -> None:
    receiver.fail(10, 503)
    with pytest.raises(
        AlertDeliveryError, match=r"ops: POST http://127\.0\.0\.1:\d+ failed after 3 attempt\(s\): HTTP 503"
    ):
        await WebhookChannel(receiver.url, SECRET, retries=2, backoff=0.001, name="ops").send(make_alert())
    assert len(receiver.requests) == 3


async def test_webhook_retries_timeouts(receiver: Receiver) -> None:
    receiver.delay = 0.5
    with pytest.raises(AlertDeliveryError, match="after 2 attempt.*ReadTimeout"):
        await WebhookChannel(receiver.url, SECRET, timeout=0.1, retries=1, backoff=0.001).send(make_alert())
    assert len(receiver.requests) == 2


async def test_webhook_retries_refused_connections() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook?token=abc123"
    with pytest.raises(AlertDeliveryError, match="after 2 attempt.*ConnectError") as info:
        await WebhookChannel(url, SECRET, retries=1, backoff=0.001).send(make_alert())
    assert "abc123" not in str(info.value) and "/hook" not in str(info.value)


async def test_webhook_uses_an_injected_client(receiver: Receiver) -> None:
    async with httpx.AsyncClient() as client:
        channel = WebhookChannel(receiver.url, SECRET, client=client)
        await channel.send(make_alert(id="a1"))
        await channel.send(make_alert(id="a2"))
        assert not client.is_closed  # the caller owns it
    assert [r.headers["x-tokenops-alert-id"] for r in receiver.requests] == ["a1", "a2"]
    assert SECRET not in repr(channel)


# --- slack --------------------------------------------------------------------------------------------------


async def test_slack_text_is_readable(receiver: Receiver) -> None:
    receiver.fail(1, 502)
    channel = SlackChannel(receiver.url + "/services/T0/B0/XXXXSECRET", backoff=0.001, name="finance-slack")
    await channel.send(make_alert(spent_usd=Decimal("200")))

    assert len(receiver.requests) == 2
    payload = orjson.loads(receiver.requests[-1].body)
    assert payload["text"] == (
        ":warning: TokenOps budget *alpha-monthly* (team=alpha) passed 80% — "
        "$200.00 of $250.00 spent (Nov 2026, Europe/Berlin)."
    )
    section, context = payload["blocks"]
    assert section == {"type": "section", "text": {"type": "mrkdwn", "text": payload["text"]}}
    assert "team alpha passed 80% of its monthly budget" in context["elements"][0]["text"]
    assert "XXXXSECRET" not in repr(channel)


async def test_slack_escapes_markup_and_stops_on_4xx(receiver: Receiver) -> None:
    receiver.fail(1, 403)
    with pytest.raises(AlertDeliveryError, match="answered HTTP 403; not retried") as info:
        await SlackChannel(receiver.url + "/services/T0/B0/XXXXSECRET").send(make_alert(scope={"team": "<r&d>"}))
    assert "XXXXSECRET" not in str(info.value)
    assert "(team=&lt;r&amp;d&gt;)" in orjson.loads(receiver.requests[0].body)["text"]


# --- email --------------------------------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


class LoopbackController(Controller):
    """aiosmtpd's Controller on port 0: the real port is read back from the bound socket (no free-port race)."""

    def _create_server(self) -> Any:
        async def create() -> Any:
            server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=0)
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


@pytest.fixture
def smtp() -> Iterator[tuple[LoopbackController, Inbox]]:
    inbox = Inbox()
    controller = LoopbackController(inbox, hostname="127.0.0.1")
    controller.start()
    yield controller, inbox
    controller.stop()


async def test_email_is_sent_with_subject_recipients_and_body(smtp: tuple[LoopbackController, Inbox]) -> None:
    controller, inbox = smtp
    channel = EmailChannel(
        "127.0.0.1", controller.port, "TokenOps <tokenops@example>", ["finops@example", "cto@example"], timeout=5
    )
    await channel.send(make_alert(spent_usd=Decimal("200")))

    [envelope] = inbox.envelopes
    assert envelope.mail_from == "tokenops@example"
    assert envelope.rcpt_tos == ["finops@example", "cto@example"]
    msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert msg["Subject"] == "[TokenOps] Budget alpha-monthly at 80%"
    assert msg["To"] == "finops@example, cto@example"
    assert msg["X-TokenOps-Alert-Id"] == "alert_0001"
    assert msg.get_content_type() == "text/plain"
    body = msg.get_content().replace("\r\n", "\n")  # SMTP carries CRLF line ends
    assert body.startswith(
        "TokenOps budget alpha-monthly (team=alpha) passed 80% — $200.00 of $250.00 spent (Nov 2026, Europe/Berlin).\n"
    )
    assert "team alpha passed 80% of its monthly budget" in body
    assert "Alert id:      alert_0001" in body and "calls: 1234" in body


async def test_email_refused_connection_is_a_delivery_error() -> None:
    channel = EmailChannel(
        "127.0.0.1",
        free_port(),
        "tokenops@example",
        ["finops@example"],
        timeout=2,
        username="u",
        password="hunter2-smtp",
        name="finops-mail",
    )
    with pytest.raises(AlertDeliveryError, match=r"finops-mail: SMTP 127\.0\.0\.1:\d+ failed: ConnectionRefusedError"):
        await channel.send(make_alert())
    assert "hunter2-smtp" not in repr(channel) and "**********" in repr(channel)


def test_email_channel_refuses_contradictory_settings() -> None:
    with pytest.raises(ValueError, match="not both"):
        EmailChannel("h", 25, "a@b", ["c@d"], starttls=True, use_tls=True)
    with pytest.raises(ValueError, match="at least one recipient"):
        EmailChannel("h", 25, "a@b", [])


# --- config -------------------------------------------------------------------------------------------------

EXAMPLE = """
alerts:
  channels:
    - {type: webhook, name: ops, url: "https://hooks.example/tokenops", secret: "${WEBHOOK_SECRET}"}
    - {type: slack, name: finance-slack, url: "https://hooks.slack.com/services/T0/B0/SLACKTOKEN"}
    - {type: email, name: finops-mail, host: smtp.example, port: 587, sender: tokenops@example, to: [finops@example], starttls: true, username: u, password: "${SMTP_PASSWORD}"}
"""


ENV = {"WEBHOOK_SECRET": "whsec-from-env", "SMTP_PASSWORD": "smtp-pass-from-env"}


def test_the_documented_example_validates_and_builds() -> None:
    cfg = parse_config(EXAMPLE, env=ENV).alerts  # the real path: the config file, ${VAR}s from the environment
    assert [c.channel_name for c in cfg.channels] == ["ops", "finance-slack", "finops-mail"]
    assert "whsec-from-env" not in repr(cfg) and "smtp-pass-from-env" not in repr(cfg) and "SLACKTOKEN" not in repr(cfg)
    assert parse_alerts(yaml.safe_load(string.Template(EXAMPLE).substitute(ENV))["alerts"]) == cfg

    webhook, slack, mail = build_channels(cfg)
    assert isinstance(webhook, WebhookChannel) and webhook.name == "ops"
    assert webhook.url == "https://hooks.example/tokenops"
    assert isinstance(slack, SlackChannel) and slack.name == "finance-slack"
    assert isinstance(mail, EmailChannel) and (mail.host, mail.port, mail.starttls) == ("smtp.example", 587, True)
    assert mail.recipients == ("finops@example",) and mail.username == "u"
    assert "smtp-pass-from-env" not in repr(mail) and "whsec-from-env" not in repr(webhook)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("type: slack", "type: teams"), "tokenops.yaml:5: alerts.channels[1]: unknown channel type 'teams'"),
        (("to: [finops@example]", "to: [finops.example]"), "'finops.example' is not an email address"),
        (('url: "https://hooks.slack', 'url: "hooks.slack'), "alerts.channels[1].slack.url: expected an http(s) URL"),
        (('password: "${SMTP_PASSWORD}"', "password: [1, 2]"), "alerts.channels[2].email.password: expected text"),
    ],
)
def test_config_file_errors_name_the_line_and_hide_secrets(change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(EXAMPLE.replace(*change), env=ENV)
    assert expected in str(info.value)
    assert not {"SLACKTOKEN", "whsec-from-env", "smtp-pass-from-env"} & set(re.findall(r"[\w-]+", str(info.value)))


def test_a_numeric_password_is_text() -> None:
    cfg = parse_config(EXAMPLE.replace('"${SMTP_PASSWORD}"', "123456"), env=ENV).alerts
    assert cfg.channels[2].password.get_secret_value() == "123456"  # type: ignore[union-attr]


def test_channel_defaults() -> None:
    cfg = AlertsConfig.model_validate(
        {
            "channels": [
                {"type": "email", "host": "relay", "sender": "a@relay", "to": "b@relay", "use_tls": True},
                {"type": "webhook", "url": "http://127.0.0.1:9/x"},
            ]
        }
    )
    [mail, hook] = build_channels(cfg)
    assert (mail.name, mail.port, mail.recipients) == ("email", 465, ("b@relay",))
    assert hook.name == "webhook" and cfg.queue_size == 1000


@pytest.mark.parametrize(
    ("channel", "path", "expected"),
    [
        (
            {"type": "teams", "url": "https://x"},
            "alerts.channels[0]",
            "unknown channel type 'teams'; expected one of: webhook, slack, email",
        ),
        ({"url": "https://x"}, "alerts.channels[0]", "a channel needs a type"),
        ({"type": "webhook", "name": "ops"}, "alerts.channels[0].url", "this key is required"),
        ({"type": "webhook", "url": "hooks.example/x"}, "alerts.channels[0].url", "expected an http(s) URL"),
        ({"type": "slack", "url": "ftp://nope/T0/SECRETPATH"}, "alerts.channels[0].url", "expected an http(s) URL"),
        (
            {"type": "email", "host": "h", "sender": "a@b", "to": ["finops.example"]},
            "alerts.channels[0].to",
            "'finops.example' is not an email address",
        ),
        (
            {"type": "email", "host": "h", "sender": "tokenops", "to": ["a@b"]},
            "alerts.channels[0].sender",
            "not an email address",
        ),
        ({"type": "email", "host": "h", "sender": "a@b", "to": []}, "alerts.channels[0].to", "at least 1 item"),
        (
            {"type": "email", "host": "h", "sender": "a@b", "to": ["c@d"], "starttls": True, "use_tls": True},
            "alerts.channels[0]",
            "not both",
        ),
        ({"type": "webhook", "url": "https://x", "retry": 3}, "alerts.channels[0].retry", "unknown key"),
        ({"type": "webhook", "name": "two words", "url": "https://x"}, "alerts.channels[0].name", "may hold only"),
    ],
)
def test_bad_channels_give_clear_errors(channel: dict[str, Any], path: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_alerts({"channels": [channel]})
    assert info.value.path == path
    assert expected in str(info.value)
    assert "SECRETPATH" not in str(info.value)


def test_channel_names_must_be_unique() -> None:
    with pytest.raises(ConfigError, match="another channel is already named 'webhook'"):
        parse_alerts({"channels": [{"type": "webhook", "url": "https://a"}, {"type": "webhook", "url": "https://b"}]})


def test_secrets_stay_out_of_raw_validation_errors() -> None:
    with pytest.raises(ValidationError) as info:  # pydantic's own error, as tokenops.config would see it
        AlertsConfig.model_validate({"channels": [{"type": "slack", "url": "nope://T0/B0/SECRETPATH"}]})
    assert "SECRETPATH" not in str(info.value)


async def test_email_logs_in_and_a_refused_login_hides_the_password() -> None:
    from aiosmtpd.smtp import AuthResult

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        # handled=False: aiosmtpd then answers a refusal with 535 itself (its default is to stay silent).
        return AuthResult(success=auth_data.login == b"u" and auth_data.password == b"right-pass", handled=False)

    inbox = Inbox()
    controller = LoopbackController(inbox, hostname="127.0.0.1", authenticator=authenticator, auth_require_tls=False)
    controller.start()
    try:
        ok = EmailChannel("127.0.0.1", controller.port, "a@b", ["c@d"], username="u", password="right-pass", timeout=3)
        await ok.send(make_alert())
        assert len(inbox.envelopes) == 1
        bad = EmailChannel("127.0.0.1", controller.port, "a@b", ["c@d"], username="u", password="wrong-pass", timeout=3)
        with pytest.raises(AlertDeliveryError, match=r"refused the login for 'u' \(535\)") as info:
            await bad.send(make_alert())
        assert "wrong-pass" not in str(info.value) and len(inbox.envelopes) == 1
    finally:
        controller.stop()
