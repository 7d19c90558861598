"""Waiting on a condition with a deadline, never a bare sleep."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """The condition did not hold before the deadline."""


class StopWaiting(RuntimeError):
    """Raised by a probe when waiting longer cannot help; wait_until lets it through."""


def wait_until(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call PROBE until it returns a truthy value, or raise DeadlineExceeded naming WHAT."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except StopWaiting:
            raise
        except Exception as exc:  # a probe may fail while the thing starts up
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise DeadlineExceeded(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def wait_while_progressing(measure: Callable[[], T], done: Callable[[T], bool], stall: float, timeout: float,
                           what: str, interval: float = 0.5) -> T:
    """Call MEASURE until DONE(its value); raise DeadlineExceeded naming WHAT and the last value once the value
    has not changed for STALL seconds, or after TIMEOUT however it moves.

    For work whose length depends on the machine's load (a storm on two busy cores): slow work that keeps
    moving is waited for; stuck work fails after STALL seconds and says where it stood.
    """
    start = changed_at = time.monotonic()
    seen = measure()
    while not done(seen):
        now = time.monotonic()
        if now - changed_at >= stall:
            raise DeadlineExceeded(f"no progress in {stall:g}s waiting for {what} (stuck at: {seen})")
        if now - start >= timeout:
            raise DeadlineExceeded(f"timed out after {timeout:g}s waiting for {what} (last: {seen})")
        time.sleep(interval)
        current = measure()
        if current != seen:
            seen, changed_at = current, time.monotonic()
    return seen
