"""Chat webhooks and ntfy topics: one POST each, carrying the dedupe key so a receiver can drop repeats."""

from __future__ import annotations

from email.header import Header

import httpx

from infra.channels.base import Failure, Outgoing, Result, http_failure


def dedupe_headers(note: Outgoing) -> dict[str, str]:
    # Both names: Idempotency-Key is the IETF draft's, X-Progressd-Dedupe is ours and says what it is.
    return {"Idempotency-Key": note.dedupe_key, "X-Progressd-Dedupe": note.dedupe_key}


async def _post(client: httpx.AsyncClient, target: str, url: str, **kwargs: object) -> Result:
    try:
        response = await client.post(url, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        return Result(failures=[Failure(target, f"{type(exc).__name__}: {exc}")])
    if 200 <= response.status_code < 300:
        return Result(sent={target})
    failure = http_failure(
        target, response.status_code, response.reason_phrase, response.headers.get("retry-after")
    )
    return Result(failures=[failure])


class ChatWebhook:
    """POSTs Slack/Matrix-compatible JSON (`text` first) to the configured incoming-webhook URL."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self.client = client

    async def send(self, note: Outgoing) -> Result:
        return await _post(self.client, "chat", self.url, json=note.payload(), headers=dedupe_headers(note))


def header_text(text: str) -> str:
    """A header value for any text: ASCII as it is, else one RFC 2047 encoded word (ntfy decodes it since 2.4;
    HTTP headers carry no UTF-8 of their own, and dropping what is not ASCII lost the spec's ❌ and ·)."""
    if text.isascii():
        return text
    return Header(text, "utf-8").encode(maxlinelen=10_000)


class Ntfy:
    """Publishes to an ntfy-style topic (`POST <base>/<topic>`, the text as the body), for phones."""

    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client

    async def send(self, note: Outgoing, topic: str) -> Result:
        headers = {
            "Title": header_text(note.subject.strip() or "progressd"),
            "Click": note.url,
            "Tags": note.kind,
            "Priority": "high" if note.kind in ("approval_needed", "task_failed", "stalled") else "default",
            **dedupe_headers(note),
        }
        body = f"{note.subject}\n{note.detail}".encode()
        return await _post(
            self.client, f"ntfy:{topic}", f"{self.base_url}/{topic}", content=body, headers=headers
        )
