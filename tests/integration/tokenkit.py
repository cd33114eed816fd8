"""API tokens for tests: made in a data dir before the app opens it."""

from __future__ import annotations

from pathlib import Path

from infra.settings import Settings
from infra.tokens import Role, TokenStore


def make_tokens(data_dir: Path, wanted: dict[str, tuple[Role, str]]) -> dict[str, str]:
    """Create one token per name, as (role, owner); returns name → token."""
    store = TokenStore(Settings(data_dir=data_dir))
    made = {name: store.create(role, owner)[1] for name, (role, owner) in wanted.items()}
    store.db.datastore.close()
    return made
