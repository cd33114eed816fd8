"""Tenancy: two owners cannot see or touch each other's tasks by any route; roles, 401s, limits, origins."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.app import create_app
from gateway.auth import AuthError, Buckets, TokenCache
from gateway.notify_routes import NOTIFY_ROUTES
from gateway.routes import ROUTES
from infra.settings import Settings
from infra.store import open_store
from infra.tokens import Principal, Role, TokenStore, hash_token
from tests.integration.tokenkit import make_tokens

PLAN = {
    "title": "Alice's CRM",
    "steps": [{"name": "a", "substeps": ["x"]}, {"name": "b", "requires_approval": True}],
}


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    return make_tokens(
        tmp_path,
        {
            "alice": (Role.OWNER, "alice"),
            "alice_worker": (Role.WORKER, "alice"),
            "bob": (Role.OWNER, "bob"),
            "admin": (Role.ADMIN, "ops"),
        },
    )


@pytest.fixture
def client(tmp_path: Path, tokens: dict[str, str]) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False, base_url="http://localhost") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def alice_task(client: TestClient, tokens: dict[str, str]) -> str:
    response = client.post("/api/tasks", json=PLAN, headers=bearer(tokens["alice_worker"]))
    assert response.status_code == 201, response.text
    tid: str = response.json()["task_id"]
    assert response.json()["owner"] == "alice"
    return tid


def concrete(path: str, tid: str) -> str:
    return re.sub(r"\{order(:int)?\}|\{n(:int)?\}", "1", path.replace("{task_id}", tid)).replace(
        "{action}", "pause"
    )


def task_routes() -> list[tuple[str, str]]:
    out = []
    for route in [*ROUTES, *NOTIFY_ROUTES]:
        assert isinstance(route, Route)
        if "{task_id}" in route.path:
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    out.append((method, route.path))
    return out


@pytest.mark.parametrize(("method", "path"), task_routes())
def test_another_owners_task_is_404_on_every_route(
    client: TestClient, tokens: dict[str, str], method: str, path: str
) -> None:
    tid = alice_task(client, tokens)
    before = client.get(f"/api/tasks/{tid}/events", headers=bearer(tokens["alice"])).json()["events"]
    body: Any = {"message": "hi"} if path.endswith("/logs") and method == "POST" else None
    response = client.request(method, concrete(path, tid), json=body, headers=bearer(tokens["bob"]))
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    after = client.get(f"/api/tasks/{tid}/events", headers=bearer(tokens["alice"])).json()["events"]
    assert after == before
    # the owner and an admin do see it
    for who in ("alice", "admin"):
        assert client.get(f"/api/tasks/{tid}/progress", headers=bearer(tokens[who])).status_code == 200


def test_lists_are_scoped_to_the_owner(client: TestClient, tokens: dict[str, str]) -> None:
    tid = alice_task(client, tokens)
    bobs = client.post(
        "/api/tasks", json={"title": "Bob's", "steps": [{"name": "a"}]}, headers=bearer(tokens["bob"])
    )
    assert [
        t["task_id"] for t in client.get("/api/tasks", headers=bearer(tokens["alice"])).json()["tasks"]
    ] == [tid]
    assert [
        t["task_id"] for t in client.get("/api/tasks", headers=bearer(tokens["bob"])).json()["tasks"]
    ] == [bobs.json()["task_id"]]
    assert len(client.get("/api/tasks", headers=bearer(tokens["admin"])).json()["tasks"]) == 2


def test_missing_or_bad_tokens_get_401_before_anything_else(
    client: TestClient, tokens: dict[str, str]
) -> None:
    for headers in ({}, bearer("pd_nope"), {"Authorization": "Basic abc"}):
        response = client.post("/api/tasks", content=b"{broken", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["type"] == "/problems/unauthorized"
    assert client.get("/healthz").status_code == 200


def test_workers_report_but_people_approve(client: TestClient, tokens: dict[str, str]) -> None:
    tid = alice_task(client, tokens)
    worker = bearer(tokens["alice_worker"])
    for path in ("steps/1/start", "steps/1/complete", "steps/2/start"):
        assert client.post(f"/api/tasks/{tid}/{path}", headers=worker).status_code == 200
    refused = client.post(f"/api/tasks/{tid}/steps/2/approve", headers=worker)
    assert refused.status_code == 403 and refused.json()["type"] == "/problems/forbidden"
    approved = client.post(f"/api/tasks/{tid}/steps/2/approve", headers=bearer(tokens["alice"]))
    assert approved.status_code == 200 and approved.json()["steps"][1]["status"] == "running"


def test_revoked_tokens_stop_working(tmp_path: Path, tokens: dict[str, str]) -> None:
    store = TokenStore(Settings(data_dir=tmp_path))
    token_id, token = store.create(Role.OWNER, "carol")
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as c:
        assert c.get("/api/tasks", headers=bearer(token)).status_code == 200
    assert store.revoke(token_id)
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as c:
        assert c.get("/api/tasks", headers=bearer(token)).status_code == 401


def test_commands_are_rate_limited_per_token(tmp_path: Path, tokens: dict[str, str]) -> None:
    with TestClient(
        create_app(Settings(data_dir=tmp_path, rate_limit=5)), base_url="http://localhost"
    ) as client:
        limited_run(client, tokens)


def limited_run(client: TestClient, tokens: dict[str, str]) -> None:
    tid = alice_task(client, tokens)
    statuses = [
        client.post(
            f"/api/tasks/{tid}/logs", json={"message": f"line {i}"}, headers=bearer(tokens["alice_worker"])
        )
        for i in range(150)
    ]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, "no request was limited"
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["type"] == "/problems/rate-limited"
    # another token is not affected
    assert client.post(f"/api/tasks/{tid}/pause", headers=bearer(tokens["alice"])).status_code == 409


def test_websocket_commands_share_the_tokens_rate_limit(tmp_path: Path, tokens: dict[str, str]) -> None:
    """Commands over a socket draw on the same per-token bucket as HTTP; a limited one gets a typed error
    (429, rate-limited), changes nothing, and the socket stays open."""
    with TestClient(
        create_app(Settings(data_dir=tmp_path, rate_limit=5)), base_url="http://localhost"
    ) as client:
        tid = alice_task(client, tokens)
        client.post(f"/api/tasks/{tid}/steps/1/start", headers=bearer(tokens["alice_worker"]))
        with client.websocket_connect(f"/ws/tasks/{tid}", headers=bearer(tokens["alice"])) as ws:
            assert ws.receive_json()["type"] == "snapshot"
            ids = [f"c{i}" for i in range(30)]
            for i, frame_id in enumerate(ids):
                ws.send_json({"type": "pause" if i % 2 == 0 else "resume", "id": frame_id})
            answers: dict[str, dict[str, Any]] = {}
            while len(answers) < len(ids):
                message = ws.receive_json()
                if message.get("id") in ids:
                    answers[message["id"]] = message
            ws.send_json({"type": "ping", "id": "still-open"})
            while (pong := ws.receive_json())["type"] != "pong":
                pass
            assert pong["id"] == "still-open"
    acked = [a for a in answers.values() if a["type"] == "ack"]
    limited = [a for a in answers.values() if a["type"] == "error"]
    assert acked and limited
    assert {(a["code"], a["status"]) for a in limited} == {("rate-limited", 429)}
    events = client_events(tmp_path, tid)
    assert events.count("Paused") + events.count("Resumed") == len(acked)  # limited ones wrote nothing


def client_events(tmp_path: Path, tid: str) -> list[str]:
    """The task's event types, read from the store itself."""
    app = open_store(Settings(data_dir=tmp_path))
    try:
        return [e["type"] for e in app.task_events(UUID(tid))]
    finally:
        app.close()


