"""The ground-truth checks of a soak: the layer's verdicts against what the simulated fleet really went through."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from .fleet_truth import FLEET, OVER_BUDGET

# How long each condition takes to become an alert, in unscaled seconds: its rule's `for:` (alert_rules/
# thresholds.yaml; AgentSilent adds the silence threshold) plus a minute for the scrape, the evaluations and
# Alertmanager's group wait. A condition shorter than this may rightly pass unnoticed; one that held longer
# than this before a "resolved" verdict should have been part of that verdict.
DETECT_SECONDS = {"timeout": 90, "silent": 240, "overlap": 120, "missing-secret": 90, "backlog": 180,
                  "source-down": 90, "stale-inputs": 90, OVER_BUDGET: 360}


@dataclass(frozen=True)
class Margins:
    """The checks' tolerances in wall seconds (a soak runs compressed): DETECT per kind; FRESH, how old the
    layer's freshest samples may be (heartbeat, scrape and evaluation); IN_FLIGHT, how long an attempt already
    past its gates may still be calling actions; NOTICE, how late a decision about a condition may come."""

    detect: dict[str, float]
    fresh: float
    in_flight: float
    notice: float

    @classmethod
    def scaled(cls, time_factor: float, heartbeat: float) -> "Margins":
        scrape = 15 * time_factor
        return cls({k: v * time_factor for k, v in DETECT_SECONDS.items()}, heartbeat + 4 * scrape,
                   max(3.0, 90 * time_factor), 120 * time_factor)


@dataclass(frozen=True)
class Window:
    """A time a person held the layer off: a silence on AGENT, or the kill switch (AGENT None)."""

    start: float
    end: float
    agent: str | None = None


@dataclass
class TruthChecks:
    """Each count with its first few cases, so a failed soak says where to look."""

    false_resolutions: list[dict] = field(default_factory=list)
    credited_not_fixed: list[dict] = field(default_factory=list)
    missed_faults: list[dict] = field(default_factory=list)
    actions_while_held: list[dict] = field(default_factory=list)
    actions_after_self_heal: list[dict] = field(default_factory=list)
    duplicate_remediations: list[dict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: len(cases) for name, cases in vars(self).items()}

    def examples(self, per_check: int = 3) -> dict[str, list[dict]]:
        return {name: cases[:per_check] for name, cases in vars(self).items() if cases}


def _agents_of(incident: dict) -> list[str]:
    return list(incident.get("claimants") or [incident["agent"]])


def _ts(entry: dict) -> float:
    return datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()


def _covers(interval: dict, agents: Iterable[str]) -> bool:
    names = set(agents)
    return interval["agent"] in names or (FLEET in names and interval["kind"] == OVER_BUDGET)


def _judged(interval: dict, incident: dict) -> bool:
    """Whether INCIDENT's verdict speaks of INTERVAL: a conflict's of its claimants' overlap (their other problems
    are their own incidents'), the fleet's of its budget, an agent's own of everything on that agent."""
    if incident.get("conflict_key"):
        return interval["kind"] == "overlap" and interval["agent"] in _agents_of(incident)
    return _covers(interval, [incident["agent"]])


def false_resolutions(intervals: list[dict], incidents: list[dict], margins: Margins) -> list[dict]:
    """Verified recoveries while a condition the verdict speaks of (`_judged`) still held, and had held long
    enough to be alerted on (so it was, or should have been, part of what the verdict judged)."""
    out = []
    for incident in incidents:
        t = incident.get("recovered_at")
        if incident.get("outcome") != "auto_resolved" or t is None:
            continue
        for i in intervals:
            if _judged(i, incident) and i["start"] <= t - margins.detect[i["kind"]] \
                    and (i["end"] is None or i["end"] > t):
                out.append({"incident": incident["id"], "agent": i["agent"], "kind": i["kind"], "recovered_at": t,
                            "condition_since": i["start"], "condition_until": i["end"]})
    return out


def credited_not_fixed(intervals: list[dict], incidents: list[dict], calls: list[tuple[float, str, str]] = (),
                       margins: Margins | None = None) -> list[dict]:
    """Auto-resolved verdicts where no condition of the incident's agents that ended from its onset to the verdict
    ended by the layer's action: a person or the agent itself healed it, and the layer took the credit."""
    out = []
    for incident in incidents:
        t = incident.get("recovered_at")
        if incident.get("outcome") != "auto_resolved" or t is None:
            continue
        since = incident.get("onset_at") or incident["opened_at"]  # from when its condition held: a late delivery
        ended = [i for i in intervals if _judged(i, incident) and i["end"] is not None
                 and since <= i["end"] <= t]
        acted = [ts for ts, agent, _ in calls if since <= ts <= t and agent in _agents_of(incident)]
        # A heal by itself within the samples' lag before the first action is a race no layer can see (as for
        # actions_after_self_heal); a person's fix is counted however close (late notifications wait for it).
        raced = [i for i in ended if margins is not None and acted and i["cause"] == "self"
                 and i["end"] >= min(acted) - margins.fresh]
        if ended and not raced and not any((i["cause"] or "").startswith(("action:", "drain")) for i in ended):
            out.append({"incident": incident["id"], "recovered_at": t,
                        "healed_by": sorted({i["cause"] for i in ended})})
    return out


