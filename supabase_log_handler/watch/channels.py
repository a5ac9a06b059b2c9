"""Alert channels: Slack incoming webhook, Telegram Bot API, a JSON webhook, email over SMTP.

Owns reading the channels' settings (environment variables, else the ``.env``
file; names in ``ENV``) and delivering one message to one channel with a
timeout. Secrets (webhook URLs, the bot token, the SMTP password) stay in the
channel objects: errors say which channel failed and how (HTTP status, error
type), never a URL or a token, and ``secrets()`` lists them so callers can mask
anything that might echo them. HTTP goes through ``httpx`` (already installed
with the ``supabase`` client), email through the standard library.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

from ..config import read_env_file
from ..errors import ConfigurationError

ENV = {
    "slack_webhook_url": "SUPABASE_LOG_SLACK_WEBHOOK_URL",
    "telegram_bot_token": "SUPABASE_LOG_TELEGRAM_BOT_TOKEN",
    "telegram_chat_id": "SUPABASE_LOG_TELEGRAM_CHAT_ID",
    "telegram_api_url": "SUPABASE_LOG_TELEGRAM_API_URL",
    "webhook_url": "SUPABASE_LOG_WEBHOOK_URL",
    "webhook_authorization": "SUPABASE_LOG_WEBHOOK_AUTHORIZATION",
    "smtp_host": "SUPABASE_LOG_SMTP_HOST",
    "smtp_port": "SUPABASE_LOG_SMTP_PORT",
    "smtp_user": "SUPABASE_LOG_SMTP_USER",
    "smtp_password": "SUPABASE_LOG_SMTP_PASSWORD",
    "smtp_from": "SUPABASE_LOG_SMTP_FROM",
    "smtp_to": "SUPABASE_LOG_SMTP_TO",
    "smtp_starttls": "SUPABASE_LOG_SMTP_STARTTLS",
    "smtp_ssl": "SUPABASE_LOG_SMTP_SSL",
}
CHANNEL_NAMES = ("slack", "telegram", "webhook", "email")
TELEGRAM_API_URL = "https://api.telegram.org"
TELEGRAM_MAX_CHARS = 4096
SLACK_MAX_CHARS = 3900


class AlertError(Exception):
    """A channel did not accept a message; the text names the channel, never a secret."""


@dataclass(frozen=True)
class Message:
    """One alert: a subject line, a plain-text body, and the same facts as JSON fields."""

    subject: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    @property
    def name(self) -> str:
        """The channel's name in ``job_schedules.channels``."""

    def send(self, message: Message, timeout_s: float) -> None:
        """Deliver ``message`` within about ``timeout_s``; AlertError when it was not accepted."""

    def secrets(self) -> list[str]:
        """Values that must never appear in output."""


