"""Hostile and malformed input against a real server: each gets a clear error and changes nothing.

Only what tests/integration/test_api.py and tests/e2e/test_ws.py do not cover already: bad bytes inside
JSON strings, NUL characters, nesting inside command bodies, chunked oversized bodies, extreme numbers,
negative and huge step numbers, oversized headers, and binary, oversized and flooding WebSocket frames.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from gateway.openapi import build
from tests.e2e.conftest import ServerProcess
from tests.faults.harness import FIGURES, assert_problem, events, settle, verify

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLAN = {"title": "target", "steps": [{"name": "one", "substeps": ["a", "b"]}, {"name": "two"}]}
LOGS = "/api/tasks/{tid}/logs"
PROGRESS = "/api/tasks/{tid}/steps/1/progress"
REFUSED: list[str] = []  # what was tried, for the figures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("bad-input"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def task(server: ServerProcess) -> str:
    """A task with step 1 running: every command below would be legal if its input were not bad."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        tid: str = client.post("/api/tasks", json=PLAN).json()["task_id"]
        assert client.post(f"/api/tasks/{tid}/steps/1/start").status_code == 200
        return tid


@pytest.fixture(scope="module")
def other(server: ServerProcess) -> str:
    """Another task, for frames that name a task their socket is not about."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        tid: str = client.post("/api/tasks", json=PLAN).json()["task_id"]
        return tid


@pytest.fixture
def client(server: ServerProcess, task: str) -> Iterator[httpx.Client]:
    """A client; the test fails if the task's log or the whole log changed meanwhile."""
    with httpx.Client(base_url=server.url, timeout=10) as c:
        before = (events(c, task), c.get("/readyz").json()["head"])
        yield c
        assert (events(c, task), c.get("/readyz").json()["head"]) == before


