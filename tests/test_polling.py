"""Waiting with deadlines: wait_while_progressing waits for slow work that moves and fails stuck work early."""
from __future__ import annotations

import pytest

from devstack import polling
from devstack.polling import DeadlineExceeded, wait_while_progressing


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(polling, "time", fake)
    return fake


def test_slow_work_that_keeps_moving_is_waited_for_past_the_stall_time(clock):
    done = wait_while_progressing(lambda: int(clock.now // 10), lambda n: n >= 50, stall=30, timeout=1000,
                                  what="the storm", interval=1)
    assert done == 50 and clock.now == pytest.approx(500)


def test_work_that_stops_moving_fails_after_the_stall_time_and_says_where_it_stood(clock):
    with pytest.raises(DeadlineExceeded, match=r"no progress in 30s waiting for the storm \(stuck at: 7\)"):
        wait_while_progressing(lambda: min(7, int(clock.now)), lambda n: n >= 50, stall=30, timeout=1000,
                               what="the storm", interval=1)
    assert clock.now == pytest.approx(37)


def test_moving_work_still_fails_at_the_overall_timeout(clock):
    with pytest.raises(DeadlineExceeded, match=r"timed out after 100s waiting for the storm \(last: 100\)"):
        wait_while_progressing(lambda: int(clock.now), lambda n: False, stall=30, timeout=100,
                               what="the storm", interval=1)


def test_work_already_done_returns_at_once(clock):
    assert wait_while_progressing(lambda: "done", lambda v: v == "done", stall=1, timeout=1, what="x") == "done"
    assert clock.now == 0
