"""step_stats as it stood at any position is the fold of the step samples up to there."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.model import Row
from projections.step_stats import RECENT, add_sample, stats_from_samples

samples = st.lists(
    st.fixed_dictionaries(
        {
            "step_key": st.sampled_from(["create tables", "deploy", "generate ui"]),
            "complexity": st.sampled_from(["simple", "medium", "unknown"]),
            "duration_ms": st.integers(0, 10**7),
        }
    ),
    max_size=60,
)


def folded(rows: list[dict[str, Any]]) -> dict[tuple[str, str], Row]:
    """What the live table holds after these samples: add_sample, one sample and group at a time."""
    table: dict[tuple[str, str], Row] = {}
    for sample in rows:
        for group in (sample["complexity"], "any"):
            key = {"step_key": sample["step_key"], "complexity": group}
            ident = (sample["step_key"], group)
            table[ident] = add_sample(table.get(ident), key, sample["duration_ms"])
    return table


@settings(max_examples=200, deadline=None)
@given(samples)
def test_the_rows_equal_the_tables_fold_of_add_sample(rows: list[dict[str, Any]]) -> None:
    got = {(r["step_key"], r["complexity"]): r for r in stats_from_samples(rows)}
    assert got == folded(rows)


def test_only_the_last_recent_samples_make_the_percentiles_but_all_count() -> None:
    rows = [{"step_key": "deploy", "complexity": "simple", "duration_ms": d} for d in range(RECENT + 100)]
    by_group = {r["complexity"]: r for r in stats_from_samples(rows)}
    assert by_group.keys() == {"simple", "any"}
    assert by_group["simple"]["count"] == RECENT + 100
    assert by_group["simple"]["median_ms"] == (100 + RECENT + 99) / 2
    assert stats_from_samples([]) == []