NESTED = b"[" * 30_000 + b"]" * 30_000  # within the 64 KiB limit
HUGE = "9" * 4_301  # one digit past Python's int-length limit: int() raises ValueError
DEEP_ARRAYS = b"[" * 990 + b"]" * 990  # about the interpreter's recursion limit
DEEP_OBJECTS = b'{"a": ' * 990 + b"1" + b"}" * 990
WEBHOOK = "/api/chat/webhook"
HTTP_CASES: list[tuple[str, str, bytes, int, str]] = [
    ("bad UTF-8 inside a JSON string", LOGS, b'{"message": "caf\xe9"}', 400, "malformed-json"),
    ("bad UTF-8 in a title", "/api/tasks", b'{"title": "\xc3\x28", "steps": []}', 400, "malformed-json"),
    ("lone surrogate escape", LOGS, b'{"message": "\\ud800"}', 400, "malformed-json"),
    ("NUL in a log line", LOGS, b'{"message": "a\\u0000b"}', 422, "invalid-field"),
    ("NUL in a title", "/api/tasks", b'{"title": "\\u0000", "steps": [{"name": "a"}]}', 422, "invalid-field"),
    (
        "NUL in a step name",
        "/api/tasks",
        b'{"title": "t", "steps": [{"name": "\\u0000"}]}',
        422,
        "invalid-field",
    ),
    ("NUL in a failure text", "/api/tasks/{tid}/steps/1/fail", b'{"error": "\\u0000"}', 422, "invalid-field"),
    ("30k-deep array as a field", LOGS, b'{"message": ' + NESTED + b"}", 422, "invalid-field"),
    ("30k-deep array as the body", PROGRESS, NESTED, 422, "invalid-field"),
    ("30k-deep unclosed object", LOGS, b'{"a": ' * 9_000, 422, "invalid-field"),
    ("percent 1e308", PROGRESS, b'{"percent": 1e308}', 422, "invalid-field"),
    ("percent 1e999 (infinite)", PROGRESS, b'{"percent": 1e999}', 422, "invalid-field"),
    ("percent -1e308", PROGRESS, b'{"percent": -1e308}', 422, "invalid-field"),
    ("percent -0.5", PROGRESS, b'{"percent": -0.5}', 422, "invalid-field"),
    ('percent "NaN"', PROGRESS, b'{"percent": "NaN"}', 422, "invalid-field"),
    ('percent "Infinity"', PROGRESS, b'{"percent": "Infinity"}', 422, "invalid-field"),
    ("percent NaN token", PROGRESS, b'{"percent": NaN}', 400, "malformed-json"),
    ("percent Infinity token", PROGRESS, b'{"percent": Infinity}', 400, "malformed-json"),
    ("percent true", PROGRESS, b'{"percent": true}', 422, "invalid-field"),
    ("percent [50]", PROGRESS, b'{"percent": [50]}', 422, "invalid-field"),
    ("percent null", PROGRESS, b'{"percent": null}', 422, "invalid-field"),
    ("percent missing", PROGRESS, b"{}", 422, "invalid-field"),
    ("percent with an unknown field", PROGRESS, b'{"percent": 5, "eta": 3}', 422, "invalid-field"),
    ("log with an unknown field", LOGS, b'{"message": "x", "colour": "red"}', 422, "invalid-field"),
    ("message as a number", LOGS, b'{"message": 42}', 422, "invalid-field"),
    ("level not a level", LOGS, b'{"message": "x", "level": "fatal"}', 422, "invalid-field"),
    ('step as "1"', LOGS, b'{"message": "x", "step": "1"}', 422, "invalid-field"),
    ("step 0", LOGS, b'{"message": "x", "step": 0}', 422, "invalid-field"),
    ("step -1", LOGS, b'{"message": "x", "step": -1}', 422, "invalid-field"),
    ("body a JSON string", LOGS, b'"message"', 422, "invalid-field"),
    ("body a bare number", PROGRESS, b"50", 422, "invalid-field"),
    ("negative order", "/api/tasks/{tid}/steps/-1/start", b"", 404, "not-found"),
    ("order 0", "/api/tasks/{tid}/steps/0/progress", b'{"percent": 5}', 404, "step-not-found"),
    ("23-digit order", "/api/tasks/{tid}/steps/99999999999999999999999/start", b"", 404, "step-not-found"),
    ("negative substep", "/api/tasks/{tid}/steps/1/substeps/-1/done", b"", 404, "not-found"),
    ("substep 0", "/api/tasks/{tid}/steps/1/substeps/0/done", b"", 404, "step-not-found"),
    ("unknown task command", "/api/tasks/{tid}/explode", b"", 404, "unknown-command"),
    ("4,301-digit order", f"/api/tasks/{{tid}}/steps/{HUGE}/start", b"", 404, "step-not-found"),
    ("4,301-digit substep", f"/api/tasks/{{tid}}/steps/1/substeps/{HUGE}/done", b"", 404, "step-not-found"),
    (
        "990-deep arrays in a field the webhook ignores",
        WEBHOOK,
        b'{"text": "help", "x": ' + DEEP_ARRAYS + b"}",
        422,
        "invalid-field",
    ),
    (
        "990-deep objects in a field the webhook ignores",
        WEBHOOK,
        b'{"x": ' + DEEP_OBJECTS + b', "text": "help"}',
        422,
        "invalid-field",
    ),
    ("30k-deep arrays as a webhook field", WEBHOOK, b'{"x": ' + NESTED + b"}", 422, "invalid-field"),
    ("a repeated key", PROGRESS, b'{"percent": 5, "percent": 50}', 400, "malformed-json"),
    (
        "a repeated key in a log line",
        LOGS,
        b'{"message": "a", "level": "info", "message": "b"}',
        400,
        "malformed-json",
    ),
    (
        "a repeated key inside a step",
        "/api/tasks",
        b'{"title": "t", "steps": [{"name": "a"}, {"name": "b", "name": "c"}]}',
        400,
        "malformed-json",
    ),
    (
        "a repeated key the webhook reads",
        WEBHOOK,
        b'{"text": "help", "text": "pause"}',
        400,
        "malformed-json",
    ),
    (
        "a repeated key the webhook ignores",
        WEBHOOK,
        b'{"text": "help", "x": {"a": 1, "a": 2}}',
        400,
        "malformed-json",
    ),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "status", "slug"), HTTP_CASES, ids=[c[0] for c in HTTP_CASES]
)
def test_bad_bodies_and_paths(
    client: httpx.Client, task: str, name: str, path: str, body: bytes, status: int, slug: str
) -> None:
    response = client.post(path.format(tid=task), content=body, headers={"content-type": "application/json"})
    assert_problem(response, status, slug)
    REFUSED.append(name)


