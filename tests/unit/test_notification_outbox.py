"""The notification outbox as a pure function of the log: which events notify, their texts, their dedupe keys;
which deliveries preferences allow; and the stall check over step_stats. No I/O."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.progress import progress_view
from domain.task import StepPlan, Task
from infra.notifyconfig import DEFAULT_EVENTS, NotifySettings, Preferences, decide
from projections.model import Change, Insert, step_states
from projections.notifications import CHANNELS, MODEL, notes_for, stall_rows, stalled_steps

T0 = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def replay(task: Task) -> Iterator[Change]:
    """The Changes a projection sees for the task's pending events; use each before taking the next (the
    task in it is mutated in place, as in the projector's TaskCache)."""
    current: Any = None
    for position, event in enumerate(task.collect_events(), start=1):
        before = None if current is None else step_states(current)
        current = event.mutate(current)
        yield Change(event, current, before, step_states(current), position)


def crm() -> Task:
    return Task.plan(
        "Cellphone Store CRM",
        "alice",
        [
            StepPlan("Create database tables"),
            StepPlan("Generate application UI", substeps=("Customer list", "Sales form")),
            StepPlan("Configure workflows", requires_approval=True),
        ],
        at=T0,
    )


def texts(task: Task) -> list[tuple[str, str]]:
    return [(n.kind, n.text) for c in replay(task) for n in notes_for(c)]


def test_the_spec_notifications_for_a_whole_run() -> None:
    task = crm()
    task.start_step(1, at=at(1))
    task.log("info", "3 tables", 1, at=at(2))
    task.complete_step(1, at=at(15))
    task.start_step(2, at=at(15))
    task.complete_substep(2, 1, at=at(20))
    task.fail_step(2, "template missing", at=at(30))
    task.retry_step(2, at=at(40))
    task.complete_step(2, at=at(60))
    task.start_step(3, at=at(60))
    task.approve(3, at=at(70))
    task.complete_step(3, at=at(700))
    assert texts(task) == [
        ("task_started", "Your Cellphone Store CRM task has started"),
        ("step_complete", "Step 1 complete: Create database tables"),
        ("task_failed", "❌ Task failed at Step 2"),
        ("step_complete", "Step 2 complete: Generate application UI"),
        ("approval_needed", "⚠️ Approval required for Step 3"),
        ("step_complete", "Step 3 complete: Configure workflows"),
        ("task_complete", "✅ Your Cellphone Store CRM is ready!"),
    ]


def test_task_complete_counts_the_steps_that_ran() -> None:
    def detail(task: Task) -> str:
        return next(n.detail for c in replay(task) for n in notes_for(c) if n.kind == "task_complete")

    whole = crm()
    for order in (1, 2, 3):
        whole.start_step(order, at=at(order))
        if order == 3:
            whole.approve(3, at=at(order))
        whole.complete_step(order, at=at(order + 90))
    assert detail(whole).startswith("All 3 steps finished in ")
    partly = crm()
    partly.start_step(1, at=at(1))
    partly.complete_step(1, at=at(31))
    partly.skip_step(2, at=at(31))
    partly.start_step(3, at=at(31))
    partly.approve(3, at=at(31))
    partly.complete_step(3, at=at(61))
    assert detail(partly).startswith("2 of 3 steps (1 skipped) finished in ")


def test_rejection_fails_the_task_and_approval_requests_notify() -> None:
    task = crm()
    task.request_approval(1, "Drop the old tables?", at=at(1))
    task.reject(1, "no", at=at(2))
    found = [(n.kind, n.text, n.detail) for c in replay(task) for n in notes_for(c)]
    assert found == [
        ("task_started", "Your Cellphone Store CRM task has started", "Cellphone Store CRM: 3 steps."),
        ("approval_needed", "⚠️ Approval required for Step 1", "Cellphone Store CRM: Drop the old tables?"),
        (
            "task_failed",
            "❌ Task failed at Step 1",
            "Cellphone Store CRM: Create database tables: rejected: no",
        ),
    ]


