"""Verifying recovery: on samples taken after the action ended, the playbook's criteria hold AND the conditions
that opened the incident no longer do. Either alone is not recovery."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from .agent_view import FLEET
from .conflicts import without_conflicts
from .criteria import FLEET_CRITERIA, active, check_criteria
from .fleet_reader import FleetReader
from .incident import Incident
from .upstream_deadline import deadline as upstream_deadline
from .upstreams import DeadlinePassed, UpstreamError, prometheus_problem

RECOVERED = "criteria held and the incident's conditions cleared on fresh samples"


@dataclass(frozen=True)
class VerifyResult:
    """The verdict, why, the per-criterion results, what still held, and the agent's latest metrics (`after`)."""

    ok: bool
    reason: str
    checks: Mapping[str, bool]
    after: Mapping[str, float]
    polls: int
    still_true: tuple[str, ...] = ()
    after_fresh: bool = False
    after_note: str | None = field(default=None)


def judge(checks: Mapping[str, bool], still_true: Iterable[str], unknown: Iterable[str]) -> tuple[bool, str]:
    """Recovered only when every criterion held, no condition of the incident still holds, and none is unknown."""
    failed = [name for name, held in checks.items() if not held]
    still_true, unknown = list(still_true), list(unknown)
    parts = []
    if failed:
        parts.append(f"criteria not met on fresh samples: {', '.join(failed)}")
    if still_true:
        parts.append(f"{'' if failed else 'criteria held but '}{', '.join(still_true)} still true")
    if unknown:
        parts.append(f"cannot re-check {'; '.join(unknown)}")
    return (not parts), ("; ".join(parts) if parts else RECOVERED)


@dataclass(frozen=True)
class Verification:
    """What to verify for one attempt: the criteria, for which agents, on samples newer than ACTION_END."""

    incident: Incident
    criteria: Mapping[str, object]
    action_end: float
    agents: tuple[str, ...]  # whose criteria and conditions must hold (the agent, or a conflict's claimants)
    fresh_agents: tuple[str, ...]  # who must have reported since the action (the above and the steps' targets)
    foreign_conflicts: tuple[str, ...] = ()  # conflicts other incidents own: not this one's to judge


def verify_recovery(reader: FleetReader, what: Verification, timeout: float, interval: float, budget_cap: float,
                    stop: threading.Event | None = None, clock: Callable[[], float] = time.time) -> VerifyResult:
    """Poll until recovered on fresh samples, or TIMEOUT passes; never raises for an unreachable upstream."""
    stop = stop or threading.Event()
    wanted = active(what.criteria)
    deadline = clock() + timeout
    with upstream_deadline(time.time() + timeout):  # no upstream call may outlast the verification
        return _poll(reader, what, wanted, deadline, interval, budget_cap, stop, clock)


def _poll(reader: FleetReader, what: Verification, wanted: Mapping[str, object], deadline: float, interval: float,
          budget_cap: float, stop: threading.Event, clock: Callable[[], float]) -> VerifyResult:
    last = None
    while True:
        last = look(reader, what, wanted, budget_cap, last)
        if last.ok:
            return last
        if clock() >= deadline or stop.wait(min(interval, max(0.0, deadline - clock()))):
            return last


def look(reader: FleetReader, what: Verification, wanted: Mapping[str, object], budget_cap: float,
         last: VerifyResult | None = None) -> VerifyResult:
    """One look at the latest samples: ok when recovered on fresh ones, else why not yet. What this look could
    not learn (an upstream down, the time up) is carried over from the LAST one."""
    polls = (last.polls if last else 0) + 1
    reason, checks, true = (last.reason, dict(last.checks), list(last.still_true)) if last else ("not verified", {}, [])
    after, after_fresh, note = (dict(last.after), last.after_fresh, last.after_note) if last else ({}, False, None)
    try:
        stale = reader.stale(what.fresh_agents, what.action_end)
        views = {a: without_conflicts(reader.view(a), what.foreign_conflicts) for a in what.agents}
        main = views.get(what.incident.agent) or views[what.agents[0]]
        after, after_fresh, note = main.metrics, not stale, main.problem
        problems = [v.problem for v in views.values() if v.problem]
        if problems:
            raise UpstreamError(problems[0])
        if stale:
            reason = f"no sample newer than the action yet from {', '.join(stale)}"
            note = "the latest samples, from before the action ended"
        else:
            spend = reader.fleet_spend() if FLEET_CRITERIA & set(wanted) else None
            per_agent = {a: (v.signal, v.facts) for a, v in views.items() if a != FLEET}
            checks = check_criteria(wanted, per_agent, spend, budget_cap)
            true, unknown = reader.conditions(what.incident, what.agents, what.foreign_conflicts)
            ok, reason = judge(checks, true, unknown)
            if ok:
                return VerifyResult(True, reason, checks, after, polls, (), True)
    except DeadlinePassed:
        pass  # the time is up: the last look's reason says why it did not verify
    except UpstreamError as exc:
        reason = note = prometheus_problem(exc)
    return VerifyResult(False, reason, checks, after, polls, tuple(true), after_fresh, note)


def result_as_dict(result: VerifyResult) -> dict:
    return {"ok": result.ok, "reason": result.reason, "checks": dict(result.checks), "after": dict(result.after),
            "polls": result.polls, "still_true": list(result.still_true), "after_fresh": result.after_fresh,
            "after_note": result.after_note}


def result_from_dict(doc: Mapping) -> VerifyResult:
    return VerifyResult(bool(doc["ok"]), doc["reason"], dict(doc.get("checks") or {}), dict(doc.get("after") or {}),
                        int(doc.get("polls") or 0), tuple(doc.get("still_true") or ()), bool(doc.get("after_fresh")),
                        doc.get("after_note"))