def cursor(text: str) -> str:
    """A `before` cursor in the form the server hands out (base64url of `created_at|task_id`)."""
    return base64.urlsafe_b64encode(text.encode()).decode()


PROGRESS_OF = "/api/tasks/{tid}/progress"
QUERY_CASES: list[tuple[str, str, dict[str, str]]] = [
    ("at before year 1 in UTC", PROGRESS_OF, {"at": "0001-01-01T00:00:00+14:00"}),
    ("at after year 9999 in UTC", PROGRESS_OF, {"at": "9999-12-31T23:59:59-14:00"}),
    ("at of 4,301 digits", PROGRESS_OF, {"at": HUGE}),
    ("cursor with NUL in its task id", "/api/tasks", {"before": cursor("2026-01-01T00:00:00.000Z|\x00")}),
    ("cursor of NUL only", "/api/tasks", {"before": cursor("\x00|\x00")}),
    ("cursor that is no instant", "/api/tasks", {"before": cursor("x|00000000-0000-0000-0000-000000000000")}),
]


def query_case_ids() -> list[str]:
    return [c[0] for c in QUERY_CASES]


@pytest.mark.parametrize(("name", "path", "params"), QUERY_CASES, ids=query_case_ids())
def test_bad_times_and_cursors(
    client: httpx.Client, task: str, name: str, path: str, params: dict[str, str]
) -> None:
    """Instants that overflow when moved to UTC, and cursors holding what no cursor holds (PostgreSQL refuses
    a NUL in text): 422 `invalid-query`, not 500."""
    assert_problem(client.get(path.format(tid=task), params=params), 422, "invalid-query")
    REFUSED.append(name)


def hostile_requests(task: str) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    """For every route in the OpenAPI document: each path parameter as a 4,301-digit number and as a NUL,
    each time parameter at the ends of the calendar, each cursor holding NUL, each other query parameter as
    a huge number or a NUL, and each body with ~1,000 levels of nesting (first in a field, then as the body).
    The other path parameters name the real task and step 1, so a body reaches its decoder."""
    out: list[tuple[str, str, dict[str, str], bytes | None]] = []
    good = {"task_id": task, "order": "1", "n": "1", "sub_id": "1"}
    for template, operations in build()["paths"].items():
        for method, op in operations.items():
            params = op.get("parameters", [])
            names = [p["name"] for p in params if p["in"] == "path"]

            def fill(template: str = template, names: list[str] = names, **bad: str) -> str:
                values = {**good, **bad}
                for name in names:
                    template = template.replace(f"{{{name}}}", values[name])
                return template

            for name in names:
                out += [(method, fill(**{name: HUGE}), {}, None), (method, fill(**{name: "%00"}), {}, None)]
            for p in params:
                if p["in"] != "query":
                    continue
                schema = p["schema"]
                if schema.get("format") == "date-time":
                    values = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
                elif p["name"] == "before":
                    values = [cursor("2026-01-01T00:00:00.000Z|\x00"), cursor("\x00|\x00")]
                else:
                    values = [HUGE, "\x00"]
                out += [(method, fill(), {p["name"]: value}, None) for value in values]
            if "requestBody" in op:
                out += [
                    (method, fill(), {}, b'{"x": ' + DEEP_ARRAYS + b"}"),
                    (method, fill(), {}, b'{"x": ' + DEEP_OBJECTS + b"}"),
                    (method, fill(), {}, DEEP_ARRAYS),
                ]
    return out


