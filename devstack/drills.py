"""The chaos drills of the pack (§12 and more), run against a live layer and the simulated fleet."""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import requests

from .drill_ports import DrillFleet, DrillStack
from .polling import wait_until

WAIT = 90.0  # generous: a loaded 2-core machine is slow, a healthy run is far quicker
# The same generosity in uncompressed time (a deployment at time factor 1): an escalation after two attempts
# with their verification timeouts and backoff takes some 6 minutes there.
WAIT_UNCOMPRESSED = 900.0


@dataclass(frozen=True)
class DrillResult:
    """One drill's outcome, as `autonomy drill --json` reports it."""

    name: str
    passed: bool
    classification: str | None
    playbook: str | None
    attempts: int
    outcome: str  # resolved | escalated | skipped
    mttr_s: float | None  # from the fault's injection (ground truth) to the verified recovery
    detail: str
    mttr_onset_s: float | None = None  # from the onset the receiver recorded (Prometheus saw the condition hold)
    mttr_webhook_s: float | None = None  # from the webhook's arrival (the incident opened)

    def as_dict(self) -> dict:
        return asdict(self)


class DrillContext:
    """What a drill works with: the layer, the fleet, and a voice for the progress display."""

    def __init__(self, stack: DrillStack, fleet: DrillFleet, say: Callable[[str], None]):
        self.stack, self.fleet, self.say = stack, fleet, say
        self.wait = max(WAIT, WAIT_UNCOMPRESSED * stack.time_factor)  # every wait of a drill, scaled with time

    def until(self, probe: Callable[[], Any], what: str, interval: float = 0.05) -> Any:
        """wait_until with the drill's wait; polled less often in uncompressed time (a deployment's upstreams)."""
        return wait_until(probe, self.wait, what, interval=max(interval, 2.0 * self.stack.time_factor))

    def incidents(self, agent: str | None = None, since: float = 0.0) -> list[dict]:
        """The agent's incidents (every one, without AGENT), newest first."""
        pages = every_page(lambda params: self.stack.receiver_call("GET", "/api/v1/incidents", params=params),
                           "incidents", **({"agent": agent} if agent else {}))
        return [i for i in pages["incidents"][::-1] if i["opened_at"] >= since]

    def lineage(self) -> list[dict]:
        return every_page(lambda params: self.stack.receiver_call("GET", "/api/v1/lineage", params=params),
                          "entries")["entries"]

    def alertmanager_alerts(self, agent: str) -> list[dict]:
        reply = requests.get(self.stack.alertmanager.url + "/api/v2/alerts", params={"filter": f'agent="{agent}"'},
                             timeout=10)
        return reply.json()

    def firing(self, agent: str) -> list[str]:
        rows = self.stack.prometheus.query(f'ALERTS{{alertstate="firing", agent="{agent}"}}')
        return sorted(r["metric"]["alertname"] for r in rows)

    def await_incident(self, agent: str, since: float, done: Callable[[dict], bool], what: str) -> dict:
        def probe():
            return next((i for i in self.incidents(agent, since) if done(i)), None)
        return self.until(probe, what, interval=0.2)

    def settle(self, *agents: str) -> None:
        """Wait until the agents have no open incident and no firing alert: the next drill starts clean."""
        def calm():
            return all(not self.firing(a) and all(i["state"] == "closed" for i in self.incidents(a))
                       for a in agents)
        self.until(calm, f"{', '.join(agents)} to settle", interval=0.25)

    def wait_alert(self, agent: str, alertname: str) -> None:
        self.until(lambda: alertname in self.firing(agent), f"{alertname} for {agent}", interval=0.2)
        self.say(f"  {alertname} firing for {agent}")


def every_page(get: Callable[[dict], requests.Response], key: str, **params) -> dict:
    """Every item of a paged receiver endpoint (`limit`/`cursor`), in the order it was written (oldest first),
    with the other lists each page gave (skipped_ids), joined."""
    items, extra, cursor = [], {}, None
    while True:
        reply = get({**params, "limit": 1000, **({"cursor": cursor} if cursor else {})})
        reply.raise_for_status()
        page = reply.json()
        items.extend(page[key])
        for name, value in page.items():
            if isinstance(value, list) and name != key:
                extra.setdefault(name, []).extend(value)
        cursor = page.get("next_cursor")
        if not cursor:
            return {key: items[::-1], **extra}


def _resolved(incident: dict) -> bool:
    return incident["outcome"] == "auto_resolved" and incident["state"] in ("recovered", "closed")


def _result(name: str, incident: dict, t0: float, passed: bool, detail: str) -> DrillResult:
    outcome = {"auto_resolved": "resolved", "escalated": "escalated"}.get(incident.get("outcome"), "skipped")
    recovered = incident.get("recovered_at") if outcome == "resolved" else None

    def since(start: float | None) -> float | None:
        return round(recovered - start, 2) if recovered and start is not None else None
    return DrillResult(name, passed, incident.get("classification"), incident.get("playbook"),
                       incident.get("attempts", 0), outcome, since(t0), detail, since(incident.get("onset_at")),
                       since(incident.get("opened_at")))


