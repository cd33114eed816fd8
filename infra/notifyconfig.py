"""Notification settings (PROGRESSD_* variables), per-owner preferences, and the deliveries they call for."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.settings import Settings, SettingsError
from projections.notifications import CHANNELS, KINDS

SMTP_TLS_MODES = ("auto", "starttls", "tls", "none")


@dataclass(frozen=True)
class NotifySettings:
    """How notifications are delivered; build it with `NotifySettings.from_env()`."""

    public_url: str = "http://127.0.0.1:8000"
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_tls: str = "auto"
    smtp_from: str = "progressd <progressd@localhost>"
    chat_webhook_url: str | None = None
    ntfy_url: str | None = None
    vapid_subject: str = "mailto:progressd@localhost"
    push_allow_http: bool = False
    allow_private: bool = False  # push endpoints on loopback, private, link-local … addresses (tests, LANs)
    email_min_minutes: float = 10.0
    poll: float = 1.0
    timeout: float = 10.0
    lease: float = 60.0
    max_attempts: int = 8
    backoff: float = 2.0
    backoff_max: float = 900.0
    max_age: float = 86_400.0
    stall_interval: float = 30.0
    stall_factor: float = 2.0
    stall_min_seconds: float = 60.0
    stall_min_samples: int = 3

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, settings: Settings | None = None
    ) -> NotifySettings:
        """Read the PROGRESSD_* notification variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(f"PROGRESSD_{name}")
            return value if value else None

        d = cls()
        base = f"http://{settings.host}:{settings.port}" if settings is not None else d.public_url
        try:
            tls = (get("SMTP_TLS") or d.smtp_tls).lower()
            if tls not in SMTP_TLS_MODES:
                raise ValueError(f"PROGRESSD_SMTP_TLS must be one of {', '.join(SMTP_TLS_MODES)}")
            return cls(
                public_url=(get("PUBLIC_URL") or base).rstrip("/"),
                smtp_host=get("SMTP_HOST"),
                smtp_port=int(get("SMTP_PORT") or d.smtp_port),
                smtp_username=get("SMTP_USERNAME"),
                smtp_password=get("SMTP_PASSWORD"),
                smtp_tls=tls,
                smtp_from=get("SMTP_FROM") or d.smtp_from,
                chat_webhook_url=get("CHAT_WEBHOOK_URL"),
                ntfy_url=(get("NTFY_URL") or "").rstrip("/") or None,
                vapid_subject=get("VAPID_SUBJECT") or d.vapid_subject,
                push_allow_http=(get("PUSH_ALLOW_HTTP") or "").lower() in ("1", "true", "yes"),
                allow_private=(get("NOTIFY_ALLOW_PRIVATE") or "").lower() in ("1", "true", "yes"),
                email_min_minutes=float(get("EMAIL_MIN_MINUTES") or d.email_min_minutes),
                poll=float(get("NOTIFY_POLL") or d.poll),
                timeout=float(get("NOTIFY_TIMEOUT") or d.timeout),
                lease=float(get("NOTIFY_LEASE") or d.lease),
                max_attempts=int(get("NOTIFY_MAX_ATTEMPTS") or d.max_attempts),
                backoff=float(get("NOTIFY_BACKOFF") or d.backoff),
                backoff_max=float(get("NOTIFY_BACKOFF_MAX") or d.backoff_max),
                max_age=float(get("NOTIFY_MAX_AGE") or d.max_age),
                stall_interval=float(get("STALL_INTERVAL") or d.stall_interval),
                stall_factor=float(get("STALL_FACTOR") or d.stall_factor),
                stall_min_seconds=float(get("STALL_MIN_SECONDS") or d.stall_min_seconds),
                stall_min_samples=int(get("STALL_MIN_SAMPLES") or d.stall_min_samples),
            )
        except ValueError as exc:
            raise SettingsError(f"invalid PROGRESSD_* notification setting: {exc}") from None

    def backoff_for(self, attempts: int) -> float:
        """Seconds before retry number `attempts` + 1: exponential, capped."""
        return float(min(self.backoff_max, self.backoff * 2 ** max(0, attempts - 1)))


# Which channels each kind goes to until an owner says otherwise: everything in the page's feed, the rest for
# what needs a person (approval, failure, stall) or closes the task.
DEFAULT_EVENTS: dict[str, tuple[str, ...]] = {
    "task_started": ("browser", "chat"),
    "step_complete": ("browser",),
    "approval_needed": CHANNELS,
    "task_complete": CHANNELS,
    "task_failed": CHANNELS,
    "stalled": CHANNELS,
}


@dataclass(frozen=True)
class Preferences:
    """One owner's choices: channels per kind, where email goes, and how long a task must run for email."""

    events: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_EVENTS))
    email: str | None = None
    email_min_minutes: float = 10.0
    ntfy_topic: str | None = None

    def wants(self, kind: str, channel: str) -> bool:
        return channel in self.events.get(kind, ())

    def to_json(self) -> dict[str, Any]:
        return {
            "events": {kind: list(self.events.get(kind, ())) for kind in KINDS},
            "email": self.email,
            "email_min_minutes": self.email_min_minutes,
            "ntfy_topic": self.ntfy_topic,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], default_minutes: float = 10.0) -> Preferences:
        """Stored or submitted preferences; kinds and fields left out keep their defaults."""
        events = dict(DEFAULT_EVENTS)
        for kind, channels in (data.get("events") or {}).items():
            if kind in KINDS and channels is not None:
                events[kind] = tuple(c for c in CHANNELS if c in channels)
        minutes = data.get("email_min_minutes")
        return cls(
            events=events,
            email=data.get("email"),
            email_min_minutes=float(default_minutes if minutes is None else minutes),
            ntfy_topic=data.get("ntfy_topic"),
        )


@dataclass(frozen=True)
class Decision:
    """What to do with a new outbox row: deliver it (pending), or record why not."""

    state: str
    reason: str | None = None


def decide(
    row: Mapping[str, Any],
    prefs: Preferences,
    config: NotifySettings,
    *,
    push_targets: int,
    age_seconds: float,
) -> Decision:
    """Whether a notification goes out on its channel: preferences, email threshold, configuration, age."""
    kind, channel = str(row["kind"]), str(row["channel"])
    if age_seconds > config.max_age:
        return Decision("expired", f"older than {config.max_age:g} s when first seen")
    if not prefs.wants(kind, channel):
        return Decision("skipped", f"{kind} is off for {channel}")
    if channel == "browser":
        return Decision("sent", None)  # the feed is the delivery: GET /api/notifications shows it
    if channel == "email":
        if not config.smtp_host:
            return Decision("skipped", "email is not configured (PROGRESSD_SMTP_HOST)")
        if not prefs.email:
            return Decision("skipped", "no email address in the preferences")
        minimum_ms = prefs.email_min_minutes * 60_000
        if int(row["elapsed_ms"]) < minimum_ms:
            return Decision("skipped", f"task had run under {prefs.email_min_minutes:g} min: no email")
    if channel == "chat" and not config.chat_webhook_url:
        return Decision("skipped", "no chat webhook is configured (PROGRESSD_CHAT_WEBHOOK_URL)")
    if channel == "push" and push_targets == 0:
        return Decision("skipped", "no push subscription or ntfy topic")
    return Decision("pending", None)
