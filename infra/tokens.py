"""API tokens: stored hashed, each with a role and the owner whose tasks it may see and touch."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from infra.settings import Settings
from infra.views import SqlDb
from projections.model import Table, text

PREFIX = "pd_"

API_TOKENS = Table(
    "api_tokens",
    (
        text("id", False),
        text("token_hash", False),
        text("role", False),
        text("owner", False),
        text("label"),
        text("created_at", False),
        text("revoked_at"),
        text("expires_at"),  # added later: SqlDb adds it to a database made before
    ),
    key=("id",),
    indexes=(("token_hash",),),
)


class Role(StrEnum):
    """What a token may do: workers report, owners watch and control, admins see every owner's tasks."""

    WORKER = "worker"
    OWNER = "owner"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for. `owner` None means every owner (admin, or local mode)."""

    role: Role
    owner: str | None
    token_id: str | None = None
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @property
    def scope(self) -> str | None:
        return None if self.role is Role.ADMIN else self.owner

    def may(self, command: str) -> bool:
        """Workers report progress; approving or rejecting is for people."""
        return not (self.role is Role.WORKER and command in ("approve", "reject"))


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The api_tokens table, in the same database as the event log."""

    def __init__(self, settings: Settings) -> None:
        self.db = SqlDb(settings, "auth", [API_TOKENS])

    def create(
        self, role: Role, owner: str, label: str | None = None, expires_in: timedelta | None = None
    ) -> tuple[str, str]:
        """Make a token; returns (id, token). The token itself is shown once and never stored."""
        token = PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(6)
        now = datetime.now(UTC)
        self.db.execute(
            "INSERT INTO api_tokens (id, token_hash, role, owner, label, created_at, expires_at) "
            "VALUES (:id, :h, :role, :owner, :label, :at, :expires)",
            {
                "id": token_id,
                "h": hash_token(token),
                "role": str(role),
                "owner": owner,
                "label": label,
                "at": stamp(now),
                "expires": None if expires_in is None else stamp(now + expires_in),
            },
        )
        return token_id, token

    def resolve(self, token: str) -> Principal | None:
        """The principal a presented token stands for, or None if it is unknown or revoked."""
        return self.resolve_hash(hash_token(token))

    def resolve_hash(self, token_hash: str) -> Principal | None:
        """The principal of the token with this `hash_token`, or None if it is unknown or revoked."""
        rows = self.db.query(
            "SELECT id, role, owner, expires_at FROM api_tokens WHERE token_hash = :h AND revoked_at IS NULL",
            {"h": token_hash},
        )
        if not rows:
            return None
        row = rows[0]
        expires = None if row["expires_at"] is None else datetime.fromisoformat(row["expires_at"])
        return Principal(Role(row["role"]), row["owner"], row["id"], expires)

    def revoke(self, token_id: str) -> bool:
        changed = self.db.execute(
            "UPDATE api_tokens SET revoked_at = :at WHERE id = :id AND revoked_at IS NULL",
            {"id": token_id, "at": stamp(datetime.now(UTC))},
        )
        return changed > 0

    def list(self) -> list[dict[str, object]]:
        return self.db.query(
            "SELECT id, role, owner, label, created_at, expires_at, revoked_at FROM api_tokens "
            "ORDER BY created_at, id"
        )

    def any_active(self) -> bool:
        """Whether a token is neither revoked nor expired (the stamps compare as text: one format, in UTC)."""
        return bool(
            self.db.query(
                "SELECT id FROM api_tokens WHERE revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > :now) LIMIT 1",
                {"now": stamp(datetime.now(UTC))},
            )
        )


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
