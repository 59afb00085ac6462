"""Slack (and Slack-compatible: Mattermost, Rocket.Chat) incoming webhooks.

The payload is ``{"text": ..., "blocks": [...]}``: ``text`` is the one readable line from
:func:`~tokenops.alerts.model.describe` (it is also what notifications and clients without blocks show), and
``blocks`` repeat it as a section with the policy engine's message and the alert id as context. The webhook URL
is the credential (anyone holding it can post to the channel), so only its host is ever shown. Retries are the
webhook channel's (:func:`~tokenops.alerts.webhook.post_with_retries`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from tokenops.alerts.model import Alert, describe
from tokenops.alerts.webhook import USER_AGENT, RetryPolicy, post_with_retries, safe_url

if TYPE_CHECKING:
    import httpx


def slack_payload(alert: Alert) -> dict[str, Any]:
    text = _escape(describe(alert, bold=lambda s: f"*{s}*", emoji=True))
    context = [f"alert `{alert.id}`"]
    if alert.message:
        context.insert(0, _escape(alert.message))
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
        ],
    }


def _escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters; everything else is shown as typed.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackChannel:
    """Post each alert to a Slack incoming webhook.

    channel = SlackChannel("https://hooks.slack.com/services/T000/B000/XXXX", name="finance-slack")
    """

    def __init__(
        self,
        webhook_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 60.0,
        name: str = "slack",
    ) -> None:
        self._url = webhook_url
        self.client = client
        self.timeout = timeout
        self.policy = RetryPolicy(retries, backoff, max_retry_after=max_retry_after)
        self.name = name

    def __repr__(self) -> str:
        return f"SlackChannel(name={self.name!r}, url={safe_url(self._url)!r})"

    async def send(self, alert: Alert) -> None:
        body = orjson.dumps(slack_payload(alert))
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        await post_with_retries(self._url, body, lambda: headers, channel=self.name, client=self.client,
                                timeout=self.timeout, policy=self.policy)  # fmt: skip