def _post_json(
    channel: str,
    url: str,
    body: dict[str, Any],
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> Any:
    import httpx

    try:
        with httpx.Client(timeout=httpx.Timeout(timeout_s)) as client:
            answer = client.post(url, json=body, headers=headers or {})
    except httpx.HTTPError as exc:
        raise AlertError(f"{channel}: request failed ({type(exc).__name__})") from None
    if answer.status_code >= 300:
        raise AlertError(f"{channel}: HTTP {answer.status_code}")
    return answer


@dataclass(frozen=True)
class SlackChannel:
    """Slack incoming webhook: ``POST {"text": ...}``, answered ``200 ok``."""

    webhook_url: str
    name: str = "slack"

    def send(self, message: Message, timeout_s: float) -> None:
        text = f"*{message.subject}*\n{message.text}"
        _post_json(self.name, self.webhook_url, {"text": text[:SLACK_MAX_CHARS]}, timeout_s)

    def secrets(self) -> list[str]:
        return [self.webhook_url]


@dataclass(frozen=True)
class TelegramChannel:
    """Telegram Bot API ``sendMessage``; the answer must say ``"ok": true``."""

    bot_token: str
    chat_id: str
    api_url: str = TELEGRAM_API_URL
    name: str = "telegram"

    def send(self, message: Message, timeout_s: float) -> None:
        url = f"{self.api_url.rstrip('/')}/bot{self.bot_token}/sendMessage"
        body = {
            "chat_id": self.chat_id,
            "text": f"{message.subject}\n\n{message.text}"[:TELEGRAM_MAX_CHARS],
            "disable_web_page_preview": True,
        }
        answer = _post_json(self.name, url, body, timeout_s)
        try:
            ok = answer.json().get("ok") is True
        except ValueError:
            ok = False
        if not ok:
            raise AlertError(f"{self.name}: the Bot API did not accept the message")

    def secrets(self) -> list[str]:
        return [self.bot_token]


@dataclass(frozen=True)
class WebhookChannel:
    """Any HTTP endpoint: ``POST`` of ``{"subject", "text", ...fields}`` as JSON, 2xx expected."""

    url: str
    authorization: str | None = None
    name: str = "webhook"

    def send(self, message: Message, timeout_s: float) -> None:
        body = {"subject": message.subject, "text": message.text, **message.fields}
        headers = {"Authorization": self.authorization} if self.authorization else None
        _post_json(self.name, self.url, body, timeout_s, headers)

    def secrets(self) -> list[str]:
        return [s for s in (self.url, self.authorization) if s]


@dataclass(frozen=True)
class EmailChannel:
    """Email over SMTP: implicit TLS (``ssl``), STARTTLS (default), or plain; login when a user is set."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    starttls: bool = True
    use_ssl: bool = False
    name: str = "email"

    def send(self, message: Message, timeout_s: float) -> None:
        mail = EmailMessage()
        mail["Subject"] = message.subject
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail.set_content(message.text)
        try:
            smtp: smtplib.SMTP
            if self.use_ssl:
                smtp = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=timeout_s, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=timeout_s)
            with smtp:
                if self.starttls and not self.use_ssl:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(mail)
        except smtplib.SMTPNotSupportedError:
            raise AlertError(
                f"{self.name}: the server does not offer STARTTLS "
                f"(set {ENV['smtp_starttls']}=false for a server without TLS)"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            code = getattr(exc, "smtp_code", None)
            raise AlertError(
                f"{self.name}: {type(exc).__name__}" + (f" {code}" if code else "")
            ) from None

    def secrets(self) -> list[str]:
        return [self.password] if self.password else []


def _flag(name: str, raw: str | None, default: bool) -> bool:
    if raw is None or not raw.strip():
        return default
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{ENV[name]} must be true or false, got {raw!r}")


def load_channels(
    environ: Mapping[str, str] | None = None, *, env_file: str | None = None
) -> dict[str, Channel]:
    """The configured channels by name (environment first, then the ``.env`` file)."""
    env = os.environ if environ is None else environ
    dotenv = read_env_file(env_file) if environ is None else {}

    def get(name: str) -> str | None:
        value = env.get(ENV[name]) or dotenv.get(ENV[name])
        return value.strip() if value and value.strip() else None

    out: dict[str, Channel] = {}
    if get("slack_webhook_url"):
        out["slack"] = SlackChannel(str(get("slack_webhook_url")))
    token, chat = get("telegram_bot_token"), get("telegram_chat_id")
    if token or chat:
        if not (token and chat):
            raise ConfigurationError(
                f"Telegram needs both {ENV['telegram_bot_token']} and {ENV['telegram_chat_id']}"
            )
        out["telegram"] = TelegramChannel(token, chat, get("telegram_api_url") or TELEGRAM_API_URL)
    if get("webhook_url"):
        out["webhook"] = WebhookChannel(str(get("webhook_url")), get("webhook_authorization"))
    if get("smtp_host"):
        sender, to = get("smtp_from"), get("smtp_to")
        if not (sender and to):
            raise ConfigurationError(
                f"email needs {ENV['smtp_from']} and {ENV['smtp_to']} (comma-separated) besides {ENV['smtp_host']}"
            )
        use_ssl = _flag("smtp_ssl", get("smtp_ssl"), False)
        port_text = get("smtp_port") or ("465" if use_ssl else "587")
        if not port_text.isdigit():
            raise ConfigurationError(f"{ENV['smtp_port']} must be a port number, got {port_text!r}")
        out["email"] = EmailChannel(
            host=str(get("smtp_host")),
            port=int(port_text),
            sender=sender,
            recipients=tuple(a.strip() for a in to.split(",") if a.strip()),
            user=get("smtp_user"),
            password=get("smtp_password"),
            starttls=_flag("smtp_starttls", get("smtp_starttls"), True),
            use_ssl=use_ssl,
        )
    return out


def pick(
    channels: Mapping[str, Channel], wanted: tuple[str, ...] | None
) -> tuple[list[Channel], list[str]]:
    """The channels named in ``wanted`` (all when None), and the wanted names not configured."""
    if wanted is None:
        return list(channels.values()), []
    chosen = [channels[n] for n in wanted if n in channels]
    return chosen, [n for n in wanted if n not in channels]
