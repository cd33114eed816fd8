"""Web Push (RFC 8030/8291/8292): the payload encrypted for each browser subscription, signed with VAPID.

pywebpush encrypts (aes128gcm) and py-vapid signs; the request goes out on the shared httpx client. A
subscription the push service no longer knows (404, 410) is forgotten. The `Topic` header is derived from the
dedupe key, so a push service holding an undelivered copy replaces it with a repeat instead of showing both.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from py_vapid import Vapid  # type: ignore[import-untyped]
from pywebpush import WebPusher  # type: ignore[import-untyped]

from infra.channels.base import Failure, Outgoing, Result, http_failure
from infra.channels.guard import blocked

TTL = 24 * 3600
MAX_BODY = 3000  # push services accept about 4 KiB of ciphertext


def topic(dedupe_key: str) -> str:
    """At most 32 URL-safe base64 characters, as RFC 8030 allows."""
    return base64.urlsafe_b64encode(hashlib.sha256(dedupe_key.encode()).digest()).decode()[:32]


def push_body(note: Outgoing) -> bytes:
    data = note.payload()
    data["text"] = data["text"][:MAX_BODY]
    data["body"] = data["body"][:1000]
    return json.dumps(data, ensure_ascii=False).encode()[:MAX_BODY]


def encrypt(
    subscription: Mapping[str, Any], body: bytes, private_pem: str, subject: str, key: str, urgency: str
) -> tuple[bytes, dict[str, str]]:
    """The encrypted body and the headers for one subscription (CPU work: run it off the event loop)."""
    info = {
        "endpoint": subscription["endpoint"],
        "keys": {"p256dh": subscription["p256dh"], "auth": subscription["auth"]},
    }
    encoded = WebPusher(info).encode(body, "aes128gcm")
    parts = urlsplit(str(subscription["endpoint"]))
    vapid = Vapid.from_pem(private_pem.encode())
    claims = {"sub": subject, "aud": f"{parts.scheme}://{parts.netloc}", "exp": int(time.time()) + 12 * 3600}
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Encoding": "aes128gcm",
        "TTL": str(TTL),
        "Urgency": urgency,
        "Topic": topic(key),
        **{str(k): str(v) for k, v in vapid.sign(claims).items()},
    }
    return bytes(encoded["body"]), headers


class WebPush:
    """Sends one notification to each of an owner's push subscriptions not yet reached."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        subject: str,
        keys: Callable[[], tuple[str, str]],
        forget: Callable[[str], object],
    ) -> None:
        self.client = client
        self.subject = subject
        self.keys = keys
        self.forget = forget

    async def send(
        self, note: Outgoing, subscriptions: Sequence[Mapping[str, Any]], done: set[str]
    ) -> Result:
        result = Result()
        private_pem, _ = await asyncio.to_thread(self.keys)
        urgency = "high" if note.kind in ("approval_needed", "task_failed", "stalled") else "normal"
        body = push_body(note)
        for sub in subscriptions:
            target = f"push:{sub['id']}"
            if target in done:
                continue
            try:
                data, headers = await asyncio.to_thread(
                    encrypt, sub, body, private_pem, self.subject, note.dedupe_key, urgency
                )
            except Exception as exc:  # a malformed stored subscription: it will never work
                result.failures.append(Failure(target, f"cannot encrypt: {exc}", permanent=True))
                continue
            try:
                response = await self.client.post(str(sub["endpoint"]), content=data, headers=headers)
            except httpx.HTTPError as exc:
                if (refused := blocked(exc)) is not None:  # not retried: only the operator can allow it
                    result.failures.append(Failure(target, f"not sent: {refused}", permanent=True))
                else:
                    result.failures.append(Failure(target, f"{type(exc).__name__}: {exc}"))
                continue
            if response.status_code in (200, 201, 202):
                result.sent.add(target)
            elif response.status_code in (404, 410):
                await asyncio.to_thread(self.forget, str(sub["id"]))  # expired: nothing to deliver to
                result.sent.add(target)
            else:
                after = response.headers.get("retry-after")
                result.failures.append(
                    http_failure(target, response.status_code, response.reason_phrase, after)
                )
        return result