def test_binary_websocket_frames_get_a_typed_error(client: TestClient, tokens: dict[str, str]) -> None:
    tid = alice_task(client, tokens)
    with client.websocket_connect(f"/ws/tasks/{tid}", headers=bearer(tokens["alice"])) as ws:
        assert ws.receive_json()["type"] == "snapshot"
        ws.send_bytes(b'{"type": "pause", "id": "b1"}')
        error = ws.receive_json()
    assert (error["type"], error["code"], error["status"]) == ("error", "binary-frame", 400)
    assert "binary" in error["detail"]
    events = client.get(f"/api/tasks/{tid}/events", headers=bearer(tokens["alice"])).json()["events"]
    assert "Paused" not in [e["type"] for e in events]


def test_websockets_need_a_token_and_see_only_their_owner(client: TestClient, tokens: dict[str, str]) -> None:
    tid = alice_task(client, tokens)
    with client.websocket_connect("/ws/tasks") as ws:
        ws.send_text('{"type": "ping"}')
        assert ws.receive_json()["code"] == "unauthorized"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4401
    # header auth: bob cannot open alice's task
    with client.websocket_connect(f"/ws/tasks/{tid}", headers=bearer(tokens["bob"])) as ws:
        assert ws.receive_json()["code"] == "task-not-found"
    # first-message auth (what a browser does): alice sees her task
    with client.websocket_connect(f"/ws/tasks/{tid}") as ws:
        ws.send_json({"type": "auth", "token": tokens["alice"]})
        snapshot = ws.receive_json()
        assert snapshot["type"] == "snapshot" and snapshot["task_id"] == tid
    # bob's all-tasks stream has no snapshot of alice's task
    with client.websocket_connect("/ws/tasks", headers=bearer(tokens["bob"])) as ws:
        client.post(f"/api/tasks/{tid}/steps/1/start", headers=bearer(tokens["alice_worker"]))
        bobs = client.post(
            "/api/tasks", json={"title": "Bob's", "steps": [{"name": "a"}]}, headers=bearer(tokens["bob"])
        )
        first = ws.receive_json()
        assert first["type"] == "task_created" and first["task_id"] == bobs.json()["task_id"]


