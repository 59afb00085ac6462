"""The ``alerts:`` section of ``tokenops.yaml`` and the channels it builds.

    alerts:
      channels:
        - {type: webhook, name: ops, url: "https://hooks.example/tokenops", secret: "${WEBHOOK_SECRET}"}
        - {type: slack, name: finance-slack, url: "https://hooks.slack.com/services/..."}
        - {type: email, name: finops-mail, host: smtp.example, port: 587, sender: tokenops@example,
           to: [finops@example], starttls: true, username: u, password: "${SMTP_PASSWORD}"}

Each channel is picked by its ``type`` (a discriminated union, so an unknown type names the known ones). The
environment is not read here: :mod:`tokenops.config` substitutes ``${VAR}`` before these models see the data.
Secrets (the webhook secret, the SMTP password, and the Slack URL, which is itself a credential) are
``SecretStr``, and inputs are hidden from validation errors so that a typo never prints a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tokenops.alerts.email import EmailChannel
from tokenops.alerts.model import Channel
from tokenops.alerts.slack import SlackChannel
from tokenops.alerts.webhook import WebhookChannel
from tokenops.errors import ConfigError

if TYPE_CHECKING:
    import httpx

CHANNEL_TYPES = ("webhook", "slack", "email")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_URL = re.compile(r"^https?://[^/\s?#]+")
# Deliberately loose: a dotless domain ("tokenops@example", an internal relay) is valid; anything with spaces,
# no "@" or two "@" is a typo worth stopping at startup.
_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


def _secret_text(value: Any) -> Any:
    # YAML reads ``password: 123456`` as a number; take it as the text it was meant to be. Anything else that is
    # not text is refused here, without echoing it (a type error would show the value).
    if value is None or isinstance(value, str | SecretStr):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected text, not {type(value).__name__}")


Secret = Annotated[SecretStr, BeforeValidator(_secret_text)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, hide_input_in_errors=True)


def _check_url(value: str, example: str) -> str:
    if not _URL.match(value):
        raise ValueError(f"expected an http(s) URL like {example}")
    return value


def _check_address(value: str) -> str:
    # "TokenOps <tokenops@example>" is allowed for the sender; the address inside the brackets is checked.
    match = re.fullmatch(r"\s*(?:[^<>]*<([^<>]+)>|([^<>]+))\s*", value)
    address = (match.group(1) or match.group(2)).strip() if match else ""
    if not _ADDRESS.match(address):
        raise ValueError(f"{value!r} is not an email address (expected name@domain)")
    return value.strip()


class _ChannelBase(_Model):
    type: str  # narrowed to a Literal by each channel: the union's discriminator
    name: str | None = None  # default: the channel's type

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"channel name {v!r} may hold only letters, digits, '-', '_' and '.'")
        return v

    @property
    def channel_name(self) -> str:
        return self.name or self.type


class _HttpChannel(_ChannelBase):
    timeout: float = Field(5.0, gt=0)
    retries: int = Field(3, ge=0, le=10)
    backoff: float = Field(0.5, ge=0)
    max_retry_after: float = Field(60.0, ge=0)


class WebhookChannelConfig(_HttpChannel):
    type: Literal["webhook"]
    url: str
    secret: Secret | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, "https://hooks.example/tokenops")


class SlackChannelConfig(_HttpChannel):
    type: Literal["slack"]
    url: Secret

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        _check_url(v.get_secret_value(), "https://hooks.slack.com/services/T000/B000/XXXX")
        return v


class EmailChannelConfig(_ChannelBase):
    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)  # default: 465 with use_tls, 587 with starttls, else 25
    sender: str
    to: list[str] = Field(min_length=1)
    username: str | None = None
    password: Secret | None = None
    starttls: bool = False
    use_tls: bool = False
    timeout: float = Field(10.0, gt=0)

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        return _check_address(v)

    @field_validator("to")
    @classmethod
    def _to(cls, v: list[str]) -> list[str]:
        return [_check_address(a) for a in v]

    @model_validator(mode="after")
    def _modes(self) -> EmailChannelConfig:
        if self.starttls and self.use_tls:
            raise ValueError("choose starttls: true (port 587) or use_tls: true (port 465), not both")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 465 if self.use_tls else 587 if self.starttls else 25


def _known_type(value: Any) -> Any:
    # Checked before pydantic's own tag check, whose error carries the whole channel mapping as its input; a
    # caller that prints error inputs (tokenops.config does) would then print the Slack URL.
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind is None:
            raise ValueError(f"a channel needs a type: one of {', '.join(CHANNEL_TYPES)}")
        if not isinstance(kind, str) or kind not in CHANNEL_TYPES:
            raise ValueError(f"unknown channel type {kind!r}; expected one of: {', '.join(CHANNEL_TYPES)}")
    return value


ChannelConfig = Annotated[
    WebhookChannelConfig | SlackChannelConfig | EmailChannelConfig,
    Field(discriminator="type"),
    BeforeValidator(_known_type),
]


class AlertsConfig(_Model):
    channels: list[ChannelConfig] = []
    queue_size: int = Field(1000, ge=1)  # per channel; see AlertDispatcher

    @model_validator(mode="after")
    def _unique(self) -> AlertsConfig:
        seen: set[str] = set()
        for i, channel in enumerate(self.channels):
            if channel.channel_name in seen:
                raise ValueError(f"channels[{i}]: another channel is already named {channel.channel_name!r}; "
                                 "give each channel a distinct name")  # fmt: skip
            seen.add(channel.channel_name)
        return self


def parse_alerts(data: Mapping[str, Any] | None, *, file: str = "tokenops.yaml") -> AlertsConfig:
    """Validate an ``alerts:`` mapping; raises ConfigError naming the key path and what was expected."""
    try:
        return AlertsConfig.model_validate(data or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(_explain(err) + more, file=file, path=_path(("alerts", *err["loc"]))) from None


def _explain(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling)"
    if kind == "missing":
        return "this key is required"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and isinstance(loc[i - 1], int) and part in CHANNEL_TYPES:
            continue  # pydantic puts the union's tag in the path; the YAML has no such key
        else:
            out += f".{part}" if out else str(part)
    return out


def build_channels(cfg: AlertsConfig, *, client: httpx.AsyncClient | None = None) -> list[Channel]:
    """The channel objects a config describes, in order. ``client`` is shared by the HTTP channels if given."""
    channels: list[Channel] = []
    for c in cfg.channels:
        if isinstance(c, WebhookChannelConfig):
            secret = c.secret.get_secret_value() if c.secret is not None else None
            channels.append(WebhookChannel(c.url, secret, client=client, timeout=c.timeout, retries=c.retries,
                                           backoff=c.backoff, max_retry_after=c.max_retry_after,
                                           name=c.channel_name))  # fmt: skip
        elif isinstance(c, SlackChannelConfig):
            channels.append(SlackChannel(c.url.get_secret_value(), client=client, timeout=c.timeout,
                                         retries=c.retries, backoff=c.backoff, max_retry_after=c.max_retry_after,
                                         name=c.channel_name))  # fmt: skip
        else:
            password = c.password.get_secret_value() if c.password is not None else None
            channels.append(EmailChannel(c.host, c.effective_port, c.sender, c.to, username=c.username,
                                         password=password, starttls=c.starttls, use_tls=c.use_tls,
                                         timeout=c.timeout, name=c.channel_name))  # fmt: skip
    return channels