def test_a_cancelled_pending_task_never_started() -> None:
    task = crm()
    task.cancel(at=at(1))
    assert texts(task) == []


def test_rows_fan_out_per_channel_with_stable_dedupe_keys() -> None:
    task = crm()
    task.start_step(1, at=at(1))
    task.complete_step(1, at=at(601))
    ops = [op for c in replay(task) for op in MODEL.handle(c)]
    assert all(isinstance(op, Insert) for op in ops)
    rows = [op.row for op in ops if isinstance(op, Insert)]
    tid = str(task.id)
    assert [r["dedupe_key"] for r in rows] == [
        *(f"{tid}:2:task_started:{ch}" for ch in CHANNELS),
        *(f"{tid}:3:step_complete:{ch}" for ch in CHANNELS),
    ]
    assert {r["owner"] for r in rows} == {"alice"}
    assert [r["elapsed_ms"] for r in rows[::4]] == [0, 600_000]
    # Replaying the same log gives the same rows: the keys recognise notifications after a rebuild.
    again = crm_replayed_rows(task)
    assert again == rows


def crm_replayed_rows(task: Task) -> list[dict[str, Any]]:
    clone = Task.plan(task.title, task.owner, task.plan_steps(), task_id=task.id, at=T0)
    clone.start_step(1, at=at(1))
    clone.complete_step(1, at=at(601))
    return [op.row for c in replay(clone) for op in MODEL.handle(c) if isinstance(op, Insert)]


# ---- which deliveries preferences allow ------------------------------------------------------------------

CONFIGURED = NotifySettings(smtp_host="127.0.0.1", chat_webhook_url="http://127.0.0.1:9/hook")


def row(kind: str, channel: str, elapsed_min: float = 30) -> dict[str, Any]:
    return {"kind": kind, "channel": channel, "elapsed_ms": int(elapsed_min * 60_000)}


def test_defaults_send_what_needs_a_person_everywhere_and_the_rest_to_the_feed() -> None:
    prefs = Preferences(email="alice@example.com")
    wanted = {
        (kind, ch)
        for kind in DEFAULT_EVENTS
        for ch in CHANNELS
        if decide(row(kind, ch), prefs, CONFIGURED, push_targets=1, age_seconds=0).state
        in ("pending", "sent")
    }
    assert ("task_started", "browser") in wanted and ("task_started", "chat") in wanted
    assert ("step_complete", "email") not in wanted and ("step_complete", "browser") in wanted
    assert {("task_complete", ch) for ch in CHANNELS} <= wanted
    assert (
        decide(row("task_complete", "browser"), prefs, CONFIGURED, push_targets=0, age_seconds=0).state
        == "sent"
    )


def test_email_only_for_tasks_over_the_threshold() -> None:
    prefs = Preferences(email="alice@example.com", email_min_minutes=10)
    short = decide(row("task_complete", "email", 3), prefs, CONFIGURED, push_targets=0, age_seconds=0)
    assert short.state == "skipped" and "under 10 min" in (short.reason or "")
    long = decide(row("task_complete", "email", 12), prefs, CONFIGURED, push_targets=0, age_seconds=0)
    assert long.state == "pending"


@pytest.mark.parametrize(
    ("prefs", "config", "channel", "reason"),
    [
        (Preferences(events={"task_failed": ("browser",)}), CONFIGURED, "chat", "off for chat"),
        (Preferences(), CONFIGURED, "email", "no email address"),
        (Preferences(email="a@example.com"), NotifySettings(), "email", "not configured"),
        (Preferences(), NotifySettings(), "chat", "no chat webhook"),
        (Preferences(), CONFIGURED, "push", "no push subscription"),
    ],
)
def test_skipped_with_a_reason(prefs: Preferences, config: NotifySettings, channel: str, reason: str) -> None:
    decision = decide(row("task_failed", channel), prefs, config, push_targets=0, age_seconds=0)
    assert decision.state == "skipped" and reason in (decision.reason or "")


