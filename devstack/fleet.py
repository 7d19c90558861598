"""A simulated fleet of agents: §2 signals on a heartbeat, the pack's action primitives, and fault injection."""
from __future__ import annotations

import copy
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from flask import Flask, jsonify, request

from autonomy.agent import ActionServer, Heartbeat
from autonomy.primitives import PRIMITIVES
from autonomy.settings import Secret

from .fleet_truth import FLEET, OVER_BUDGET, TruthLog, conditions_of

# The simulated fleet's domains, highest priority first (AUTOREM_PRIORITY in the demo and the drills).
DEMO_PRIORITY = "Executive,Revenue,Operations,Marketing,Content,Data"
FAULTS = ("timeout", "overlap", "missing-secret", "backlog", "source-down", "cost-spike", "silent")
REQUIRED_SECRETS = ("GOOGLE_PROJECT_ID", "SERVICE_ACCOUNT", "API_BASE")
DRAIN_MINUTES_PER_SLOT = 5.0  # per heartbeat: two extra slots and a split directive drain 45 min in a few beats


@dataclass
class SimAgent:
    """One simulated agent's state; its signal is derived from it on every heartbeat."""

    name: str
    domain: str
    directive: str | None
    cost: float
    dependencies: tuple[str, ...] = ()
    faults: dict[str, bool] = field(default_factory=dict)  # fault -> fixable by the layer
    backlog_minutes: float = 2.0
    queue_depth: int = 1
    extra_slots: int = 0
    split: bool = False
    throttled: bool = False
    last_task_ok: bool = True
    inputs_valid: bool = True
    missing_secrets: tuple[str, ...] = ()
    alignment: float = 0.98
    claimed_from: str | None = None


def default_agents() -> list[SimAgent]:
    return [
        SimAgent("CEO", "Executive", "D-EXEC-1", 0.1),
        SimAgent("CRO", "Revenue", "D-REV-1", 0.1),
        SimAgent("CMO", "Marketing", "D-MKT-1", 0.1),
        SimAgent("COO", "Operations", "D-OPS-1", 0.1),
        SimAgent("Content", "Content", "D-CNT-1", 0.1, ("MarketIntel",)),
        SimAgent("MarketIntel", "Data", None, 0.0),
    ]


