"""Plain-text alert emails over SMTP, with the standard library's ``smtplib`` run in a worker thread.

``smtplib`` blocks, so each delivery runs in ``asyncio.to_thread``; the socket ``timeout`` bounds how long that
thread can be held. The stdlib keeps TokenOps free of another runtime dependency, and alert mail is rare enough
that a thread per message costs nothing. Three transport modes: plain (port 25, e.g. a local relay), STARTTLS
(``starttls=True``, usually port 587) and implicit TLS (``use_tls=True``, usually port 465). The password lives
in a private attribute and is left out of ``repr``; SMTP errors carry the server's reply, never the password.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from tokenops.alerts.model import Alert, AlertDeliveryError, describe, format_usd, iso_utc, scope_label, subject


def email_body(alert: Alert) -> str:
    lines = [describe(alert), ""]
    if alert.message:
        lines += [alert.message, ""]
    facts = [
        ("Budget", alert.budget),
        ("Scope", scope_label(alert.scope) or "(everything)"),
        ("Kind", alert.kind),
        ("Period", f"{alert.period_start.isoformat()} to {alert.period_end.isoformat()}"),
    ]
    if alert.spent_usd is not None:
        facts.append(("Spent", format_usd(alert.spent_usd)))
    if alert.amount_usd is not None:
        facts.append(("Budget amount", format_usd(alert.amount_usd)))
    facts += [("Fired at", iso_utc(alert.fired_at)), ("Alert id", alert.id)]
    width = max(len(k) for k, _ in facts) + 1
    lines += [f"{k + ':':<{width}} {v}" for k, v in facts]
    if alert.details:
        lines += ["", "Details:"]
        lines += [f"  {k}: {v}" for k, v in alert.to_json()["details"].items()]
    lines += ["", "-- ", "Sent by TokenOps budget alerts."]
    return "\n".join(lines) + "\n"


class EmailChannel:
    """Send each alert as a plain-text email to ``recipients``.

    channel = EmailChannel("smtp.example", 587, "tokenops@example", ["finops@example"],
                           username="tokenops", password=os.environ["SMTP_PASSWORD"], starttls=True)
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        use_tls: bool = False,
        timeout: float = 10,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "email",
    ) -> None:
        if starttls and use_tls:
            raise ValueError("choose starttls (upgrade a plain connection) or use_tls (TLS from the start), not both")
        if not recipients:
            raise ValueError("an email channel needs at least one recipient")
        if password is not None and username is None:
            raise ValueError("a password needs a username")
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = tuple(recipients)
        self.username = username
        self._password = password
        self.starttls = starttls
        self.use_tls = use_tls
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.name = name

    def __repr__(self) -> str:
        auth = f", username={self.username!r}, password='**********'" if self.username else ""
        mode = ", starttls" if self.starttls else ", tls" if self.use_tls else ""
        return (f"EmailChannel(name={self.name!r}, {self.host}:{self.port}{mode}, sender={self.sender!r}, "
                f"recipients={list(self.recipients)!r}{auth})")  # fmt: skip

    def message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = subject(alert)
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(usegmt=True)
        # A domain is given so make_msgid does not look up this host's FQDN (a DNS call that can hang).
        msg["Message-ID"] = make_msgid(domain=parseaddr(self.sender)[1].rpartition("@")[2] or "tokenops")
        msg["X-TokenOps-Alert-Id"] = alert.id
        msg.set_content(email_body(alert))
        return msg

    async def send(self, alert: Alert) -> None:
        msg = self.message(alert)
        await asyncio.to_thread(self._send_blocking, msg)

    def _send_blocking(self, msg: EmailMessage) -> None:
        where = f"{self.host}:{self.port}"
        try:
            if self.use_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                                      context=self._context())  # fmt: skip
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=self._context())
                if self.username is not None:
                    smtp.login(self.username, self._password or "")
                refused = smtp.send_message(msg, from_addr=parseaddr(self.sender)[1] or self.sender,
                                            to_addrs=list(self.recipients))  # fmt: skip
        except smtplib.SMTPAuthenticationError as exc:
            raise AlertDeliveryError(f"{self.name}: SMTP {where} refused the login for {self.username!r} "
                                     f"({exc.smtp_code})", channel=self.name) from None  # fmt: skip
        except (smtplib.SMTPException, OSError) as exc:
            raise AlertDeliveryError(f"{self.name}: SMTP {where} failed: {type(exc).__name__}: {_reply(exc)}",
                                     channel=self.name) from None  # fmt: skip
        if refused:
            raise AlertDeliveryError(f"{self.name}: SMTP {where} refused recipient(s) {sorted(refused)}; "
                                     "the others were sent the alert", channel=self.name)  # fmt: skip

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()


def _reply(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{exc.smtp_code} {text}"
    return str(exc) or "no detail"
