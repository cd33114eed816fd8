"""Email over SMTP (aiosmtplib): plain-text and HTML parts, a link to the task's page, a stable Message-ID.

The Message-ID is derived from the dedupe key, so a message re-sent after a crash between "sent" and
"marked sent" carries the same id and mail clients thread or drop it as a duplicate. SMTP itself has no
idempotency: that window is at-least-once.
"""

from __future__ import annotations

import hashlib
import html
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

import aiosmtplib

from infra.channels.base import Failure, Outgoing, Result
from infra.notifyconfig import NotifySettings


def message_id(dedupe_key: str, sender: str) -> str:
    """`<hash of the dedupe key@sender's domain>`: the same for every send of one notification, and short
    enough that the header is never folded (a folded Message-ID gains a space and stops matching)."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "progressd.local"
    return f"<{hashlib.sha256(dedupe_key.encode()).hexdigest()[:40]}@{domain}>"


def build(note: Outgoing, to: str, sender: str) -> EmailMessage:
    """The email for a notification: subject, text and HTML bodies, dedupe headers."""
    msg = EmailMessage()
    msg["Subject"] = note.subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id(note.dedupe_key, sender)
    msg["X-Progressd-Dedupe"] = note.dedupe_key
    msg["X-Progressd-Task"] = note.task_id
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        f"{note.text}\n\n{note.detail}\n\nSee the task: {note.url}\n\n"
        "-- \nprogressd: change which notifications you get with PUT /api/notification-preferences.\n"
    )
    e = html.escape
    msg.add_alternative(
        '<!doctype html><html><body style="font-family: sans-serif">'
        f"<h2>{e(note.text)}</h2><p>{e(note.detail)}</p>"
        f'<p><a href="{e(note.url, quote=True)}">Open {e(note.title)}</a></p>'
        '<p style="color: #666; font-size: small">progressd: change which notifications you get with '
        "PUT /api/notification-preferences.</p></body></html>\n",
        subtype="html",
    )
    return msg


class Email:
    """Sends one notification to the owner's address."""

    def __init__(self, config: NotifySettings) -> None:
        self.config = config

    async def send(self, note: Outgoing, to: str | None) -> Result:
        if not to:
            return Result(nothing="no email address in the preferences")
        cfg = self.config
        assert cfg.smtp_host is not None
        target = f"email:{to}"
        try:
            await aiosmtplib.send(
                build(note, to, cfg.smtp_from),
                hostname=cfg.smtp_host,
                port=cfg.smtp_port,
                username=cfg.smtp_username,
                password=cfg.smtp_password,
                use_tls=cfg.smtp_tls == "tls",
                start_tls={"starttls": True, "none": False}.get(cfg.smtp_tls),
                timeout=cfg.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            return Result(failures=[Failure(target, str(exc), permanent=all(c >= 500 for c in codes))])
        except aiosmtplib.SMTPResponseException as exc:
            return Result(
                failures=[Failure(target, f"SMTP {exc.code} {exc.message}", permanent=exc.code >= 500)]
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Result(failures=[Failure(target, f"{type(exc).__name__}: {exc}")])
        return Result(sent={target})
