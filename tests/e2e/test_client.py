"""The worker SDK against real servers: pause and resume mid-step, a SIGKILLed server, cancel, the shell form.

The big test runs `tests/e2e/client_worker.py` in its own process and reads its journal: every report the
client had acknowledged is in the event log exactly once, even those whose answers were lost to the kill.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import nats
import pytest

from client import AsyncTracker, Cancelled, Options, ProgressdError, Rejected, RetryPolicy, Tracker
from client.cli import EXIT_CANCELLED, EXIT_OK, EXIT_REFUSED, report
from infra.relay import Subjects
from infra.settings import Settings
from infra.store import open_store
from tests.conftest import unique_name
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll until `probe` returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def phase(path: Path, name: str, **fields: Any) -> dict[str, Any] | None:
    for entry in read_journal(path):
        if entry.get("phase") == name and all(entry.get(k) == v for k, v in fields.items()):
            return entry
    return None


def stored_events(data_dir: Path, task_id: str) -> list[tuple[str, str | None]]:
    """(event type, idempotency key) of each of the task's events, straight from the event store."""
    app = open_store(Settings(data_dir=data_dir))
    try:
        out = []
        for item in app.recorder.select_events(UUID(task_id)):
            event = app.mapper.to_domain_event(item)
            idem = getattr(event, "idem", None)
            out.append(
                (type(event).__qualname__.rpartition(".")[2], idem.rpartition(":")[0] if idem else None)
            )
        return out
    finally:
        app.close()