def _noticed(interval: dict, incidents: list[dict], lineage: list[dict], margins: Margins, now: float) -> bool:
    end = (interval["end"] if interval["end"] is not None else now) + margins.notice
    for entry in lineage:
        if _covers(interval, [entry.get("agent"), *entry.get("claimants", [])]) and interval["start"] <= _ts(entry) <= end:
            return True
    return any(_covers(interval, _agents_of(i)) and i["opened_at"] <= end
               and (i.get("closed_at") is None or i["closed_at"] >= interval["start"]) for i in incidents)


def missed_faults(intervals: list[dict], incidents: list[dict], lineage: list[dict], silences: list[Window],
                  margins: Margins, now: float) -> list[dict]:
    """Conditions that held longer than their alert takes, outside any silence of their agent, and led to no
    incident and no decision. A relapse within the reopen window is one of these if nothing took it up."""
    out = []
    for i in intervals:
        lasted = (i["end"] if i["end"] is not None else now) - i["start"]
        if lasted < margins.detect[i["kind"]]:
            continue
        if any(w.agent == i["agent"] and w.start <= i["start"] + margins.detect[i["kind"]] for w in silences
               if w.end >= i["start"]):
            continue  # silenced before it could alert: the layer must not see it
        if not _noticed(i, incidents, lineage, margins, now):
            out.append(dict(i))
    return out


def actions_while_held(calls: list[tuple[float, str, str]], silences: list[Window], switched_off: list[Window],
                       margins: Margins) -> list[dict]:
    """Action calls on a silenced agent, or on any while the kill switch was off, begun after an attempt that
    passed its gates before could have finished."""
    out = []
    for ts, agent, action in calls:
        for w in [*silences, *switched_off]:
            if (w.agent in (None, agent)) and w.start + margins.in_flight <= ts <= w.end:
                out.append({"ts": ts, "agent": agent, "action": action, "held_by": "silence" if w.agent else
                            "kill switch", "held_since": w.start})
                break
    return out


def actions_after_self_heal(calls: list[tuple[float, str, str]], intervals: list[dict],
                            margins: Margins) -> list[dict]:
    """Action calls on an agent in no condition (nor the fleet over its budget) whose last condition had healed
    by itself longer ago than the layer's samples can lag."""
    out = []
    for ts, agent, action in calls:
        mine = [i for i in intervals if i["agent"] == agent and i["start"] <= ts]
        over_budget = any(i["agent"] == FLEET and i["start"] <= ts and (i["end"] is None or ts < i["end"])
                          for i in intervals)
        if over_budget or not mine or any(i["end"] is None or ts < i["end"] for i in mine):
            continue
        last = max(mine, key=lambda i: i["end"])
        if last["cause"] == "self" and ts >= last["end"] + margins.fresh:
            out.append({"ts": ts, "agent": agent, "action": action, "healed_at": last["end"], "kind": last["kind"]})
    return out


def duplicate_remediations(lineage: list[dict]) -> list[dict]:
    """Attempts recorded twice, or two incidents' attempts on one agent at the same time."""
    attempts = [e for e in lineage if e.get("event") == "auto_remediation"]
    out, seen, spans = [], set(), []
    for e in attempts:
        key = (e.get("incident_id"), e.get("attempt"))
        if key in seen:
            out.append({"incident": key[0], "attempt": key[1], "why": "recorded twice"})
        seen.add(key)
        end = float(e["verdict_at"]) if e.get("verdict_at") else _ts(e)  # the attempt's end, not its line's
        spans.append((end - float(e.get("duration_s") or 0), end, e.get("incident_id"), e.get("claimants") or [e["agent"]]))
    for n, (start, end, incident, agents) in enumerate(spans):
        for start2, end2, incident2, agents2 in spans[n + 1:]:
            if incident2 != incident and set(agents) & set(agents2) and start < end2 and start2 < end:
                out.append({"incident": incident, "other": incident2, "agents": sorted(set(agents) & set(agents2)),
                            "why": "attempts at the same time"})
    return out


def check(intervals: list[dict], incidents: list[dict], lineage: list[dict], calls: list[tuple[float, str, str]],
          silences: list[Window], switched_off: list[Window], margins: Margins, now: float) -> TruthChecks:
    """Every ground-truth check of a soak."""
    return TruthChecks(false_resolutions(intervals, incidents, margins), credited_not_fixed(intervals, incidents, calls, margins),
                       missed_faults(intervals, incidents, lineage, silences, margins, now),
                       actions_while_held(calls, silences, switched_off, margins),
                       actions_after_self_heal(calls, intervals, margins),
                       duplicate_remediations(lineage))