def refuse_every_hostile_shape(client: httpx.Client, task: str) -> int:
    """Send every hostile_requests() shape: each is a 4xx problem (never a 500, never accepted)."""
    tried = hostile_requests(task)
    for method, path, params, body in tried:
        response = client.request(
            method, path, params=params, content=body, headers={"content-type": "application/json"}
        )
        where = f"{method.upper()} {path[:100]} {str(params)[:100]} {(body or b'')[:30]!r}"
        assert 400 <= response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
        assert response.headers["content-type"] == "application/problem+json", where
    return len(tried)


def test_no_path_time_cursor_or_body_shape_answers_500(client: httpx.Client, task: str) -> None:
    count = refuse_every_hostile_shape(client, task)
    assert count > 100  # every route of the document, not a few
    FIGURES["hostile shapes per route"] = {"requests": count}
    REFUSED.append("4,301-digit path numbers, calendar-end instants, NUL cursors, deep bodies on every route")


BLANK = " \t\n\u3000"  # spaces, a tab, a newline, an ideographic space
BLANK_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("log line", LOGS, {"message": BLANK}, "$.message"),
    ("log line about a step", LOGS, {"message": BLANK, "level": "error", "step": 1}, "$.message"),
    (
        "substep name",
        "/api/tasks",
        {"title": "t", "steps": [{"name": "a", "substeps": ["b", BLANK]}]},
        "$.steps[0].substeps[1]",
    ),
    ("title", "/api/tasks", {"title": BLANK, "steps": [{"name": "a"}]}, "$.title"),
    ("step name", "/api/tasks", {"title": "t", "steps": [{"name": "a"}, {"name": BLANK}]}, "$.steps[1].name"),
    ("failure text", "/api/tasks/{tid}/steps/1/fail", {"error": BLANK}, "$.error"),
    ("approval message", "/api/tasks/{tid}/steps/1/approval", {"message": BLANK}, "$.message"),
]


@pytest.mark.parametrize(("name", "path", "body", "where"), BLANK_CASES, ids=[c[0] for c in BLANK_CASES])
def test_blank_texts_are_refused_naming_the_field(
    client: httpx.Client, task: str, name: str, path: str, body: dict[str, Any], where: str
) -> None:
    """Whitespace says nothing: a text that must say something is 422 `invalid-field` at its path (log lines
    and substep names used to be accepted blank). Optional texts (comment, result, reason) may be blank."""
    problem = assert_problem(client.post(path.format(tid=task), json=body), 422, "invalid-field")
    assert problem["errors"][0]["path"] == where
    REFUSED.append(f"blank {name}")


def test_nul_errors_name_the_field(client: httpx.Client) -> None:
    body = b'{"title": "t", "steps": [{"name": "ok"}, {"name": "a", "substeps": ["b", "c\\u0000"]}]}'
    problem = assert_problem(client.post("/api/tasks", content=body), 422, "invalid-field")
    assert problem["errors"][0]["path"] == "$.steps[1].substeps[1]"


def test_chunked_body_over_the_limit(client: httpx.Client, task: str) -> None:
    """No Content-Length to refuse early: the server stops reading at 64 KiB."""

    def chunks() -> Iterator[bytes]:
        yield b'{"message": "'
        for _ in range(40):
            yield b"x" * 4096
        yield b'"}'

    response = client.post(LOGS.format(tid=task), content=chunks())
    assert_problem(response, 413, "body-too-large")
    REFUSED.append("chunked body over 64 KiB")


