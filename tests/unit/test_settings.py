"""PROGRESSD_* variables: what they set, and that a bad value is refused with a message naming it."""

from __future__ import annotations

import pytest

from infra.relay import STREAM, Subjects
from infra.settings import Settings, SettingsError


def test_the_nats_prefix_names_every_subject_and_the_stream() -> None:
    assert Settings.from_env({}).nats_prefix == "progress"
    assert Subjects(Settings.from_env({}).nats_prefix).stream == STREAM == "PROGRESS"
    prefix = Settings.from_env({"PROGRESSD_NATS_PREFIX": "acme.progress-2"}).nats_prefix
    subjects = Subjects(prefix)
    assert subjects.command("t", "start") == "acme.progress-2.commands.t.start"
    assert subjects.query("t", "progress") == "acme.progress-2.queries.t.progress"
    assert subjects.stream == "ACME_PROGRESS-2"


@pytest.mark.parametrize("bad", ["progress.>", "a b", "a..b", ".a", "a.", "prog*"])
def test_a_nats_prefix_that_is_not_plain_subject_tokens_is_refused(bad: str) -> None:
    with pytest.raises(SettingsError, match="PROGRESSD_NATS_PREFIX"):
        Settings.from_env({"PROGRESSD_NATS_PREFIX": bad})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud"),
        ("SNAPSHOTS", "maybe"),
        ("PORT", "eighty"),
        ("TAIL_BYTES", "64MiB"),
        ("TAIL_BYTES", "0"),
        ("TAIL_BYTES", "-1"),
    ],
)
def test_a_setting_with_an_unknown_value_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"PROGRESSD_{name}|{value}"):
        Settings.from_env({f"PROGRESSD_{name}": value})


def test_log_settings_take_any_case() -> None:
    settings = Settings.from_env({"PROGRESSD_LOG_FORMAT": "JSON", "PROGRESSD_LOG_LEVEL": "Warning"})
    assert (settings.log_format, settings.log_level) == ("json", "warning")


def test_the_tail_byte_limit_defaults_to_64_mib() -> None:
    assert Settings.from_env({}).tail_bytes == 64 * 1024 * 1024
    assert Settings.from_env({"PROGRESSD_TAIL_BYTES": "1048576"}).tail_bytes == 1 << 20
