"""Budget alerts: the :class:`Alert` value, its channels (webhook, Slack, email) and the background dispatcher.

The policy engine builds alerts and hands them to :class:`AlertDispatcher`, which delivers them to the channels
that :func:`build_channels` made from the config's ``alerts:`` section. A channel is anything with a ``name`` and
``async def send(alert)`` (:class:`Channel`); the built-ins use that interface like a third-party channel would.
Delivery errors are :class:`AlertDeliveryError`, a :class:`~tokenops.errors.TokenOpsError`.
"""

from tokenops.alerts.config import (
    AlertsConfig,
    ChannelConfig,
    EmailChannelConfig,
    SlackChannelConfig,
    WebhookChannelConfig,
    build_channels,
    parse_alerts,
)
from tokenops.alerts.dispatcher import AlertDispatcher, Recorder
from tokenops.alerts.email import EmailChannel
from tokenops.alerts.model import Alert, AlertDeliveryError, AlertKind, Channel, describe, new_alert_id, subject
from tokenops.alerts.slack import SlackChannel
from tokenops.alerts.webhook import RetryPolicy, WebhookChannel, sign, verify_signature

__all__ = [
    "Alert",
    "AlertDeliveryError",
    "AlertDispatcher",
    "AlertKind",
    "AlertsConfig",
    "Channel",
    "ChannelConfig",
    "EmailChannel",
    "EmailChannelConfig",
    "Recorder",
    "RetryPolicy",
    "SlackChannel",
    "SlackChannelConfig",
    "WebhookChannel",
    "WebhookChannelConfig",
    "build_channels",
    "describe",
    "new_alert_id",
    "parse_alerts",
    "sign",
    "subject",
    "verify_signature",
]
