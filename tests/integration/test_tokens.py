"""Token expiry in the store: the column is added to a database made before it existed, on each backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from infra.settings import Settings
from infra.tokens import API_TOKENS, Role, TokenStore, hash_token
from infra.views import SqlDb
from projections.model import Table


def test_a_database_made_before_expiry_gains_the_column_and_keeps_its_tokens(settings: Settings) -> None:
    """api_tokens as the previous release made it (no expires_at), with a token in it; opening the store adds
    the column, the old token still works and never expires, and new tokens can expire."""
    before = Table(
        API_TOKENS.name,
        tuple(c for c in API_TOKENS.columns if c.name != "expires_at"),
        key=API_TOKENS.key,
        indexes=API_TOKENS.indexes,
    )
    old = SqlDb(settings, "auth", [before])
    old.execute(
        "INSERT INTO api_tokens (id, token_hash, role, owner, label, created_at) "
        "VALUES ('old1', :h, 'owner', 'alice', NULL, '2026-01-01T00:00:00+00:00')",
        {"h": hash_token("pd_old")},
    )
    assert "expires_at" not in old.query("SELECT * FROM api_tokens")[0]
    old.datastore.close()

    store = TokenStore(settings)
    again = TokenStore(settings)  # a second process opening the same database: nothing to add twice
    principal = store.resolve("pd_old")
    assert principal is not None and principal.owner == "alice" and principal.expires_at is None
    _, short = store.create(Role.OWNER, "bob", expires_in=timedelta(seconds=-1))  # already expired
    _, day = again.create(Role.OWNER, "carol", expires_in=timedelta(days=1))
    now = datetime.now(UTC)
    expired = store.resolve(short)
    assert expired is not None and expired.expired(now)
    valid = store.resolve(day)
    assert valid is not None and not valid.expired(now)
    assert valid.expires_at is not None and timedelta(hours=23) < valid.expires_at - now <= timedelta(days=1)
    listed = {row["owner"]: row["expires_at"] for row in store.list()}
    assert listed["alice"] is None and listed["carol"] and listed["bob"]
    store.db.datastore.close()
    again.db.datastore.close()


def test_only_expired_tokens_left_means_no_active_token(settings: Settings) -> None:
    store = TokenStore(settings)
    store.create(Role.OWNER, "bob", expires_in=timedelta(seconds=-1))
    assert not store.any_active()
    store.create(Role.OWNER, "bob", expires_in=timedelta(hours=1))
    assert store.any_active()
    store.db.datastore.close()
