"""A batch of row changes written together (executemany, repeated upserts written once) leaves the same rows
as the same changes written one at a time, on both backends."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.settings import Settings
from infra.views import COPY_FROM, Copy, ViewRecorder, copy_rows, open_view
from projections.model import Insert, LazyRow, Merge, Op, ReadModel, Row, Table, Upsert, integer, text

KEYS = ("a", "b", "c")


def tables(prefix: str) -> tuple[Table, Table]:
    state = Table(f"{prefix}_state", (text("k", False), integer("n"), text("note")), key=("k",))
    return state, Table(f"{prefix}_log", (integer("i", False), text("k")), key=("i",))


def _bump(row: Row | None, k: str, by: int) -> Row:
    return {"k": k, "n": (row or {}).get("n", 0) + by, "note": (row or {}).get("note")}


def model(name: str) -> ReadModel:
    return ReadModel(name, tables(name), lambda change: [])


def op_strategy() -> st.SearchStrategy[list[tuple[str, str, int]]]:
    kinds = st.sampled_from(["upsert", "upsert-n", "merge", "insert"])
    return st.lists(st.tuples(kinds, st.sampled_from(KEYS), st.integers(-5, 5)), max_size=30)


def build(view: ViewRecorder, spec: list[tuple[str, str, int]]) -> list[Op]:
    state, log = view.model.tables
    serial = itertools.count()
    ops: list[Op] = []
    for kind, k, value in spec:
        match kind:
            case "upsert":  # every column
                ops.append(Upsert(state, {"k": k, "n": value, "note": f"set {value}"}))
            case "upsert-n":  # some columns only: must not wipe the note of an earlier upsert
                ops.append(Upsert(state, {"k": k, "n": value}))
            case "merge":  # reads what the ops before it left
                ops.append(Merge(state, {"k": k}, lambda row, k=k, by=value: _bump(row, k, by)))
            case _:
                ops.append(Insert(log, {"i": next(serial), "k": k}))
    return ops


def rows(view: ViewRecorder) -> dict[str, list[Row]]:
    state, log = view.model.tables
    return {
        "state": view.query(f"SELECT k, n, note FROM {state.name} ORDER BY k"),
        "log": view.query(f"SELECT i, k FROM {log.name} ORDER BY i"),
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def views(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ViewRecorder, ViewRecorder]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    settings = Settings(data_dir=tmp_path, database_url=url)
    return open_view(settings, model("together")), open_view(settings, model("onebyone"))


def test_a_batch_leaves_the_rows_that_one_op_at_a_time_leaves(
    views: tuple[ViewRecorder, ViewRecorder],
) -> None:
    together, one_by_one = views
    position = itertools.count(1)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(spec=op_strategy())
    def check(spec: list[tuple[str, str, int]]) -> None:
        for view in (together, one_by_one):
            view.drop()
            view.create_table()
        a, b = build(together, spec), build(one_by_one, spec)
        together.apply(a, Tracking(together.model.name, next(position)))
        for op in b:
            one_by_one.apply([op], Tracking(one_by_one.model.name, next(position)))
        assert rows(together) == rows(one_by_one)

    check()


def test_repeated_upserts_of_a_row_are_written_once(views: tuple[ViewRecorder, ViewRecorder]) -> None:
    view, _ = views
    state, log = view.model.tables
    statements: list[tuple[str, int]] = []
    ops: list[Op] = [Upsert(state, {"k": "a", "n": n, "note": "x"}) for n in range(100)]
    ops += [Insert(log, {"i": i, "k": "a"}) for i in range(50)]

    class Spy:
        def __init__(self, c: Any) -> None:
            self.c = c

        def execute(self, sql: Any, params: Any = None) -> Any:
            statements.append((str(sql), 1))
            return self.c.execute(sql, params)

        def executemany(self, sql: Any, params_seq: Any) -> Any:
            statements.append((str(sql), len(params_seq)))
            return self.c.executemany(sql, params_seq)

    copies: list[Copy] = []
    with view._cursor(commit=True) as c:  # type: ignore[attr-defined]
        view._write(Spy(c), ops, copies)  # type: ignore[attr-defined]
        copy_rows(c, copies)
    if view.dialect == "postgres":  # the last upsert, then the 50 new rows by COPY
        assert [n for _, n in statements] == [1] and [len(copy.rows) for copy in copies] == [50]
    else:  # the last upsert, then every insert in one executemany
        assert [n for _, n in statements] == [1, 50] and copies == []
    assert rows(view)["state"] == [{"k": "a", "n": 99, "note": "x"}]
    assert rows(view)["log"] == [{"i": i, "k": "a"} for i in range(50)]


def test_many_new_rows_are_written_whole_or_not_at_all(views: tuple[ViewRecorder, ViewRecorder]) -> None:
    """Enough inserts into one table go by COPY on PostgreSQL: odd text, NULLs and all arrive as given, and a
    key already there fails the whole batch, rows and tracking, as an INSERT does."""
    view, _ = views
    state, log = view.model.tables
    assert COPY_FROM <= 40
    odd = ["tab\there", "new\nline", "back\\slash", "ünïcødé ✓", "\\N", "", None, 'comma, "quoted"']
    ops: list[Op] = [Insert(log, {"i": i, "k": odd[i % len(odd)]}) for i in range(40)]
    ops.append(Upsert(state, {"k": "a", "n": 1, "note": None}))
    view.apply(ops, Tracking(view.model.name, 7))
    assert rows(view)["log"] == [{"i": i, "k": odd[i % len(odd)]} for i in range(40)]
    assert view.max_tracking_id(view.model.name) == 7
    clash = [Insert(log, {"i": 100 + i, "k": "x"}) for i in range(39)] + [Insert(log, {"i": 3, "k": "again"})]
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        view.apply([*clash, Upsert(state, {"k": "b", "n": 2, "note": "no"})], Tracking(view.model.name, 8))
    assert rows(view)["log"] == [{"i": i, "k": odd[i % len(odd)]} for i in range(40)]
    assert rows(view)["state"] == [{"k": "a", "n": 1, "note": None}]
    assert view.max_tracking_id(view.model.name) == 7


def test_a_lazy_row_replaced_later_in_the_batch_is_never_made(
    views: tuple[ViewRecorder, ViewRecorder],
) -> None:
    view = views[0]
    state, _ = view.model.tables
    columns = ("k", "n", "note")
    made: list[str] = []

    def lazy(k: str, n: int, label: str) -> LazyRow:
        def make() -> Row:
            made.append(label)
            return {"k": k, "n": n, "note": label}

        return LazyRow(columns, {"k": k}, make)

    ops: list[Op] = [
        Upsert(state, lazy("a", 1, "a first")),
        Upsert(state, lazy("b", 1, "b first")),
        Merge(state, {"k": "b"}, lambda row: _bump(row, "b", 10)),  # reads the table: rows before it are made
        Upsert(state, lazy("a", 2, "a second")),
        Upsert(state, lazy("b", 2, "b second")),
        Upsert(state, lazy("a", 3, "a last")),
    ]
    view.apply(ops, Tracking("together", 1))
    assert sorted(made) == ["a first", "a last", "b first", "b second"]  # not "a second"
    assert rows(view)["state"] == [
        {"k": "a", "n": 3, "note": "a last"},
        {"k": "b", "n": 2, "note": "b second"},
    ]


def test_a_lazy_row_that_makes_other_columns_or_another_key_is_refused() -> None:
    row = LazyRow(("k", "n"), {"k": "a"}, lambda: {"k": "a", "note": "x"})
    assert list(row) == ["k", "n"] and row["k"] == "a" and len(row) == 2  # known without making it
    with pytest.raises(ValueError, match="columns"):
        row["n"]
    other_key = LazyRow(("k", "n"), {"k": "a"}, lambda: {"k": "b", "n": 1})
    with pytest.raises(ValueError, match="columns"):
        other_key["n"]
