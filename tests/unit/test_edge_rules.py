"""The gateway edge's pure rules: loopback Host names, JSON content types, token lifetimes, metrics tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest
import typer

from gateway.auth import is_json, loopback_host
from gateway.cli import parse_lifetime
from infra.settings import Settings, SettingsError


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8000",
        "LOCALHOST:8000",
        "127.0.0.1",
        "127.0.0.1:8000",
        "127.9.8.7:1",
        "[::1]",
        "[::1]:8000",
    ],
)
def test_loopback_host_names(host: str) -> None:
    assert loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "attacker.example",
        "attacker.example:8000",
        "127.0.0.1.nip.io",
        "localhost.attacker.example",
        "10.0.0.1",
        "[::2]:8000",
        "",
        ":8000",
        "[::1",
        "0.0.0.0:8000",
    ],
)
def test_other_host_names(host: str) -> None:
    assert not loopback_host(host)


def test_json_content_types() -> None:
    assert is_json("application/json") and is_json("application/json; charset=utf-8")
    assert is_json("application/merge-patch+json") and is_json("Application/JSON")
    for other in ("", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "text/json"):
        assert not is_json(other)


def test_token_lifetimes() -> None:
    assert parse_lifetime("3600s") == timedelta(hours=1)
    assert parse_lifetime("30d") == timedelta(days=30)
    assert parse_lifetime("12h") == parse_lifetime("720m")
    assert parse_lifetime("2w") == timedelta(days=14)
    for bad in ("", "30", "d", "0s", "-1h", "1.5h", "30 days", "999999999w"):
        with pytest.raises(typer.Exit):
            parse_lifetime(bad)


def test_metrics_token_setting() -> None:
    assert Settings.from_env({}).metrics_token is None
    assert Settings.from_env({"PROGRESSD_METRICS_TOKEN": "m" * 32}).metrics_token == "m" * 32
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        Settings.from_env({"PROGRESSD_METRICS_TOKEN": "short"})
