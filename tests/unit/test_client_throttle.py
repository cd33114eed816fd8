"""The progress throttle: one value per interval goes out, the latest held-back one wins and is flushed."""

from __future__ import annotations

from client.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_value_per_interval_goes_out_and_the_latest_held_back_value_wins() -> None:
    clock = Clock()
    throttle = Throttle(0.5, clock)
    assert throttle.offer(10) == 10  # the first tick goes at once
    throttle.mark_sent(10)
    for value in (11, 12, 13):
        clock.now += 0.1
        assert throttle.offer(value) is None
    assert throttle.due() is None  # 0.3 s since the last send
    clock.now += 0.25
    assert throttle.due() == 13  # past the interval: the next call flushes the latest
    assert throttle.due() is None and throttle.take() is None
    clock.now += 0.1
    assert throttle.offer(14) is None
    assert throttle.take() == 14  # a transition flushes it regardless of the interval


def test_an_unchanged_value_is_never_sent_again() -> None:
    clock = Clock()
    throttle = Throttle(0.5, clock)
    throttle.mark_sent(40)
    clock.now += 10
    assert throttle.offer(40) is None
    assert throttle.offer(41) == 41
    clock.now += 0.1
    assert throttle.offer(42) is None
    throttle.mark_sent(41)
    assert throttle.offer(41) is None  # back to what the server has: nothing is held back any more
    assert throttle.take() is None


def test_a_value_offered_while_another_is_in_flight_is_held_back() -> None:
    clock = Clock()
    throttle = Throttle(0.5, clock)
    assert throttle.offer(10) == 10
    assert throttle.offer(20) is None  # a second coroutine, while 10 is still on its way (asyncio)
    throttle.mark_sent(10)
    assert throttle.take() == 20
