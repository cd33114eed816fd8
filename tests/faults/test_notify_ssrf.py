"""Push endpoints are URLs an owner chooses and the server connects to: they must not reach the server's own
network. A real `progressd serve` refuses endpoints on internal addresses at registration (422), and a
subscription stored while that was allowed sends nothing once it is not: the delivery is dead, with the
reason, and the loopback receiver gets no request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.faults.harness import FIGURES
from tests.integration.notify_kit import Browser, Receiver

INTERNAL = [
    "https://127.0.0.1:8898/push/x",  # loopback
    "https://localhost:8898/push/x",  # a name that resolves to loopback
    "https://[::1]/push/x",
    "https://[::ffff:127.0.0.1]/push/x",  # IPv4-mapped IPv6
    "https://[::ffff:7f00:1]/push/x",
    "https://10.1.2.3/push/x",  # private
    "https://192.168.0.1/push/x",
    "https://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
    "https://[fe80::1]/push/x",
    "https://100.64.0.1/push/x",  # shared address space
    "https://224.0.0.1/push/x",  # multicast
    "https://0.0.0.0/push/x",  # unspecified
    "https://2130706433/push/x",  # 127.0.0.1 as one number
]
PLAN = {"title": "Nightly import", "steps": [{"name": "Load"}]}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def post(client: httpx.Client, path: str, body: Any = None) -> Any:
    r = client.post(path, json=body)
    assert r.status_code in (200, 201), (path, r.status_code, r.text)
    return r.json()


def test_push_endpoints_on_internal_addresses_are_refused(
    server_factory: type[ServerProcess], tmp_path: Path, receiver: Receiver
) -> None:
    server = server_factory(tmp_path / "strict", env={"PROGRESSD_PUSH_ALLOW_HTTP": "1"})
    (tmp_path / "strict").mkdir()
    server.start()
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=server.url, timeout=15) as api:
        for endpoint in [*INTERNAL, f"{receiver.url}/push/x"]:
            r = api.post("/api/push-subscriptions", json=Browser(endpoint).subscription())
            statuses[endpoint] = r.status_code
            assert r.status_code == 422, (endpoint, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            problem = r.json()
            assert problem["type"] == "/problems/endpoint-not-public", problem
            assert problem["errors"] == [{"path": "$.endpoint"}]
        assert api.get("/api/push-subscriptions").json()["subscriptions"] == []  # nothing was stored
        # A public endpoint is still accepted (an unresolvable name too: every send checks it again).
        for endpoint in ("https://8.8.8.8/push/x", "https://push.example/x"):
            r = api.post("/api/push-subscriptions", json=Browser(endpoint).subscription())
            assert r.status_code == 201, (endpoint, r.text)
    FIGURES["push endpoint refused"] = {
        "internal endpoints": len(statuses),
        "statuses": sorted(set(statuses.values())),
    }


def test_a_stored_internal_endpoint_is_not_contacted_after_restart(
    server_factory: type[ServerProcess], tmp_path: Path, receiver: Receiver
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {"PROGRESSD_PUSH_ALLOW_HTTP": "1", "PROGRESSD_NOTIFY_POLL": "0.05"}
    endpoint = f"{receiver.url}/push/laptop"
    allowed = server_factory(data, env={**env, "PROGRESSD_NOTIFY_ALLOW_PRIVATE": "1"})
    allowed.start()
    with httpx.Client(base_url=allowed.url, timeout=15) as api:
        post(api, "/api/push-subscriptions", Browser(endpoint).subscription())  # the operator allowed it
    allowed.stop()

    strict = server_factory(data, env=env)
    strict.start()
    with httpx.Client(base_url=strict.url, timeout=15) as api:
        assert [s["endpoint"] for s in api.get("/api/push-subscriptions").json()["subscriptions"]] == [
            endpoint
        ]
        tid = post(api, "/api/tasks", PLAN)["task_id"]
        post(api, f"/api/tasks/{tid}/steps/1/start")
        post(api, f"/api/tasks/{tid}/steps/1/fail", {"error": "disk full"})  # task_failed goes to push

        deadline = time.monotonic() + 20
        push: dict[str, Any] = {}
        while time.monotonic() < deadline:
            rows = api.get(f"/api/tasks/{tid}/notifications").json()["notifications"]
            push = next((r for r in rows if r["channel"] == "push" and r["kind"] == "task_failed"), {})
            if push.get("state") in ("sent", "dead"):
                break
            time.sleep(0.05)
    assert receiver.on("/push/") == []  # the server never connected to the loopback receiver
    assert push["state"] == "dead", push
    assert push["attempts"] == 1  # not retried: only the operator can allow it
    assert "127.0.0.1 (loopback)" in push["last_error"] and "not public" in push["last_error"], push
    FIGURES["stored loopback endpoint"] = {"state": push["state"], "error": push["last_error"]}