class SimulatedFleet:
    """The agents, their action endpoints (/agents/<name>/actions/<primitive>, served by the agent library's
    ActionServer: the receiver's token, each primitive's schema, idempotency keys) and /fleet/faults."""

    def __init__(self, agents: list[SimAgent] | None = None, slo_backlog_minutes: float = 15.0,
                 budget_cap_daily: float = 25.0, action_token: str | None = None):
        self.action_token = Secret("AUTOREM_AGENT_TOKEN", action_token or secrets.token_urlsafe(24))
        self.answers: Counter = Counter()  # (primitive, status) of every action call the fleet answered
        self.lock = threading.RLock()
        self.agents = {a.name: a for a in (agents or default_agents())}
        self.slo_backlog_minutes, self.budget_cap_daily = slo_backlog_minutes, budget_cap_daily
        self.calls: list[tuple[float, str, str, dict]] = []
        self.escalations: list[dict] = []
        self.priority_order: list[str] = []
        self.truth = TruthLog()
        self.app = self._build_app()

    def _observe(self, cause: str) -> None:
        """Record the fleet's conditions after a change (under the lock): what ended, ended by CAUSE."""
        held = Counter(a.directive for a in self.agents.values() if a.directive)
        shared = {d for d, n in held.items() if n > 1}
        current = [(a.name, kind, fixable) for a in self.agents.values()
                   for kind, fixable in conditions_of(a, self.slo_backlog_minutes, shared).items()]
        if sum(self.burn_of(a) for a in self.agents.values()) * 24 > self.budget_cap_daily:
            current.append((FLEET, OVER_BUDGET, all(a.faults["cost-spike"] for a in self.agents.values()
                                                    if "cost-spike" in a.faults and not a.throttled)))
        self.truth.observe(time.time(), current, cause)

    @staticmethod
    def burn_of(a: SimAgent) -> float:
        """An agent's spend now, dollars an hour: a spike is at least 2 $/h (over the demo's cap with any fleet
        of up to a few hundred agents), throttling cuts it to a tenth."""
        return (max(a.cost * 20, 2.0) if "cost-spike" in a.faults else a.cost) * (0.1 if a.throttled else 1)

    def truth_intervals(self) -> list[dict]:
        """The ground truth so far: every condition's interval (fleet_truth.Interval as dicts)."""
        with self.lock:
            return [i.as_dict() for i in self.truth.intervals()]

    # -- faults ------------------------------------------------------------------------------------------
    def inject(self, agent: str, fault: str, fixable: bool = True) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        with self.lock:
            a = self.agents[agent]
            a.faults[fault] = fixable
            if fault == "timeout":
                a.last_task_ok = False
            elif fault == "overlap":
                victim = next(x for x in self.agents.values() if x.domain == "Revenue" and x.name != agent)
                a.claimed_from, a.directive = a.directive, victim.directive
                a.alignment = victim.alignment = 0.85
            elif fault == "missing-secret":
                a.missing_secrets = ("API_BASE",)
            elif fault == "backlog":
                a.backlog_minutes, a.queue_depth = 45.0, 12
            self._observe("fault")

    def clear(self, agent: str, fault: str | None = None, cause: str = "operator") -> None:
        """Heal FAULT (or every fault) of AGENT, as an operator would (CAUSE `self`: it healed by itself)."""
        with self.lock:
            a = self.agents[agent]
            for name in [fault] if fault else list(a.faults):
                a.faults.pop(name, None)
                if name == "timeout":
                    a.last_task_ok = True
                elif name == "overlap":
                    self._resolve_overlap(a)
                elif name == "missing-secret":
                    a.missing_secrets = ()
                elif name == "backlog":
                    a.backlog_minutes, a.queue_depth = 2.0, 1
            if not any(f == "cost-spike" for f in a.faults):
                a.throttled = False
            self._observe(cause)

    def _resolve_overlap(self, a: SimAgent) -> None:
        taken = a.claimed_from is not None and any(x.directive == a.claimed_from for x in self.agents.values())
        a.directive, a.claimed_from = (self._fresh_directive(a) if taken or not a.claimed_from else a.claimed_from), None
        for x in self.agents.values():
            x.alignment = 0.98

    def _fresh_directive(self, a: SimAgent) -> str:
        """A directive id no agent holds, for an agent that gives up a contested one."""
        held = {x.directive for x in self.agents.values()}
        return next(d for n in range(2, 10_000) if (d := f"D-{a.name.upper()}-{n}") not in held)

    # -- the heartbeat -------------------------------------------------------------------------------
    def tick(self) -> None:
        """Advance the simulation by one heartbeat: backlogs drain, dependents notice failing sources."""
        with self.lock:
            for a in self.agents.values():
                if "backlog" in a.faults:
                    drain = DRAIN_MINUTES_PER_SLOT * (a.extra_slots + (2 if a.split else 0))
                    a.backlog_minutes = max(2.0, a.backlog_minutes - drain)
                    a.queue_depth = max(1, a.queue_depth - (a.extra_slots + (2 if a.split else 0)))
                    if a.backlog_minutes <= 5:
                        a.faults.pop("backlog")
                for dep in a.dependencies:
                    if "source-down" in self.agents[dep].faults:
                        a.inputs_valid = False
            self._observe("drain")

    def status_of(self, a: SimAgent) -> tuple[str, str | None]:
        if "timeout" in a.faults:
            return "error", "TIMEOUT"
        if "missing-secret" in a.faults:
            return "error", "CONFIG_MISSING"
        if "source-down" in a.faults:
            return "error", "OTHER"
        if not a.inputs_valid:
            return "degraded", "STALE_DATA"
        if a.backlog_minutes > self.slo_backlog_minutes or "overlap" in a.faults:
            return "degraded", None
        return "healthy", None

    def signals(self) -> list[dict]:
        """Every agent's §2 signal, stamped now."""
        now = datetime.now(timezone.utc).isoformat()
        out = []
        with self.lock:
            for a in self.agents.values():
                if "silent" in a.faults:  # a hung process: no heartbeat at all
                    continue
                status, code = self.status_of(a)
                cost = self.burn_of(a)
                context = {"queueDepth": a.queue_depth}
                if a.directive:
                    context["directiveId"] = a.directive
                if code:
                    context["errorCode"] = code
                if a.dependencies:
                    context["dependencies"] = list(a.dependencies)
                out.append({
                    "agent": a.name, "domain": a.domain, "status": status,
                    "lastReport": f"{a.name} {status}",
                    "metrics": {"successRate": 0.98 if a.last_task_ok else 0.7, "alignment": a.alignment,
                                "backlogAgeMinutes": round(a.backlog_minutes, 2),
                                "costBurnRatePerHour": round(cost, 4)},
                    "context": context,
                    "checks": {"lastTaskSucceeded": a.last_task_ok, "inputsValid": a.inputs_valid,
                               "configHealthy": not a.missing_secrets},
                    "ts": now,
                })
        return out

    def snapshot(self) -> dict:
        with self.lock:
            return {name: {"faults": dict(a.faults), "directive": a.directive, "throttled": a.throttled,
                           "backlogAgeMinutes": a.backlog_minutes, "inputsValid": a.inputs_valid,
                           "missingSecrets": list(a.missing_secrets)} for name, a in self.agents.items()}

    def calls_for(self, agent: str, since: float = 0.0) -> list[tuple[str, dict]]:
        with self.lock:
            return [(action, body) for ts, name, action, body in self.calls if name == agent and ts >= since]

    # -- the action primitives -------------------------------------------------------------------------
    def act(self, agent: str, action: str, body: dict, now: float) -> tuple[int, dict]:
        """Primitive ACTION on AGENT (known: the action server checked it) with its validated BODY."""
        with self.lock:
            self.calls.append((now, agent, action, copy.deepcopy(body)))
            answer = getattr(self, "_" + action)(self.agents[agent], body)
            self._observe(f"action:{action}")
            return answer

    def _action_server(self) -> ActionServer:
        fleet = self

        class CountedActions(ActionServer):
            def answer(self, environ: dict):
                answer = super().answer(environ)
                with fleet.lock:
                    fleet.answers[(environ.get("PATH_INFO", "").rsplit("/", 1)[-1], answer.status)] += 1
                return answer

        actions = CountedActions(agents=lambda name: name in self.agents, token=self.action_token)
        for primitive in PRIMITIVES:
            actions.handler(primitive.name)(
                lambda req, name=primitive.name: self.act(req.agent, name, req.body, time.time()))
        return actions

    def _applyPriorityRules(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        self.priority_order = list(body.get("order") or [])
        return 200, {"order": self.priority_order}

    def _reassignOverlaps(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        """Every holder of the directive but the winner gives it up: the one that took it goes back to its own;
        when the winner is the one that took it (it ranks higher), the one it took it from gets a new one."""
        directive, winner = body.get("directiveId"), body.get("winner")
        holders = [x for x in self.agents.values() if x.directive == directive]
        if any(not x.faults.get("overlap", True) for x in holders):
            return 409, {"error": "overlap cannot be reassigned"}
        moved = []
        for x in holders:
            if x.name == winner:
                continue
            if "overlap" in x.faults:
                x.faults.pop("overlap")
                self._resolve_overlap(x)
            else:
                x.directive = self._fresh_directive(x)
            moved.append(x.name)
        kept = self.agents.get(winner)
        if moved and kept is not None and "overlap" in kept.faults:
            kept.faults.pop("overlap")
            kept.claimed_from = None
            for x in self.agents.values():
                x.alignment = 0.98
        return 200, {"winner": winner, "reassigned": moved}

    def _throttleAgent(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        a.throttled = True
        return 200, {"throttled": a.name, "maxConcurrent": body.get("maxConcurrent"), "minutes": body.get("minutes")}

    def _restartAgent(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        for fault in ("timeout", "source-down", "silent"):
            if a.faults.get(fault):
                a.faults.pop(fault)
        return 200, {"restarted": a.name, "mode": body.get("mode")}

    def _retryLastTask(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        if "timeout" in a.faults:
            return 503, {"error": "the task timed out again"}
        a.last_task_ok = True
        return 200, {"retried": a.name}

    def _reallocateSlots(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        donor, target = self.agents.get(body.get("from")), self.agents.get(body.get("to"))
        if donor is None or target is None:
            return 422, {"error": "from and to must be agents of the fleet"}
        target.extra_slots += int(body.get("slots", 1))
        return 200, {"from": donor.name, "to": target.name, "slots": body.get("slots")}

    def _splitDirective(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        a.split = True
        return 200, {"split": body.get("directiveId"), "ratio": body.get("ratio")}

    def _refreshCache(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        return 200, {"refreshed": a.name}

    def _refetchSource(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        source = self.agents.get(body.get("source"))
        if source is None:
            return 422, {"error": "unknown source"}
        if "source-down" in source.faults:
            return 503, {"error": f"{source.name} is down"}
        a.inputs_valid = True
        return 200, {"refetched": source.name}

    def _validateInputs(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        return 200, {"valid": a.inputs_valid}

    def _checkSecrets(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        if a.missing_secrets and not a.faults.get("missing-secret", True):
            return 409, {"missing": list(a.missing_secrets)}  # names only, never values
        a.missing_secrets = ()
        a.faults.pop("missing-secret", None)
        return 200, {"missing": []}

    def _schemaMigrateIfNeeded(self, a: SimAgent, body: dict) -> tuple[int, dict]:
        return 200, {"migrated": False}

    # -- HTTP ----------------------------------------------------------------------------------------------
    def _build_app(self) -> Flask:

        app = Flask("fleet")
        self.actions = self._action_server()
        self.actions.mount(app)

        @app.post("/agents/CEO/escalations")
        def escalation():
            with self.lock:
                self.escalations.append(request.get_json(silent=True) or {})
            return jsonify({"received": True})

        @app.post("/fleet/faults")
        def inject():
            doc = request.get_json(silent=True) or {}
            if doc.get("agent") not in self.agents:
                return jsonify({"error": f"agent: one of {', '.join(self.agents)}"}), 422
            try:
                self.inject(doc["agent"], doc.get("fault", ""), bool(doc.get("fixable", True)))
            except ValueError as exc:
                return jsonify({"error": f"fault: {exc}"}), 422
            return jsonify(self.snapshot()[doc["agent"]])

        @app.delete("/fleet/faults/<agent>")
        def heal(agent: str):
            if agent not in self.agents:
                return jsonify({"error": "no such agent"}), 404
            self.clear(agent, request.args.get("fault"))
            return jsonify(self.snapshot()[agent])

        @app.get("/fleet/state")
        def state():
            return jsonify(self.snapshot())

        @app.get("/fleet/calls")
        def calls():
            agent = request.args.get("agent")
            if agent is not None and agent not in self.agents:
                return jsonify({"error": f"agent: one of {', '.join(self.agents)}"}), 422
            try:
                since = float(request.args.get("since", "0"))
            except ValueError:
                return jsonify({"error": "since: a Unix time in seconds"}), 422
            with self.lock:
                rows = [{"ts": ts, "agent": name, "action": act, "body": body} for ts, name, act, body in self.calls
                        if (agent is None or name == agent) and ts >= since]
            return jsonify({"calls": rows})

        @app.get("/fleet/escalations")
        def escalations():
            with self.lock:
                return jsonify({"escalations": list(self.escalations)})

        return app


def fleet_heartbeat(fleet, url: str, token: Secret | str | None, interval: float = 0.5) -> Heartbeat:
    """The fleet's heartbeat, on the agent library: each beat ticks FLEET (a SimulatedFleet, or anything with
    tick() and signals()) and pushes every agent's signal as one batch to URL (an exporter, or a receiver's direct
    path), retried with backoff while the layer is away. Not started."""
    def beat() -> list[dict]:
        fleet.tick()
        return fleet.signals()

    return Heartbeat(url, token, source=beat, interval=interval, backoff=(min(interval, 0.5), max(2 * interval, 2.0), 0.1))