def test_foreign_origins_are_refused(client: TestClient, tokens: dict[str, str]) -> None:
    headers = {**bearer(tokens["alice"]), "Origin": "https://evil.example"}
    with client.websocket_connect("/ws/tasks", headers=headers) as ws:
        assert ws.receive_json()["code"] == "forbidden-origin"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4403


def test_security_headers(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"


def test_refuses_to_serve_beyond_loopback_without_tokens(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, host="0.0.0.0"))
    with pytest.raises(AuthError, match="without API tokens"), TestClient(app, base_url="http://localhost"):
        pass


def test_local_mode_on_loopback_without_tokens(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as c:
        created = c.post("/api/tasks", json=PLAN)
        assert created.status_code == 201 and created.json()["owner"] == "local"


def test_the_first_token_ends_local_mode_on_a_running_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.auth.CACHE_SECONDS", 0.05)
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as c:
        assert c.post("/api/tasks", json=PLAN).status_code == 201  # local mode: no token needed
        store = TokenStore(Settings(data_dir=tmp_path))
        token_id, token = store.create(Role.OWNER, "carol")  # `progressd token create`, server running
        time.sleep(0.1)
        refused = c.get("/api/tasks")
        assert refused.status_code == 401, refused.text
        with c.websocket_connect("/ws/tasks") as ws:
            ws.send_text('{"type": "ping"}')  # not an auth frame: refused
            assert ws.receive_json()["code"] == "unauthorized"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 4401
        mine = c.get("/api/tasks", headers=bearer(token))
        assert mine.status_code == 200 and mine.json()["tasks"] == []  # local's task is not carol's
        # Revoking every token on loopback opens local mode again, as a restart would.
        assert store.revoke(token_id)
        time.sleep(0.1)
        assert c.get("/api/tasks").status_code == 200


def test_revoking_every_token_on_a_public_address_locks_every_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.auth.CACHE_SECONDS", 0.05)
    store = TokenStore(Settings(data_dir=tmp_path))
    token_id, token = store.create(Role.OWNER, "carol")
    with TestClient(
        create_app(Settings(data_dir=tmp_path, host="0.0.0.0")), base_url="http://localhost"
    ) as c:
        assert c.get("/api/tasks", headers=bearer(token)).status_code == 200
        assert store.revoke(token_id)
        time.sleep(0.1)
        assert c.get("/api/tasks").status_code == 401
        assert c.get("/api/tasks", headers=bearer(token)).status_code == 401


def test_a_token_store_outage_is_a_503_answered_by_the_auth_layer_itself(
    tmp_path: Path, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not left to the outermost handler, which re-raises to the server: it then drops the connection
    with the body unread, and a client can read a reset instead of the 503."""
    from eventsourcing.persistence import OperationalError

    def down(self: TokenStore, token: str) -> None:
        raise OperationalError("the token store is unreachable")

    with TestClient(
        create_app(Settings(data_dir=tmp_path)), base_url="http://localhost"
    ) as c:  # raises what escapes to the server
        monkeypatch.setattr(TokenStore, "resolve_hash", down)
        answer = c.post("/api/tasks", json=PLAN, headers=bearer("pd_not_cached_yet"))
        assert answer.status_code == 503, answer.text
        assert answer.json()["type"] == "/problems/store-unavailable"
        assert answer.headers["retry-after"] == "2"


def test_unknown_tokens_leave_nothing_in_the_cache(tmp_path: Path, tokens: dict[str, str]) -> None:
    """Misses are never cached, hits are keyed by the token's hash, and an over-long token (over 512 bytes,
    over HTTP or in a socket's auth frame) is refused before any lookup."""
    lookups: list[str] = []
    app = create_app(Settings(data_dir=tmp_path))
    with TestClient(app, base_url="http://localhost") as c:
        auth = app.state.auth
        real = auth.tokens.resolve_hash

        def counted(token_hash: str) -> Any:
            lookups.append(token_hash)
            return real(token_hash)

        auth.tokens.resolve_hash = counted
        for i in range(500):
            assert c.get("/api/tasks", headers=bearer(f"pd_unknown_{i:04d}_" + "x" * 400)).status_code == 401
        assert len(auth._cache) == 0 and auth._cache.bytes == 0
        assert len(lookups) == 500
        too_long = c.get("/api/tasks", headers=bearer("x" * 513))
        assert too_long.status_code == 401 and "512 bytes" in too_long.json()["detail"]
        with c.websocket_connect("/ws/tasks") as ws:
            ws.send_json({"type": "auth", "token": "é" * 257})  # 257 characters, 514 bytes
            assert ws.receive_json()["code"] == "unauthorized"
        assert len(lookups) == 500  # neither reached the token store
        assert c.get("/api/tasks", headers=bearer(tokens["alice"])).status_code == 200
        assert list(auth._cache._items) == [hash_token(tokens["alice"])]  # never the token itself


def test_the_token_cache_is_bounded_in_entries_and_bytes() -> None:
    cache = TokenCache(entries=3, budget=10_000)
    for i in range(10):
        cache.put(f"k{i}", Principal(Role.OWNER, "o"), 0.0)
    assert len(cache) == 3 and cache.get("k9", 0.0, 5) is not None and cache.get("k0", 0.0, 5) is None
    cache = TokenCache(entries=1000, budget=5_000)
    for i in range(100):
        cache.put(f"k{i}", Principal(Role.OWNER, "o" * 500), 0.0)
    assert cache.bytes <= 5_000 and 0 < len(cache) < 10


def test_a_revoked_tokens_socket_command_is_refused_and_closes_4401(
    tmp_path: Path, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every socket command checks the token again (through the cache): once revoked, a `pause` is refused,
    nothing is written, and the socket closes with 4401."""
    monkeypatch.setattr("gateway.auth.CACHE_SECONDS", 0.05)
    monkeypatch.setattr(
        "gateway.ws.RECHECK_SECONDS", 3600.0, raising=False
    )  # only the command's own check can see it
    store = TokenStore(Settings(data_dir=tmp_path))
    token_id, token = store.create(Role.OWNER, "alice")
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as c:
        tid = alice_task(c, tokens)
        c.post(f"/api/tasks/{tid}/steps/1/start", headers=bearer(tokens["alice_worker"]))
        with c.websocket_connect(f"/ws/tasks/{tid}", headers=bearer(token)) as ws:
            assert ws.receive_json()["type"] == "snapshot"
            assert store.revoke(token_id)
            time.sleep(0.1)
            ws.send_json({"type": "pause", "id": "after-revoke"})
            error = ws.receive_json()
            assert (error["type"], error["code"], error["status"]) == ("error", "unauthorized", 401)
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 4401
    assert "Paused" not in client_events(tmp_path, tid)


def test_rate_limit_buckets_are_bounded_and_keep_the_busy_ones() -> None:
    """A flood of client addresses (local mode keys buckets by address) cannot grow the table past its bound,
    and a client that has used its burst keeps its bucket while full (idle) ones are dropped first."""
    buckets = Buckets(rate=1.0, entries=100)
    for _ in range(2):
        assert buckets.take("busy") == 0.0
    assert buckets.take("busy") > 0
    for i in range(10_000):
        buckets.take(f"ip:127.0.{i // 256}.{i % 256}")
    assert len(buckets) <= 100
    assert buckets.take("busy") > 0  # still limited: its spent bucket outlived the flood
