"""The client's retry loop: which answers are retried, how long it waits, one key across all tries."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from client import ProgressdError, RetryPolicy, Stats, Unavailable
from client.effect import Call
from client.http import Endpoint, SyncDriver
from client.retry import parse_retry_after, send

URL = "http://progressd.test"
Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """Monotonic time that only moves when the driver sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def problem(status: int, slug: str, **headers: str) -> httpx.Response:
    body = {"type": f"/problems/{slug}", "title": slug, "status": status, "detail": slug}
    return httpx.Response(status, json=body, headers=headers)


def perform(
    handler: Handler,
    policy: RetryPolicy | None = None,
    token: str | None = None,
    clock: FakeClock | None = None,
) -> tuple[dict[str, object], list[httpx.Request], FakeClock, Stats]:
    """Run one keyed POST through the retry loop against `handler`; return the body and what was sent."""
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    clock = clock or FakeClock()
    stats = Stats()
    call = Call("POST", "/api/tasks/t/logs", {"message": "hi"}, "key-1")
    with httpx.Client(transport=httpx.MockTransport(recording)) as client:
        driver = SyncDriver(client, Endpoint(URL, token), sleep=clock.sleep)
        flow = send(call, policy or RetryPolicy(), clock, random.Random(7), stats)
        try:
            body = driver.run(flow)
        except ProgressdError as exc:
            exc.add_note(f"requests={len(seen)}")
            raise
    return body, seen, clock, stats


def flaky(failures: list[httpx.Response | type[httpx.TransportError]]) -> Handler:
    """Answer with each failure in turn (a response, or a transport error raised), then 200."""

    def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, httpx.Response):
                return failure
            raise failure("boom", request=request)
        return httpx.Response(200, json={"task_id": "t", "status": "running", "version": 3})

    return handler


def test_network_errors_and_gateway_statuses_are_retried_with_the_same_idempotency_key() -> None:
    failures: list[httpx.Response | type[httpx.TransportError]] = [
        httpx.ConnectError,
        httpx.ReadError,
        httpx.RemoteProtocolError,
        problem(502, "bad-gateway"),
        problem(503, "store-unavailable"),
        problem(504, "gateway-timeout"),
        httpx.ReadTimeout,
    ]
    body, seen, clock, stats = perform(flaky(failures))
    assert body["version"] == 3
    assert len(seen) == 8
    assert {r.headers["idempotency-key"] for r in seen} == {"key-1"}
    assert {r.content for r in seen} == {b'{"message":"hi"}'}
    assert len(clock.slept) == 7
    assert (stats.calls, stats.requests, stats.retries) == (1, 8, 7)


def test_client_errors_are_not_retried_and_carry_the_problem() -> None:
    for status, slug in ((409, "illegal-transition"), (422, "invalid-field"), (404, "task-not-found")):
        with pytest.raises(ProgressdError) as caught:
            perform(flaky([problem(status, slug)]))
        assert not isinstance(caught.value, Unavailable)
        assert caught.value.status == status
        assert caught.value.slug == slug
        assert caught.value.problem["type"] == f"/problems/{slug}"
        assert caught.value.__notes__ == ["requests=1"]


def test_a_500_is_not_retried() -> None:
    with pytest.raises(ProgressdError) as caught:
        perform(flaky([problem(500, "internal")]))
    assert caught.value.status == 500


def test_retry_after_is_honoured_on_503_and_429() -> None:
    failures: list[httpx.Response | type[httpx.TransportError]] = [
        problem(503, "store-unavailable", **{"Retry-After": "2"}),
        problem(429, "rate-limited", **{"Retry-After": "3"}),
    ]
    _, seen, clock, _ = perform(flaky(failures), RetryPolicy(base=0.1, cap=5.0))
    assert len(seen) == 3
    assert clock.slept[0] >= 2.0
    assert clock.slept[1] >= 3.0
    assert clock.slept[0] < 2.1  # the backoff (0.1 s ceiling) does not add to a longer Retry-After


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(base=0.1, cap=1.0)
    rng = random.Random(1)
    for retry, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0), (500, 1.0)):
        delays = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (retry, min(delays), max(delays))
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not lockstep


def test_the_deadline_bounds_the_whole_call_and_gives_up_with_unavailable() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    clock = FakeClock()
    with pytest.raises(Unavailable) as caught:
        perform(down, RetryPolicy(deadline=10.0, base=0.2, cap=2.0), clock=clock)
    exc = caught.value
    assert isinstance(exc.__cause__, httpx.ConnectError)
    assert exc.slug == "unreachable"
    assert "gave up after" in exc.detail
    assert sum(clock.slept) <= 10.0
    assert sum(clock.slept) > 10.0 - 2.0  # it used the time it had: the last wait did not fit
    assert exc.__notes__ == [f"requests={len(clock.slept) + 1}"]


def test_a_retry_after_longer_than_the_time_left_gives_up_instead_of_sleeping_past_the_deadline() -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        return problem(503, "store-unavailable", **{"Retry-After": "4"})

    clock = FakeClock()
    with pytest.raises(Unavailable) as caught:
        perform(busy, RetryPolicy(deadline=10.0), clock=clock)
    assert clock.slept == [4.0, 4.0]  # a third wait of 4 s would end past the 10 s deadline
    assert caught.value.status == 503
    assert caught.value.slug == "store-unavailable"  # the server's last problem, not a made-up one


def test_a_proxy_error_page_is_retried_and_becomes_a_problem() -> None:
    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with pytest.raises(Unavailable) as caught:
        perform(proxy, RetryPolicy(deadline=1.0))
    assert caught.value.status == 502
    assert caught.value.problem["title"] == "Bad Gateway"


def test_replayed_answers_are_counted_and_the_token_is_sent() -> None:
    def replay(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"task_id": "t", "status": "running"}, headers={"Idempotent-Replayed": "true"}
        )

    _, seen, _, stats = perform(replay, token="s3cret")
    assert stats.replayed == 1
    assert seen[0].headers["authorization"] == "Bearer s3cret"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2024, 1, 15, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
