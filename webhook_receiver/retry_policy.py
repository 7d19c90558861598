"""An immutable retry policy for action calls, in the manner of urllib3's Retry.

    policy = playbooks.retry                 # attempts=3: three tries in all
    while True:
        try: return call()
        except TransientError:
            policy = policy.increment()      # a new object; the old one is unchanged
            if policy.exhausted: raise
            time.sleep(policy.backoff())     # 0.5 s, 1 s, 2 s, ... capped, +/- jitter
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from autonomy.settings import Settings

_RNG = random.Random()
_MAX_EXPONENT = 60  # 2**60 times any sane base is far beyond any cap; avoids OverflowError


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; `used` of them have failed so far."""

    attempts: int = 3
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 5.0
    jitter: float = 0.2
    used: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("attempts", "used"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "attempts" else 0):
                problems.append(f"{name} must be a whole number of at least {1 if name == 'attempts' else 0}, "
                                f"got {value!r}")
        for name in ("backoff_seconds", "max_backoff_seconds", "jitter"):
            value = getattr(self, name)
            if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                    or value < 0):
                problems.append(f"{name} must be a number of at least 0, got {value!r}")
        if not problems and self.jitter > 1:
            problems.append(f"jitter must be a fraction from 0 to 1, got {self.jitter!r}")
        if not problems and self.max_backoff_seconds < self.backoff_seconds:
            problems.append(f"max_backoff_seconds ({self.max_backoff_seconds!r}) is below "
                            f"backoff_seconds ({self.backoff_seconds!r})")
        if problems:
            raise ValueError("; ".join(problems))

    def increment(self) -> "RetryPolicy":
        """A new policy with one more failed try; ValueError if this one is already exhausted."""
        if self.exhausted:
            raise ValueError(f"retry policy exhausted: {self.used} of {self.attempts} tries used")
        return replace(self, used=self.used + 1)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.attempts

    @property
    def remaining(self) -> int:
        return max(0, self.attempts - self.used)

    def backoff(self, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next try: 0 before any failure, then backoff_seconds * 2**(used-1),
        capped at max_backoff_seconds, times (1 +/- jitter); never negative, never above the cap."""
        if self.used == 0:
            return 0.0
        base = min(self.max_backoff_seconds,
                   self.backoff_seconds * 2.0 ** min(self.used - 1, _MAX_EXPONENT))
        if self.jitter:
            base *= 1.0 + (rng or _RNG).uniform(-self.jitter, self.jitter)
        return min(self.max_backoff_seconds, max(0.0, base))


def attempt_policy(settings: Settings) -> RetryPolicy:
    """The spacing of attempts: AUTOREM_ATTEMPT_BACKOFF_SECONDS before the second, doubling, capped at 4x."""
    base = settings.attempt_backoff_seconds
    return RetryPolicy(attempts=settings.max_attempts, backoff_seconds=base, max_backoff_seconds=base * 4,
                       jitter=0.1 if base else 0.0)
