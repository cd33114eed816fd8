"""The relay's messages: every Task event as a CloudEvents 1.0 structured JSON message that the CloudEvents
SDK reads back exactly as it would have written it, and that matches the published schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from domain.task import StepPlan, Task
from infra import eventschema
from infra.relay import CE_CONTENT_TYPE, Subjects, message
from infra.store import event_record

SUBJECTS = Subjects("unit")
SDK = JSONFormat()


def every_kind_of_event() -> list[Any]:
    """Three tasks whose histories hold each Task event type at least once."""
    plan = [
        StepPlan("Create database tables", substeps=("customers", "deals")),
        StepPlan("Review schema", requires_approval=True),
        StepPlan("Generate UI", weight=2.5),
        StepPlan("Docs"),
    ]
    at = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
    done = Task.plan("Build CRM app", "alice", plan, tables=3, at=at)
    done.start_step(1, at=at + timedelta(seconds=1))
    done.report_progress(1, 42.5, at=at + timedelta(seconds=2))
    done.complete_substep(1, 1)
    done.log("info", "customers table created ✓", 1)
    done.pause()
    done.resume()
    done.complete_step(1)
    done.request_approval(2, "Apply the schema?")
    done.approve(2, "bob")
    done.complete_step(2)
    done.start_step(3)
    done.fail_step(3, "timeout")
    done.retry_step(3)
    done.complete_step(3)
    done.skip_step(4)

    rejected = Task.plan("Import", "alice", plan[:2], at=at.astimezone(timezone(timedelta(hours=2))))
    rejected.start_step(1)
    rejected.complete_step(1)
    rejected.request_approval(2, "Go?")
    rejected.reject(2, "carol", "not today")
    rejected.mark_restarted(str(done.id))

    cancelled = Task.plan("Deploy", "alice", [StepPlan("Ship")])
    cancelled.cancel("changed my mind")
    return [*done.collect_events(), *rejected.collect_events(), *cancelled.collect_events()]


def sdk_event(domain_event: Any, position: int) -> CloudEvent:
    """The same event made with the CloudEvents SDK itself."""
    record = event_record(domain_event)
    return CloudEvent(
        {
            "id": f"{record['task_id']}:{record['seq']}",
            "source": "/progressd",
            "type": "dev.progressd.task." + record["type"],
            "subject": record["task_id"],
            "time": domain_event.timestamp,
            "datacontenttype": "application/json",
        },
        {**record, "position": position},
    )


def test_the_fixture_covers_every_event_type() -> None:
    kinds = {type(e).__qualname__.rpartition(".")[2] for e in every_kind_of_event()}
    assert kinds == set(eventschema.event_classes())


def test_every_message_reads_back_as_the_sdk_would_have_written_it() -> None:
    for position, event in enumerate(every_kind_of_event(), start=7):
        out = message(event, position, SUBJECTS)
        ours = SDK.read(None, out.payload)
        theirs = SDK.read(None, SDK.write(sdk_event(event, position)))
        assert ours.get_attributes() == theirs.get_attributes()
        assert ours.get_data() == theirs.get_data()
        assert json.loads(out.payload) == json.loads(SDK.write(sdk_event(event, position)))
        assert ours.get_specversion() == "1.0"
        assert ours.get_time() == event.timestamp  # the same instant, written with its zone
        data = ours.get_data()
        assert isinstance(data, dict)
        assert data["position"] == position
        assert out.position == position
        assert out.msg_id == ours.get_id() == f"{event.originator_id}:{event.originator_version}"
        assert out.subject == SUBJECTS.event(str(event.originator_id), data["type"])
        msgspec.json.decode(out.payload, type=eventschema.TASK_EVENT)  # strict: the published schema


def test_utc_times_end_in_z() -> None:
    events = [e for e in every_kind_of_event() if e.timestamp.utcoffset() == timedelta(0)]
    assert len(events) > 10
    for event in events:
        payload = json.loads(message(event, 1, SUBJECTS).payload)
        assert payload["time"].endswith("Z"), payload["time"]
        assert "+00:00" not in json.dumps(payload)


def test_content_type_names_structured_mode() -> None:
    assert CE_CONTENT_TYPE == SDK.CONTENT_TYPE