@pytest.mark.parametrize(
    ("name", "headers", "slug"),
    [
        ("Idempotency-Key of 201 characters", {"Idempotency-Key": "k" * 201}, "bad-idempotency-key"),
        ("Idempotency-Key of 8 KiB", {"Idempotency-Key": "k" * 8192}, "bad-idempotency-key"),
        ("If-Match of 8 KiB", {"If-Match": "7" * 8192}, "bad-if-match"),
        ("If-Match beyond 18 digits", {"If-Match": '"9999999999999999999"'}, "bad-if-match"),
    ],
)
def test_bad_command_headers(
    client: httpx.Client, task: str, name: str, headers: dict[str, str], slug: str
) -> None:
    response = client.post(PROGRESS.format(tid=task), json={"percent": 5}, headers=headers)
    assert_problem(response, 400, slug)
    REFUSED.append(name)


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("1 MiB Idempotency-Key header", {"Idempotency-Key": "k" * (1 << 20)}),
        ("control character in a header", {"Idempotency-Key": "a\x7fb"}),
    ],
)
def test_oversized_and_invalid_headers_are_refused(
    client: httpx.Client, task: str, name: str, headers: dict[str, str]
) -> None:
    """A 4xx (from the app, or from the HTTP parser before the app) or a closed connection, never a crash."""
    try:
        response = client.post(PROGRESS.format(tid=task), json={"percent": 5}, headers=headers)
    except httpx.TransportError:
        pass
    else:
        assert 400 <= response.status_code < 500
    assert client.get("/healthz").status_code == 200
    REFUSED.append(name)


# ---- WebSocket --------------------------------------------------------------------------------------------


def ws_url(server: ServerProcess, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def next_message(ws: Any, limit: float = 10.0) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), limit))
        if message["type"] != "ping":
            return message


async def closed_with(ws: Any) -> int | None:
    """Read until the server closes; return its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def test_forged_frames_get_typed_errors(
    server: ServerProcess, other: str, client: httpx.Client, task: str
) -> None:
    frames: list[tuple[str | bytes, int]] = [
        (b"\x00\xff binary garbage", 400),
        (b'{"type": "pause"}', 400),  # a binary frame, even of good JSON: frames are text
        ('{"type": "explode"}', 422),
        (json.dumps({"type": "ack", "id": "x", "seq": 1}), 422),  # a server frame sent back
        (json.dumps({"type": "pause", "task_id": other}), 404),  # another task on this task's socket
        (json.dumps({"type": "pause", "id": "i" * 201}), 422),
        (json.dumps({"type": "approve", "step": -1}), 422),
        (json.dumps({"type": "cancel", "reason": "\u0000"}), 422),
        (json.dumps({"type": "auth", "token": "t" * 501}), 422),
    ]

    async def scenario() -> list[dict[str, Any]]:
        out = []
        async with websockets.connect(ws_url(server, f"/ws/tasks/{task}")) as ws:
            assert (await next_message(ws))["type"] == "snapshot"
            for frame, _ in frames:
                await ws.send(frame)
                out.append(await next_message(ws))
            await ws.send(json.dumps({"type": "ping", "id": "still-open"}))
            out.append(await next_message(ws))
        return out

    answers = asyncio.run(scenario())
    assert [(a["type"], a["status"]) for a in answers[:-1]] == [("error", status) for _, status in frames]
    assert answers[-1] == {"type": "pong", "id": "still-open"}
    assert len(events(client, other)) == 1
    REFUSED.append("forged WebSocket frames (binary, server types, foreign task, long id, NUL)")


def test_a_1_mib_text_frame_closes_the_socket(server: ServerProcess, client: httpx.Client, task: str) -> None:
    async def scenario() -> int | None:
        async with websockets.connect(ws_url(server, f"/ws/tasks/{task}")) as ws:
            await next_message(ws)
            await ws.send(json.dumps({"type": "cancel", "reason": "r" * (1 << 20)}))
            return await closed_with(ws)

    assert asyncio.run(scenario()) == 1009
    assert client.get("/healthz").status_code == 200
    REFUSED.append("1 MiB WebSocket text frame")


def test_floods_of_10k_frames(server: ServerProcess, client: httpx.Client, task: str) -> None:
    """10k garbage frames end the socket (1008); 10k pings are all answered; the server stays well."""

    async def garbage() -> int | None:
        async with websockets.connect(ws_url(server, f"/ws/tasks/{task}")) as ws:
            await next_message(ws)
            try:
                for _ in range(10_000):
                    await ws.send("garbage")
            except websockets.ConnectionClosed:
                pass
            return await closed_with(ws)

    async def pings() -> int:
        async with websockets.connect(ws_url(server, f"/ws/tasks/{task}")) as ws:
            await next_message(ws)
            for i in range(10_000):
                await ws.send(f'{{"type": "ping", "id": "{i}"}}')
            pongs = 0
            while pongs < 10_000:
                pongs += (await next_message(ws))["type"] == "pong"
            return pongs

    started = time.monotonic()
    assert asyncio.run(garbage()) == 1008
    assert asyncio.run(pings()) == 10_000
    assert client.get("/healthz").status_code == 200
    FIGURES["WebSocket floods"] = {
        "garbage_frames": 10_000,
        "pings": 10_000,
        "s": round(time.monotonic() - started, 1),
    }
    REFUSED.append("10k garbage frames, 10k pings")


def test_a_flood_of_one_command_applies_it_once(server: ServerProcess) -> None:
    """2,000 copies of one command frame (same id): one event; every copy is answered, acknowledged with that
    event's seq or, past the token's command rate, refused as rate-limited."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        tid = client.post("/api/tasks", json=PLAN).json()["task_id"]
        client.post(f"/api/tasks/{tid}/steps/1/start")
        before = len(events(client, tid))

        async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            async with websockets.connect(ws_url(server, f"/ws/tasks/{tid}")) as ws:
                await next_message(ws)
                for _ in range(2_000):
                    await ws.send('{"type": "pause", "id": "once"}')
                acks: list[dict[str, Any]] = []
                limited: list[dict[str, Any]] = []
                while len(acks) + len(limited) < 2_000:
                    message = await next_message(ws)
                    if message["type"] == "ack":
                        acks.append(message)
                    elif message["type"] == "error":
                        limited.append(message)
                    else:
                        assert message["type"] in ("paused", "progress"), message
                return acks, limited

        acks, limited = asyncio.run(scenario())
        log = events(client, tid)
        assert len(log) == before + 1 and log[-1]["type"] == "Paused"
        assert acks and {a["seq"] for a in acks} == {log[-1]["seq"]}
        assert {(e["code"], e["status"], e["id"]) for e in limited} <= {("rate-limited", 429, "once")}


