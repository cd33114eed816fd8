"""Integration fixtures: the same test on each backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import Settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for a fresh store on SQLite, then on a fresh PostgreSQL database."""
    if request.param == "postgres":
        return Settings(data_dir=tmp_path, database_url=request.getfixturevalue("pg_url"))
    return Settings(data_dir=tmp_path)
