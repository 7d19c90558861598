"""How long the receiver waits for an upstream: the client timeout, this thread's deadline, and the patience
of a round of asking again."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

TIMEOUT_SECONDS = 5.0
MAX_PATIENCE = 8  # a round waits at most 8 client timeouts (40 s) for one answer


class UpstreamError(RuntimeError):
    """An upstream could not be reached or answered badly; the message says which and why."""


class DeadlinePassed(UpstreamError):
    """The caller's deadline passed: the upstream was not asked (or not waited for) any longer."""


class UpstreamSlow(UpstreamError):
    """The upstream did not answer within the client timeout: busy, perhaps, rather than down."""


_local = threading.local()


@contextmanager
def deadline(at: float):
    """Bound every upstream call of this thread, inside the block, by the moment AT (the earliest of nested ones)."""
    outer = getattr(_local, "at", None)
    _local.at = at if outer is None else min(outer, at)
    try:
        yield
    finally:
        _local.at = outer


@contextmanager
def patience(rounds: int):
    """Inside the block, wait up to 2**(ROUNDS-1) client timeouts (at most MAX_PATIENCE) for each answer."""
    outer = getattr(_local, "patience", 1)
    _local.patience = min(MAX_PATIENCE, 2 ** max(0, rounds - 1))
    try:
        yield
    finally:
        _local.patience = outer


def time_left() -> float | None:
    """Seconds to this thread's deadline, or None outside any."""
    return None if getattr(_local, "at", None) is None else _local.at - time.time()


def client_timeout() -> float:
    """The client timeout this thread's patience allows."""
    return TIMEOUT_SECONDS * getattr(_local, "patience", 1)


def request_timeout() -> float:
    """The timeout for the next request: the client timeout, cut to the deadline; DeadlinePassed once it passed."""
    left = time_left()
    if left is not None and left <= 0:
        raise DeadlinePassed("the deadline passed before the upstream could answer")
    return client_timeout() if left is None else min(client_timeout(), left)