def test_the_server_is_intact_after_all_that(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        settle(client)
    assert server.proc is not None and server.proc.poll() is None
    verify(server)
    FIGURES["bad input"] = {"refused_kinds": len(REFUSED)}


@pytest.mark.postgres
def test_hostile_shapes_on_postgres(tmp_path: Path, server_factory: type[ServerProcess], pg_url: str) -> None:
    """The same refusals on PostgreSQL, where a NUL in a text parameter is a DataError (it was a 500)."""
    server = server_factory(tmp_path, pg_url)
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        tid = client.post("/api/tasks", json=PLAN).json()["task_id"]
        head = client.get("/readyz").json()["head"]
        for _, path, params in QUERY_CASES:
            assert_problem(client.get(path.format(tid=tid), params=params), 422, "invalid-query")
        refuse_every_hostile_shape(client, tid)
        assert client.get("/readyz").json()["head"] == head
    server.stop()


@pytest.mark.postgres
def test_nul_cannot_stall_postgres_read_models(
    tmp_path: Path, server_factory: type[ServerProcess], pg_url: str
) -> None:
    """A NUL used to be accepted into the log, and PostgreSQL text columns then refused it for good:
    every read model stopped at that event. Now it is refused up front and the views keep up."""
    server = server_factory(tmp_path, pg_url)
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        tid = client.post("/api/tasks", json=PLAN).json()["task_id"]
        nul = client.post(LOGS.format(tid=tid), content=b'{"message": "a\\u0000b"}')
        assert_problem(nul, 422, "invalid-field")
        fine = client.post(LOGS.format(tid=tid), json={"message": "fine"})
        assert fine.status_code == 200 and "progressd-view-lag" not in fine.headers
        settle(client, timeout=10)
    server.stop()
