"""The simulated fleet's ground truth: when each agent's condition really began and ended, and what ended it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

FLEET = "fleet"  # the fleet-wide condition (spend over the cap) is the fleet's, as the budget alert's agent label
OVER_BUDGET = "over-budget"
# The conditions the truth tracks. A fault's own name where the fault is the condition; `stale-inputs` for a
# dependent whose source failed, `over-budget` for the fleet while a cost spike is not throttled.
KINDS = ("timeout", "silent", "overlap", "missing-secret", "backlog", "source-down", "stale-inputs", OVER_BUDGET)


@dataclass(frozen=True)
class Interval:
    """One condition of one agent, from its start to its end (None: still holding), and what ended it:
    `action:<primitive>` (the layer), `self` (it healed by itself), `operator` (a person), `drain`."""

    agent: str
    kind: str
    start: float
    end: float | None
    fixable: bool
    cause: str | None = None

    def holds_at(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)

    def as_dict(self) -> dict:
        return {"agent": self.agent, "kind": self.kind, "start": self.start, "end": self.end,
                "fixable": self.fixable, "cause": self.cause}


def conditions_of(agent, slo_backlog_minutes: float, shared: frozenset[str] | set[str] = frozenset(),
                  slo_align: float = 0.95) -> dict[str, bool]:
    """AGENT's (a SimAgent's) conditions now, each with whether the layer can fix it; SHARED: the directives
    more than one agent holds."""
    faults = agent.faults
    out: dict[str, bool] = {}
    if "timeout" in faults or not agent.last_task_ok:  # healthy again only once the failed task was retried
        out["timeout"] = faults.get("timeout", True)
    for kind in ("silent", "missing-secret", "source-down"):
        if kind in faults:
            out[kind] = faults[kind]
    if "overlap" in faults or agent.alignment < slo_align or agent.directive in shared:
        out["overlap"] = faults.get("overlap", True)
    if agent.backlog_minutes > slo_backlog_minutes or agent.queue_depth > 5:
        out["backlog"] = faults.get("backlog", True)
    if not agent.inputs_valid:
        out["stale-inputs"] = True
    return out


class TruthLog:
    """Intervals of every condition, fed by `observe` after each change of the fleet (not thread-safe: the
    fleet calls it under its own lock)."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], tuple[float, bool]] = {}
        self._closed: list[Interval] = []

    def observe(self, now: float, current: Iterable[tuple[str, str, bool]], cause: str) -> None:
        """CURRENT: every (agent, kind, fixable) holding at NOW; what stopped holding ends with CAUSE."""
        seen = set()
        for agent, kind, fixable in current:
            seen.add((agent, kind))
            self._open.setdefault((agent, kind), (now, fixable))
        for key in [k for k in self._open if k not in seen]:
            start, fixable = self._open.pop(key)
            self._closed.append(Interval(key[0], key[1], start, now, fixable, cause))

    def intervals(self) -> list[Interval]:
        """Every interval, ended or still open, by start."""
        still = [Interval(a, k, start, None, fixable) for (a, k), (start, fixable) in self._open.items()]
        return sorted(self._closed + still, key=lambda i: (i.start, i.agent, i.kind))
