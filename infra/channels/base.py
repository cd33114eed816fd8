"""What every channel sends and reports: the outgoing notification, and which targets got it or why not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from projections.wording import task_phrase


@dataclass(frozen=True)
class Outgoing:
    """One delivery row as a channel sends it, with the link to the task's page."""

    dedupe_key: str
    kind: str
    channel: str
    owner: str
    task_id: str
    title: str
    text: str
    detail: str
    step: int | None
    at: str
    url: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any], public_url: str) -> Outgoing:
        task_id = str(row["task_id"])
        return cls(
            dedupe_key=str(row["dedupe_key"]),
            kind=str(row["kind"]),
            channel=str(row["channel"]),
            owner=str(row["owner"]),
            task_id=task_id,
            title=str(row["title"]),
            text=str(row["text"]),
            detail=str(row["detail"]),
            step=None if row.get("step") is None else int(row["step"]),
            at=str(row["at"]),
            url=f"{public_url.rstrip('/')}/tasks/{task_id}",
        )

    @property
    def subject(self) -> str:
        """The text, naming the task when the text itself does not."""
        if self.title in self.text:
            return self.text
        return f"{self.text} · {task_phrase(self.title)}"

    def payload(self) -> dict[str, Any]:
        """The JSON body chat webhooks and push messages carry."""
        return {
            "text": f"{self.subject}\n{self.detail}\n{self.url}",
            "title": self.subject,
            "body": self.detail,
            "kind": self.kind,
            "task_id": self.task_id,
            "task_title": self.title,
            "owner": self.owner,
            "step": self.step,
            "at": self.at,
            "url": self.url,
            "dedupe_key": self.dedupe_key,
        }


@dataclass(frozen=True)
class Failure:
    """A target that did not get the notification; permanent failures are not retried."""

    target: str
    error: str
    permanent: bool = False
    retry_after: float | None = None


@dataclass
class Result:
    """What one attempt did: targets that got it, targets that failed, or why there was nothing to do."""

    sent: set[str] = field(default_factory=set)
    failures: list[Failure] = field(default_factory=list)
    nothing: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


def retry_after(raw: str | None) -> float | None:
    """A Retry-After header in seconds (HTTP dates are treated as unknown)."""
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def http_failure(target: str, status: int, reason: str, after: str | None) -> Failure:
    """An HTTP answer that is not success: 408, 425, 429 and 5xx are worth retrying, other 4xx are not."""
    transient = status in (408, 425, 429) or status >= 500
    return Failure(
        target, f"HTTP {status} {reason}".strip(), permanent=not transient, retry_after=retry_after(after)
    )
