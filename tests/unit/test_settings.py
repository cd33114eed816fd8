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
