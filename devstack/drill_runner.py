"""Running drills one after another with a progress line each: a failed drill is reported, the others still run."""
from __future__ import annotations

import time
from typing import Callable, Sequence

from .drills import DRILLS, DrillContext, DrillResult


def run_each(ctx: DrillContext, names: Sequence[str], say: Callable[[str], None],
             after_failure: Callable[[], None] | None = None) -> list[tuple[DrillResult, float]]:
    """Each named drill's result and how long it took, in seconds; AFTER_FAILURE runs after each failed one."""
    done = []
    for n, name in enumerate(names, start=1):
        say(f"[{n}/{len(names)}] {name}")
        started = time.monotonic()
        try:
            result = DRILLS[name](ctx)
        except Exception as exc:  # a failed drill is reported; the others still run
            result = DrillResult(name, False, None, None, 0, "skipped", None, f"{type(exc).__name__}: {exc}")
        seconds = time.monotonic() - started
        say(f"  -> {result.outcome}{' in %.1f s' % result.mttr_s if result.mttr_s else ''}: "
            f"{result.detail} ({'passed' if result.passed else 'FAILED'}, {seconds:.1f} s)")
        if not result.passed and after_failure is not None:
            try:
                after_failure()
            except Exception as exc:  # the next drill's own settling says whether the layer recovered
                say(f"  (cleaning up after {name} failed: {type(exc).__name__}: {exc})")
        done.append((result, seconds))
    return done
