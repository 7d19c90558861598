import dataclasses
import random

import pytest

from webhook_receiver.retry_policy import RetryPolicy


def test_defaults():
    p = RetryPolicy()
    assert (p.attempts, p.backoff_seconds, p.max_backoff_seconds, p.jitter, p.used) == (3, 0.5, 5.0, 0.2, 0)
    assert (p.remaining, p.exhausted) == (3, False)


def test_the_policy_is_immutable_and_increment_returns_a_new_one():
    p = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.used = 1
    q = p.increment()
    assert q is not p and (p.used, q.used) == (0, 1)
    assert q == RetryPolicy(used=1) and hash(q) == hash(RetryPolicy(used=1))
    assert (q.attempts, q.backoff_seconds, q.max_backoff_seconds, q.jitter) == (3, 0.5, 5.0, 0.2)


def test_exhaustion_after_attempts_failures():
    p = RetryPolicy(attempts=3)
    seen = []
    while not p.exhausted:
        p = p.increment()
        seen.append((p.used, p.remaining, p.exhausted))
    assert seen == [(1, 2, False), (2, 1, False), (3, 0, True)]
    with pytest.raises(ValueError, match="exhausted: 3 of 3"):
        p.increment()


def test_backoff_doubles_and_is_capped_without_jitter():
    p = RetryPolicy(attempts=10, backoff_seconds=0.5, max_backoff_seconds=5, jitter=0)
    assert p.backoff() == 0.0  # nothing has failed yet
    waits = []
    for _ in range(7):
        p = p.increment()
        waits.append(p.backoff())
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_backoff_with_a_seeded_rng_is_reproducible_and_within_the_jitter():
    def sequence(seed):
        rng, p, out = random.Random(seed), RetryPolicy(attempts=6), []
        for _ in range(5):
            p = p.increment()
            out.append(p.backoff(rng))
        return out

    waits = sequence(7)
    assert waits == sequence(7) and waits != sequence(8)
    rng = random.Random(7)
    expected = [min(5.0, min(5.0, 0.5 * 2 ** n) * (1 + rng.uniform(-0.2, 0.2))) for n in range(5)]
    assert waits == pytest.approx(expected)
    for n, wait in enumerate(waits[:3]):
        base = 0.5 * 2 ** n
        assert 0.8 * base <= wait <= 1.2 * base
    assert all(4.0 <= w <= 5.0 for w in waits[4:])  # at the cap, jitter only goes down


def test_backoff_is_never_negative_nor_above_the_cap():
    rng = random.Random(1)
    p = RetryPolicy(attempts=100, backoff_seconds=1, max_backoff_seconds=3, jitter=1.0)
    for _ in range(99):
        p = p.increment()
        assert 0.0 <= p.backoff(rng) <= 3.0


def test_many_failures_do_not_overflow():
    p = RetryPolicy(attempts=10_000, used=5_000, jitter=0)
    assert p.backoff() == 5.0


def test_the_module_rng_is_used_when_none_is_given():
    p = RetryPolicy(used=1)
    assert all(0.4 <= p.backoff() <= 0.6 for _ in range(50))


@pytest.mark.parametrize("kwargs, message", [
    ({"attempts": 0}, "attempts must be a whole number of at least 1, got 0"),
    ({"attempts": 2.5}, "attempts must be a whole number of at least 1, got 2.5"),
    ({"attempts": True}, "attempts must be a whole number of at least 1, got True"),
    ({"used": -1}, "used must be a whole number of at least 0, got -1"),
    ({"backoff_seconds": -0.1}, "backoff_seconds must be a number of at least 0, got -0.1"),
    ({"max_backoff_seconds": float("inf")}, "max_backoff_seconds must be a number of at least 0, got inf"),
    ({"jitter": 1.5}, "jitter must be a fraction from 0 to 1, got 1.5"),
    ({"backoff_seconds": 2, "max_backoff_seconds": 1}, "max_backoff_seconds (1) is below backoff_seconds (2)"),
])
def test_invalid_policies_are_refused(kwargs, message):
    with pytest.raises(ValueError) as caught:
        RetryPolicy(**kwargs)
    assert str(caught.value) == message