def stream_messages(url: str, stream: str) -> int:
    async def count() -> int:
        nc = await nats.connect(url)
        try:
            return int((await nc.jetstream().stream_info(stream)).state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the shorter tests of this module."""
    srv = ServerProcess(tmp_path_factory.mktemp("client-e2e"))
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("transport", ["http", pytest.param("nats", marks=pytest.mark.nats)])
def test_a_worker_is_paused_resumed_survives_a_sigkill_and_is_cancelled(
    tmp_path: Path, server_factory: type[ServerProcess], transport: str, request: pytest.FixtureRequest
) -> None:
    """Over HTTP, and over NATS request/reply (the worker's URL is nats://; the gateway answers on the
    subjects of its own prefix, and the killed gateway is 'no responders' until it is back)."""
    env = {}
    if transport == "nats":
        nats_url = request.getfixturevalue("nats_url")
        env = {"PROGRESSD_NATS_URL": nats_url, "PROGRESSD_NATS_PREFIX": unique_name("worker")}
    server = server_factory(tmp_path, env=env)
    server.start()
    journal = tmp_path / "journal.jsonl"
    worker_log = tmp_path / "worker.log"
    worker_url = env["PROGRESSD_NATS_URL"] if env else server.url
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.client_worker", worker_url, str(journal)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    try:
        tid = wait_for(lambda: phase(journal, "created"), "the worker to create its task")["task_id"]
        api = httpx.Client(base_url=f"{server.url}/api/tasks/{tid}", timeout=10)

        # -- paused and resumed mid-step ------------------------------------------------------------------
        wait_for(lambda: api.get("/progress").json()["steps"][0]["progress"] >= 3, "step 1 to move")
        assert api.post("/pause").json()["status"] == "paused"
        wait_for(lambda: any(e.get("event") == "paused" for e in read_journal(journal)), "the worker to wait")
        held = api.get("/progress").json()
        time.sleep(0.6)
        still = api.get("/progress").json()
        assert still["version"] == held["version"], "the worker reported while paused"
        assert still["steps"][0]["status"] == "paused"
        assert api.post("/resume").json()["status"] == "running"

        # -- the server is killed and restarted while the worker keeps reporting ----------------------------
        wait_for(lambda: phase(journal, "step", order=2), "step 2")
        wait_for(lambda: len(api.get("/logs").json()["logs"]) >= 10, "a few step 2 reports")
        api.close()
        server.kill()
        time.sleep(1.0)  # the worker's reports fail and back off meanwhile
        server.start()  # the same port: conftest's ServerProcess keeps self.port
        retried = wait_for(lambda: phase(journal, "retried"), "the worker to get through")
        wait_for(lambda: phase(journal, "step", order=3), "step 3")

        # -- cancelled ------------------------------------------------------------------------------------
        api = httpx.Client(base_url=f"{server.url}/api/tasks/{tid}", timeout=10)
        time.sleep(0.3)
        assert api.post("/cancel", json={"reason": "customer changed plans"}).status_code == 200
        assert worker.wait(timeout=30) == 0, worker_log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    entries = read_journal(journal)
    assert phase(journal, "cancelled") == {"phase": "cancelled", "reason": "customer changed plans"}
    view = api.get("/progress").json()
    assert view["status"] == "cancelled"
    assert [s["status"] for s in view["steps"][:2]] == ["completed", "completed"]
    assert all(sub["done"] for sub in view["steps"][1]["substeps"])
    assert view["steps"][2]["status"] != "failed"  # a cancel is not a failure of the step

    # exactly once: no key twice in the log, and every report the client saw acknowledged is in it
    events = stored_events(tmp_path, tid)
    keys = Counter(key for _, key in events if key is not None)
    assert [key for key, n in keys.items() if n > 1] == []
    acked = [e for e in entries if e.get("method") == "POST" and e.get("status") in (200, 201)]
    assert acked, "the journal has no acknowledged calls"
    missing = [e for e in acked if keys[e["key"]] != 1]
    assert missing == []
    # nothing was applied between the pause and the resume
    types = [kind for kind, _ in events]
    paused = types.index("Paused")
    assert types[paused + 1] == "Resumed"

    # every tick of step 2 was logged once, in order, across the kill
    logs = [line["message"] for line in api.get("/logs", params={"limit": 5000}).json()["logs"]]
    ticks = [int(m.rpartition(" ")[2]) for m in logs if m.startswith("ui tick ")]
    assert ticks == list(range(1, len(ticks) + 1))
    assert ticks[-1] >= retried["tick"] + 20
    api.close()

    if transport == "nats":  # the gateway's relay used the same prefix: its stream holds every event once
        stream = Subjects(env["PROGRESSD_NATS_PREFIX"]).stream
        wait_for(
            lambda: stream_messages(env["PROGRESSD_NATS_URL"], stream) == len(events), f"{stream} to fill"
        )

    stats = phase(journal, "stats")
    assert stats is not None and stats["retries"] >= 1
    retries = [e for e in entries if e.get("delay") is not None]
    print(
        f"\nworker: {stats['calls']} calls, {stats['requests']} requests, {stats['retries']} retries "
        f"({Counter(e['reason'].split(':')[0] for e in retries)}), {stats['replayed']} replayed, "
        f"{stats['paused_waits']} pause waits; {len(events)} events, {len(keys)} keys"
    )


class LosesFirstAnswers(httpx.BaseTransport):
    """Sends every request to the real server, but loses the answer to the first try of each POST: the
    server has committed, the client sees a dropped connection (what a crash after the commit looks like)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.lost: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        key = request.headers.get("idempotency-key")
        if request.method == "POST" and key not in self.lost:
            response.read()
            response.close()
            self.lost.append(key)
            raise httpx.ReadError("connection reset after the server committed", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_report_whose_answer_was_lost_is_retried_and_applied_once(server: ServerProcess) -> None:
    lossy = LosesFirstAnswers()
    options = Options(retry=RetryPolicy(base=0.01, cap=0.05), progress_interval=0.0)
    steps = [{"name": "Create database tables", "substeps": ["Customers"]}]
    with httpx.Client(transport=lossy) as client:
        tracker = Tracker.create("Lossy network", steps=steps, url=server.url, options=options, client=client)
        with tracker.step(1) as step:
            step.progress(40)
            step.substep_done(1)
            step.log("created 3 tables")
    assert len(lossy.lost) == 6  # create, start, progress, substep, log, complete: each answer lost once
    assert (tracker.stats.retries, tracker.stats.replayed) == (6, 6)
    assert tracker.status == "completed"
    events = stored_events(server.data_dir, tracker.task_id)
    assert [kind for kind, _ in events] == [
        "Created",
        "StepStarted",
        "Progressed",
        "SubstepDone",
        "Logged",
        "StepCompleted",
        "TaskCompleted",
    ]
    assert [key for _, key in events if key] == lossy.lost


def test_the_token_is_presented_as_a_bearer_and_a_worker_token_can_report_and_check(
    tmp_path: Path, server_factory: type[ServerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROGRESSD_TOKEN", raising=False)
    made = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "create", "--role", "worker", "--owner", "alice"],
        env={**os.environ, "PROGRESSD_DATA_DIR": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = made.stdout.strip()
    server = server_factory(tmp_path)
    server.start()
    with pytest.raises(ProgressdError) as refused:
        Tracker.create("Anonymous", steps=["a"], url=server.url)
    assert refused.value.status == 401
    options = Options(check_interval=0.0)
    with Tracker.create("CRM", steps=["a"], url=server.url, token=token, options=options) as tracker:
        with tracker.step(1) as step:
            step.progress(50)
            step.log("as a worker")
            tracker.check()  # reads the task's progress with the same token
        assert tracker.refresh()["status"] == "completed"
        assert tracker.view["owner"] == "alice"


def test_the_quickstart_runs_as_written(server: ServerProcess) -> None:
    env = {**os.environ, "PROGRESSD_URL": server.url}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    task_id, _, status = done.stdout.strip().partition(": ")
    assert status == "completed"
    view = httpx.get(f"{server.url}/api/tasks/{task_id}/progress").json()
    assert view["title"] == "Cellphone Store CRM"
    assert [s["status"] for s in view["steps"]] == ["completed", "completed"]
    assert view["steps"][1]["substeps"] == [
        {"name": "Customers", "done": True},
        {"name": "Sales", "done": True},
    ]
    logs = httpx.get(f"{server.url}/api/tasks/{task_id}/logs").json()["logs"]
    assert [line["message"] for line in logs] == [
        f"created table {t}" for t in ("customers", "products", "sales")
    ]


def latest_task(server: ServerProcess) -> dict[str, Any]:
    task: dict[str, Any] = httpx.get(f"{server.url}/api/tasks", params={"limit": 1}).json()["tasks"][0]
    return task


def progressd_run(server: ServerProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The shell form as a process: `python -m client.cli run ...` (what `progressd run` calls)."""
    return subprocess.run(
        [sys.executable, "-m", "client.cli", "--url", server.url, "run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_run_wraps_a_failing_command_as_a_failed_one_step_task(server: ServerProcess) -> None:
    done = progressd_run(server, "--", "sh", "-c", "echo a; echo b; echo oops >&2; exit 3")
    assert done.returncode == 3
    assert done.stdout == "a\nb\n"  # the command's output still reaches the terminal
    tid = latest_task(server)["task_id"]
    assert f"task {tid}" in done.stderr
    view = httpx.get(f"{server.url}/api/tasks/{tid}/progress").json()
    assert view["title"] == "sh -c 'echo a; echo b; echo oops >&2; exit 3'"
    assert view["status"] == "failed"
    assert view["steps"][0]["error"] == "exit code 3\noops"
    logs = httpx.get(f"{server.url}/api/tasks/{tid}/logs").json()["logs"]
    assert sorted((line["level"], line["message"]) for line in logs) == [
        ("info", "a"),
        ("info", "b"),
        ("warning", "oops"),
    ]
    assert [line["message"] for line in logs if line["level"] == "info"] == ["a", "b"]


def test_run_completes_on_exit_0_and_terminates_the_command_on_cancel(server: ServerProcess) -> None:
    done = progressd_run(server, "--title", "nightly import", "--", "true")
    assert done.returncode == 0
    task = latest_task(server)
    assert (task["title"], task["status"]) == ("nightly import", "completed")

    started = time.monotonic()
    runner = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "--url", server.url, "run", "--", "sleep", "30"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tid = wait_for(
        lambda: next((t["task_id"] for t in [latest_task(server)] if t["title"] == "sleep 30"), None),
        "the wrapped command's task",
    )
    httpx.post(f"{server.url}/api/tasks/{tid}/cancel", json={"reason": "enough"})
    _, err = runner.communicate(timeout=20)
    assert runner.returncode == 128 + 15  # SIGTERM, as a shell reports it
    assert time.monotonic() - started < 15
    assert "was cancelled" in err
    assert httpx.get(f"{server.url}/api/tasks/{tid}/progress").json()["status"] == "cancelled"


def test_run_still_runs_the_command_when_the_server_is_unreachable() -> None:
    from tests.e2e.conftest import free_port

    script = (
        "import sys\n"
        "from client import Options, RetryPolicy\n"
        "from client.cli import run\n"
        f"url = 'http://127.0.0.1:{free_port()}'\n"
        "brief = Options(RetryPolicy(deadline=0.3))\n"
        "sys.exit(run(['sh', '-c', 'echo hi; exit 5'], url=url, options=brief))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 5
    assert done.stdout == "hi\n"
    assert "not reporting this run" in done.stderr


@pytest.mark.parametrize("transport", ["http", "nats"])
def test_an_unreachable_server_gives_up_with_unavailable_at_the_deadline(transport: str) -> None:
    """Nothing listens: the first connection fails (over NATS too, whose client would otherwise keep trying
    forever), each attempt is retried, and the call ends with Unavailable once the deadline has passed."""
    from client import Unavailable
    from tests.e2e.conftest import free_port

    url = f"{transport}://127.0.0.1:{free_port()}"
    options = Options(retry=RetryPolicy(deadline=1.5, timeout=0.5, base=0.05, cap=0.2))
    started = time.monotonic()
    with pytest.raises(Unavailable, match="gave up after") as raised:
        Tracker.create("nobody home", steps=["one"], url=url, options=options)
    assert 1.0 <= time.monotonic() - started < 10
    assert raised.value.status == 503


def test_report_drives_a_task_from_the_shell_form(server: ServerProcess) -> None:
    created = httpx.post(
        f"{server.url}/api/tasks",
        json={"title": "script", "steps": [{"name": "load", "substeps": ["a", "b"]}, {"name": "ship"}]},
    ).json()
    tid = created["task_id"]
    out, err = io.StringIO(), io.StringIO()

    def say(*words: str, **options: Any) -> int:
        return report(tid, words, url=server.url, out=out, err=err, **options)

    assert say("step", "1", "start") == EXIT_OK
    assert say("step", "1", "progress", "40") == EXIT_OK
    assert say("step", "1", "substep", "2") == EXIT_OK
    assert say("log", "loaded 3 files", level="warning", step=1) == EXIT_OK
    assert say("step", "1", "complete") == EXIT_OK
    assert say("step", "2", "start") == EXIT_OK
    assert say("pause") == EXIT_OK
    assert say("pause") == EXIT_REFUSED
    assert "illegal-transition" in err.getvalue()
    assert say("resume") == EXIT_OK
    assert say("step", "2", "fail", "disk full") == EXIT_OK
    assert say("step", "2", "retry") == EXIT_OK
    assert say("cancel", "no more") == EXIT_OK
    assert say("step", "2", "progress", "50") == EXIT_CANCELLED
    assert say("step", "2", "progress", "50", as_json=True) == EXIT_CANCELLED
    lines = out.getvalue().splitlines()
    assert lines[1] == f"{tid} running 20% step 1/2 load"  # step 1 at 40%, half the task's weight
    assert lines[2] == f"{tid} running 25% step 1/2 load"  # one substep of two: 50% beats the reported 40%
    view = httpx.get(f"{server.url}/api/tasks/{tid}/progress").json()
    assert view["status"] == "cancelled" and view["error"] == "no more"
    logs = httpx.get(f"{server.url}/api/tasks/{tid}/logs").json()["logs"]
    assert [(line["level"], line["message"], line["step"]) for line in logs] == [
        ("warning", "loaded 3 files", 1)
    ]


@pytest.mark.parametrize("transport", ["http", pytest.param("nats", marks=pytest.mark.nats)])
def test_the_asyncio_tracker_awaits_approval_and_rejection(
    transport: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """People decide over HTTP; the worker reports over HTTP or over NATS (its waits read the task's
    progress with the progress query)."""
    if transport == "nats":
        nats_url = request.getfixturevalue("nats_url")
        env = {"PROGRESSD_NATS_URL": nats_url, "PROGRESSD_NATS_PREFIX": unique_name("aio")}
        server: ServerProcess = request.getfixturevalue("server_factory")(tmp_path, env=env)
        server.start()
        worker_url = nats_url
        request.getfixturevalue("monkeypatch").setenv("PROGRESSD_NATS_PREFIX", env["PROGRESSD_NATS_PREFIX"])
    else:
        server = request.getfixturevalue("server")
        worker_url = server.url
    options = Options(retry=RetryPolicy(deadline=10), poll_min=0.05, poll_max=0.2)
    steps: list[str | dict[str, Any]] = [
        "Create database tables",
        {"name": "Deploy", "requires_approval": True},
        "Notify",
    ]

    async def decide(tid: str, order: int, verdict: str, comment: str) -> None:
        async with httpx.AsyncClient(base_url=server.url) as people:
            for _ in range(200):
                view = (await people.get(f"/api/tasks/{tid}/progress")).json()
                if view["steps"][order - 1]["status"] == "approval":
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            answer = await people.post(f"/api/tasks/{tid}/steps/{order}/{verdict}", json={"comment": comment})
            assert answer.status_code == 200

    async def scenario() -> tuple[dict[str, Any], str | None]:
        async with await AsyncTracker.create(
            "Release", steps=steps, url=worker_url, options=options
        ) as tracker:
            async with tracker.step(1) as step:
                await step.progress(50)
                approver = asyncio.create_task(decide(tracker.task_id, 1, "approve", "go"))
                await step.await_approval("Migrate the production database?")  # returns once approved
                await approver
            approver = asyncio.create_task(decide(tracker.task_id, 2, "approve", "ok"))
            async with tracker.step(2):  # requires approval: entering it waits
                await approver
            rejecter = asyncio.create_task(decide(tracker.task_id, 3, "reject", "not on a Friday"))
            comment = None
            try:
                async with tracker.step(3) as step:
                    await step.await_approval("Email every customer?")
            except Rejected as exc:
                comment = exc.comment
            await rejecter
            await tracker.check()
            return await tracker.refresh(), comment

    view, comment = asyncio.run(scenario())
    assert comment == "not on a Friday"
    assert [s["status"] for s in view["steps"]] == ["completed", "completed", "failed"]
    assert view["status"] == "failed"
    assert view["steps"][2]["error"] == "rejected: not on a Friday"


def test_cancelled_reaches_an_asyncio_worker(server: ServerProcess) -> None:
    options = Options(check_interval=0.05, poll_min=0.05)

    async def scenario() -> str | None:
        tracker = await AsyncTracker.create("Doomed", steps=["work"], url=server.url, options=options)
        try:
            async with tracker.step(1) as step:
                await tracker.cancel("no longer needed")
                await step.progress(10)
        except Cancelled as exc:
            return exc.reason
        finally:
            await tracker.aclose()
        return None

    assert asyncio.run(scenario()) == "no longer needed"