def test_old_notifications_expire_instead_of_going_out() -> None:
    decision = decide(
        row("task_failed", "chat"), Preferences(), CONFIGURED, push_targets=0, age_seconds=90_000
    )
    assert decision.state == "expired"


def test_preferences_json_round_trip_keeps_defaults_for_what_is_left_out() -> None:
    prefs = Preferences.from_json({"events": {"task_started": []}, "email": "a@example.com"}, 15)
    assert prefs.events["task_started"] == () and prefs.events["task_failed"] == DEFAULT_EVENTS["task_failed"]
    assert prefs.email_min_minutes == 15
    assert Preferences.from_json(prefs.to_json()) == prefs


def test_backoff_grows_and_is_capped() -> None:
    cfg = NotifySettings(backoff=2, backoff_max=60)
    assert [cfg.backoff_for(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [2, 4, 8, 16, 32, 60, 60]


def test_settings_from_env() -> None:
    cfg = NotifySettings.from_env(
        {
            "PROGRESSD_SMTP_HOST": "mail",
            "PROGRESSD_SMTP_PORT": "2525",
            "PROGRESSD_PUBLIC_URL": "https://p.example/",
            "PROGRESSD_EMAIL_MIN_MINUTES": "5",
            "PROGRESSD_PUSH_ALLOW_HTTP": "true",
        }
    )
    assert (cfg.smtp_host, cfg.smtp_port, cfg.public_url, cfg.email_min_minutes, cfg.push_allow_http) == (
        "mail",
        2525,
        "https://p.example",
        5.0,
        True,
    )


# ---- stalls ------------------------------------------------------------------------------------------------


def running_view(step_work_s: float, quiet_s: float) -> tuple[dict[str, Any], datetime]:
    task = Task.plan(
        "Nightly import", "bob", [StepPlan("Load rows"), StepPlan("Index")], complexity="simple", at=T0
    )
    task.start_step(1, at=at(0))
    task.report_progress(1, 10, at=at(step_work_s))
    view = progress_view(task)
    view["position"] = 9
    return view, at(step_work_s + quiet_s)


STATS = {
    ("load rows", "simple"): {"count": 5, "p90_ms": 60_000.0},
    ("load rows", "any"): {"count": 9, "p90_ms": 1e9},
}


def test_a_step_far_beyond_its_p90_is_stalled() -> None:
    view, now = running_view(100, 30)  # 130 s of work, p90 60 s, factor 2
    [stall] = stalled_steps(view, STATS, now, factor=2, min_samples=3, min_ms=1000)
    assert (stall.step, stall.name, stall.attempt, stall.elapsed_ms, stall.p90_ms) == (
        1,
        "Load rows",
        1,
        130_000,
        60_000,
    )
    rows = stall_rows(view, stall, 9, "2024-01-15T10:02:10.000Z")
    assert [r["dedupe_key"].split(":", 2)[2] for r in rows] == [f"stalled:{ch}" for ch in CHANNELS]
    assert rows[0]["text"] == "⏳ Step 1 is taking longer than usual"
    assert (
        rows[0]["detail"]
        == "Nightly import: Load rows has been running for 2 min; it usually takes under 1 min."
    )


def test_no_stall_within_history_without_history_or_while_paused() -> None:
    view, now = running_view(100, 10)  # 110 s < 2 x 60 s
    assert stalled_steps(view, STATS, now, factor=2, min_samples=3, min_ms=1000) == []
    view, now = running_view(100, 30)
    assert stalled_steps(view, {}, now, factor=2, min_samples=3, min_ms=1000) == []  # no history: no claim
    few = {("load rows", "simple"): {"count": 2, "p90_ms": 1.0}}
    assert stalled_steps(view, few, now, factor=2, min_samples=3, min_ms=1000) == []
    assert stalled_steps({**view, "status": "paused"}, STATS, now, factor=2, min_samples=3, min_ms=1000) == []
