"""The NATS transport of the worker SDK: each API call the client makes maps to the subject and body the
gateway's NATS commands take, and a reply becomes the HTTP response it stands for."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import pytest

from client import Tracker
from client.effect import Call
from client.http import Endpoint
from client.natsdriver import NatsEndpoint, response, route
from infra.commands import CreateTaskIn
from infra.natscmd import COMMANDS

TID = "2f1c2a8e-8c5e-4d7b-9a57-0d6f3c1d2b11"
BASE = f"/api/tasks/{TID}"

CASES: list[tuple[Call, str, dict[str, Any] | None]] = [
    (Call("POST", "/api/tasks", {"title": "CRM", "steps": [{"name": "a"}]}), "p.commands.create", None),
    (Call("GET", f"{BASE}/progress"), f"p.queries.{TID}.progress", None),
    (Call("POST", f"{BASE}/steps/2/start"), f"p.commands.{TID}.start", {"order": 2}),
    (Call("POST", f"{BASE}/steps/1/progress", {"percent": 40}), f"p.commands.{TID}.progress", None),
    (Call("POST", f"{BASE}/steps/3/substeps/2/done"), f"p.commands.{TID}.substep", {"order": 3, "n": 2}),
    (Call("POST", f"{BASE}/steps/1/complete", {"result": "ok"}), f"p.commands.{TID}.complete", None),
    (Call("POST", f"{BASE}/steps/1/fail", {"error": "boom"}), f"p.commands.{TID}.fail", None),
    (Call("POST", f"{BASE}/steps/1/skip", {"reason": "n/a"}), f"p.commands.{TID}.skip", None),
    (Call("POST", f"{BASE}/steps/1/retry"), f"p.commands.{TID}.retry", {"order": 1}),
    (Call("POST", f"{BASE}/steps/4/approval", {"message": "ok?"}), f"p.commands.{TID}.approval", None),
    (
        Call("POST", f"{BASE}/logs", {"message": "hi", "level": "info", "step": 1}),
        f"p.commands.{TID}.log",
        None,
    ),
    (Call("POST", f"{BASE}/pause"), f"p.commands.{TID}.pause", {}),
    (Call("POST", f"{BASE}/resume"), f"p.commands.{TID}.resume", {}),
    (Call("POST", f"{BASE}/cancel", {"reason": "stop"}), f"p.commands.{TID}.cancel", None),
]


@pytest.mark.parametrize(("call", "subject", "body"), CASES, ids=[c[1].rpartition(".")[2] for c in CASES])
def test_every_call_maps_to_a_subject_and_body_the_gateway_decodes(
    call: Call, subject: str, body: dict[str, Any] | None
) -> None:
    got_subject, got_body = route(call, "p")
    assert got_subject == subject
    if call.method == "GET":
        assert got_body is None
        return
    if body is None:  # the body goes as it is, with the step's order from the path where there is one
        order = call.path.split("/steps/")[1].split("/")[0] if "/steps/" in call.path else None
        body = {**({"order": int(order)} if order else {}), **(call.body or {})}
    assert got_body == body
    name = subject.rpartition(".")[2]
    kind = CreateTaskIn if name == "create" else COMMANDS[name]
    msgspec.json.decode(json.dumps(got_body).encode(), type=kind)  # what the gateway does: no error


@pytest.mark.parametrize(
    "call",
    [Call("GET", "/healthz"), Call("DELETE", BASE), Call("POST", f"{BASE}/steps/x/y/z"), Call("GET", BASE)],
)
def test_a_path_the_client_never_builds_has_no_subject(call: Call) -> None:
    with pytest.raises(ValueError, match="no NATS subject"):
        route(call, "p")


def test_a_reply_becomes_the_response_it_stands_for() -> None:
    reply = {"status": 409, "headers": {"Content-Type": "application/problem+json"}, "body": {"slug": "x"}}
    got = response(json.dumps(reply).encode(), "p.commands.t.start")
    assert got.status_code == 409 and got.json() == {"slug": "x"}
    assert got.headers["content-type"] == "application/problem+json"
    ok = response(b'{"status": 200, "headers": {"Idempotent-Replayed": "true"}, "body": {"v": 1}}', "s")
    assert ok.status_code == 200 and ok.headers["idempotent-replayed"] == "true" and ok.json() == {"v": 1}
    for junk in (b"not json", b"[]", b'{"status": 200}', b'{"status": "x", "headers": {}, "body": {}}'):
        bad = response(junk, "p.queries.t.progress")
        assert bad.status_code == 502 and "p.queries.t.progress" in bad.json()["detail"]


def test_a_nats_url_picks_nats_and_the_prefix_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Endpoint("nats://127.0.0.1:4222").nats and Endpoint("tls://nats.example:4222").nats
    assert not Endpoint("http://127.0.0.1:8000").nats
    monkeypatch.delenv("PROGRESSD_NATS_PREFIX", raising=False)
    assert NatsEndpoint.resolve("nats://h:1").prefix == "progress"
    monkeypatch.setenv("PROGRESSD_NATS_PREFIX", "acme")
    assert NatsEndpoint.resolve("nats://h:1").prefix == "acme"
    assert NatsEndpoint.resolve("nats://h:1", "given").prefix == "given"


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "htp://127.0.0.1:8000", "http://", "nats:4222", "ftp://h"])
def test_a_url_that_cannot_work_is_refused_at_once(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match="must be http://host"):
        Tracker.create("CRM", steps=["a"], url=url)
    assert time.monotonic() - started < 1  # not a minute of retries