def transient_timeout(ctx: DrillContext) -> DrillResult:
    t0 = time.time()
    ctx.fleet.inject("CMO", "timeout")
    ctx.say("  injected TIMEOUT on CMO")
    incident = ctx.await_incident("CMO", t0, _resolved, "CMO to be auto-resolved")
    ok = (incident["classification"], incident["playbook"]) == ("TRANSIENT", "RestartAndRetryTransient")
    ctx.settle("CMO")
    return _result("transient-timeout", incident, t0, ok, "restart and retry cleared the TIMEOUT")


def directive_overlap(ctx: DrillContext) -> DrillResult:
    t0 = time.time()
    ctx.fleet.inject("CMO", "overlap")
    ctx.say("  CMO claims CRO's directive D-REV-1")
    incident = ctx.await_incident("CMO", t0, _resolved, "the conflict to be resolved")
    state = ctx.fleet.snapshot()
    kept, throttled = state["CRO"]["directive"] == "D-REV-1", state["CMO"]["throttled"]
    ok = (incident["classification"], incident["playbook"]) == ("CONFLICT", "ResolveInterAgentConflict") \
        and kept and throttled and state["CMO"]["directive"] != "D-REV-1"
    ctx.settle("CMO", "CRO")
    ctx.fleet.clear("CMO")
    return _result("directive-overlap", incident, t0, ok,
                   f"CRO kept D-REV-1: {kept}; CMO throttled: {throttled}")


def missing_secret(ctx: DrillContext) -> DrillResult:
    t0 = time.time()
    ctx.fleet.inject("Content", "missing-secret", fixable=False)
    ctx.say("  removed secret API_BASE from Content (not restorable)")
    incident = ctx.await_incident("Content", t0, lambda i: i["state"] == "escalated", "Content to be escalated")
    max_attempts = ctx.stack.settings.max_attempts
    payload = ctx.until(lambda: next((p for p in ctx.fleet.escalations if p.get("agent") == "Content"
                                      and p.get("incidentId") == incident["id"]), None), "the payload")
    alert = ctx.until(lambda: [a for a in ctx.alertmanager_alerts("Content")
                               if a["labels"]["alertname"] == "AutonomyEscalated"], "AutonomyEscalated")
    ok = (incident["classification"], incident["playbook"]) == ("CONFIG", "FixConfig") \
        and incident["attempts"] == max_attempts and payload["to"] == "CEO" and bool(alert) \
        and payload["lastTwoAttempts"] == ["FixConfig"] * min(2, max_attempts)
    ctx.say(f"  escalated to CEO after {incident['attempts']} attempts; AutonomyEscalated in Alertmanager")
    ctx.fleet.clear("Content")
    ctx.settle("Content")
    return _result("missing-secret", incident, t0, ok,
                   f"escalated after {incident['attempts']} of {max_attempts} attempts; payload and alert delivered")


def backlog_surge(ctx: DrillContext) -> DrillResult:
    t0 = time.time()
    ctx.fleet.inject("COO", "backlog")
    ctx.say("  COO's backlog jumps to 45 minutes")
    incident = ctx.await_incident("COO", t0, _resolved, "COO's backlog to be rebalanced")
    backlog = ctx.fleet.snapshot()["COO"]["backlogAgeMinutes"]
    ok = (incident["classification"], incident["playbook"]) == ("CAPACITY", "RebalanceCapacity") \
        and backlog <= ctx.stack.settings.slo_backlog_min
    ctx.settle("COO")
    return _result("backlog-surge", incident, t0, ok, f"backlog now {backlog:g} min")


def dependency_down(ctx: DrillContext) -> DrillResult:
    t0 = time.time()
    ctx.fleet.inject("MarketIntel", "source-down")
    ctx.say("  MarketIntel goes down; Content depends on it")
    incident = ctx.await_incident("Content", t0, _resolved, "Content's inputs to be repaired")
    ok = (incident["classification"], incident["playbook"]) == ("DATA_DEP", "RepairDataDependency")
    ctx.settle("Content", "MarketIntel")
    return _result("dependency-down", incident, t0, ok,
                   f"inputs valid again: {ctx.fleet.snapshot()['Content']['inputsValid']}")


def budget_spike(ctx: DrillContext) -> DrillResult:
    t0 = time.time()
    ctx.fleet.inject("Content", "cost-spike")
    ctx.say("  Content's spend jumps twentyfold; projected daily spend over the cap")
    incident = ctx.await_incident("fleet", t0, _resolved, "the budget breach to be resolved")
    throttled = ctx.fleet.snapshot()["Content"]["throttled"]
    ok = (incident["classification"], incident["playbook"]) == ("CAPACITY", "ThrottleForBudget") and throttled
    ctx.settle("fleet")
    ctx.fleet.clear("Content")
    return _result("budget-spike", incident, t0, ok, f"lowest-priority spender Content throttled: {throttled}")


def silenced(ctx: DrillContext) -> DrillResult:
    now = datetime.now(timezone.utc)
    silence = {"matchers": [{"name": "agent", "value": "CRO", "isRegex": False, "isEqual": True}],
               "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
               "createdBy": "autonomy drill", "comment": "drill: an SRE is working on CRO"}
    silence_id = requests.post(ctx.stack.alertmanager.url + "/api/v2/silences", json=silence,
                               timeout=10).json()["silenceID"]
    ctx.say(f"  silence {silence_id} created for agent=CRO")
    t0 = time.time()
    try:  # a deployed layer must not keep the silence when the drill fails
        ctx.fleet.inject("CRO", "timeout")
        ctx.until(lambda: [a for a in ctx.alertmanager_alerts("CRO") if silence_id in a["status"]["silencedBy"]],
                  "CRO's alerts to be silenced")
        # Give the layer ample time to (wrongly) act: several notification rounds.
        threading.Event().wait(max(2.0, 20 * ctx.stack.time_factor * 3))
        calls, incidents = ctx.fleet.calls_for("CRO", t0), ctx.incidents("CRO", t0)
        ctx.fleet.clear("CRO")
    finally:
        requests.delete(f"{ctx.stack.alertmanager.url}/api/v2/silence/{silence_id}", timeout=10)
    ctx.settle("CRO")
    ok = not calls and not incidents
    return DrillResult("silenced", ok, None, None, 0, "skipped", None,
                       "silenced: no action ran" if ok else f"acted despite the silence: {calls or incidents}")


def kill_switch(ctx: DrillContext) -> DrillResult:
    ctx.stack.receiver_call("PUT", "/api/v1/remediation", json={"enabled": False, "reason": "drill"})
    ctx.say("  remediation disabled through the API")
    t0 = time.time()
    try:  # a deployed layer must not stay switched off when the drill fails
        ctx.fleet.inject("CEO", "timeout")
        incident = ctx.await_incident("CEO", t0, lambda i: i["state"] == "skipped", "the kill switch to refuse")
        calls = ctx.fleet.calls_for("CEO", t0)
        ctx.fleet.clear("CEO")
        ctx.settle("CEO")
    finally:
        ctx.stack.receiver_call("PUT", "/api/v1/remediation", json={"enabled": True, "reason": "drill over"})
        ctx.say("  remediation enabled again")
    enabled = ctx.stack.receiver_call("GET", "/api/v1/remediation").json()["enabled"]
    ok = not calls and "kill_switch" in (incident.get("reason") or "") and enabled
    return DrillResult("kill-switch", ok, incident.get("classification"), incident.get("playbook"), 0, "skipped",
                       None, "kill switch: no action ran; enabled again" if ok else f"calls: {calls}")


def duplicate_delivery(ctx: DrillContext) -> DrillResult:
    t0 = time.time()
    ctx.fleet.inject("COO", "timeout")
    ctx.wait_alert("COO", "AgentTransientError")
    alerts = [a for a in ctx.alertmanager_alerts("COO") if a["labels"].get("autonomy_class")]
    body = {"version": "4", "status": "firing", "receiver": "autonomy-receiver", "groupKey": '{}:{agent="COO"}',
            "groupLabels": {"agent": "COO"}, "commonLabels": {"agent": "COO"}, "commonAnnotations": {},
            "externalURL": ctx.stack.alertmanager.url, "truncatedAlerts": 0,
            "alerts": [{"status": "firing", "labels": a["labels"], "annotations": a.get("annotations", {}),
                        "startsAt": a["startsAt"], "endsAt": a["endsAt"], "generatorURL": a.get("generatorURL", ""),
                        "fingerprint": a["fingerprint"]} for a in alerts]}
    codes = [ctx.stack.receiver_call("POST", "/api/v1/alerts", json=body).status_code for _ in range(3)]
    ctx.say(f"  the same notification delivered three more times: {codes}")
    incident = ctx.await_incident("COO", t0, _resolved, "COO to be auto-resolved")
    restarts = [c for c in ctx.fleet.calls_for("COO", t0) if c[0] == "restartAgent"]
    ok = len(restarts) == 1 and len(ctx.incidents("COO", t0)) == 1 and codes == [200, 200, 200]
    ctx.settle("COO")
    return _result("duplicate-delivery", incident, t0, ok, f"{len(restarts)} remediation for 4 deliveries")


DRILLS: dict[str, Callable[[DrillContext], DrillResult]] = {
    "transient-timeout": transient_timeout,
    "directive-overlap": directive_overlap,
    "missing-secret": missing_secret,
    "backlog-surge": backlog_surge,
    "dependency-down": dependency_down,
    "budget-spike": budget_spike,
    "silenced": silenced,
    "kill-switch": kill_switch,
    "duplicate-delivery": duplicate_delivery,
}
