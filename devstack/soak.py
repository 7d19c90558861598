"""`autonomy soak`: a simulated week of faults on the real Prometheus and Alertmanager, judged by ground truth."""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

import requests

from .demo import layer_env
from .drills import every_page
from .fleet import SimAgent, SimulatedFleet, fleet_heartbeat
from .layer_stack import LayerStack
from .local_stack import ServedApp
from .polling import wait_until
from .soak_schedule import Episode, Fault, Schedule, Stage, schedule
from .soak_truth import Window

HEARTBEAT_SECONDS = 0.5
OPERATOR_DELAY = 60.0  # unscaled: a person fixes what the layer escalated or held about a minute later
EPISODE_LIMIT = 1800.0  # unscaled: not over in 30 min (an unfixable budget breach takes ~17): ended by hand
HELD_FOR_A_PERSON = ("not_in_canary", "class_not_enabled", "dry_run")


@dataclass
class SoakLog:
    """What the soak did, in wall time: the people's windows, the stages, the episodes' ends."""

    silences: list[Window] = field(default_factory=list)
    switched_off: list[Window] = field(default_factory=list)
    stages: list[tuple[float, Stage]] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    operator_clears: int = 0


class SoakRunner:
    """Plays a schedule's episodes one after another on a running stack and fleet, as the fleet's people would."""

    def __init__(self, plan: Schedule, stack: LayerStack, fleet: SimulatedFleet, time_factor: float,
                 progress=None):
        self.plan, self.stack, self.fleet, self.tf = plan, stack, fleet, time_factor
        self.log = SoakLog()
        self.progress = progress or (lambda done, total: None)
        self._stage = 0

    # -- the layer, as an SRE reads it ------------------------------------------------------------------
    def incidents(self) -> list[dict]:
        return every_page(lambda p: self.stack.receiver_call("GET", "/api/v1/incidents", params=p),
                          "incidents")["incidents"]

    def _recent(self) -> list[dict] | None:
        try:
            reply = self.stack.receiver_call("GET", "/api/v1/incidents", params={"limit": 200})
            reply.raise_for_status()
            return reply.json()["incidents"]
        except (requests.RequestException, ValueError, KeyError):
            return None  # restarting: look again on the next turn

    def _firing(self) -> set[str]:
        rows = self.stack.prometheus.query('ALERTS{alertstate="firing", autonomy_class!~"|none"}')
        return {r["metric"].get("agent", "") for r in rows}

    # -- people -------------------------------------------------------------------------------------------
    def set_stage(self, stage: Stage) -> None:
        body = {"agents": list(stage.agents) if stage.agents else ["*"], "classes": list(stage.classes),
                "reason": f"soak: rollout stage {stage.name} (pack section 11)"}
        reply = self.stack.receiver_call("PUT", "/api/v1/rollout", json=body)
        if reply.status_code != 200:
            raise RuntimeError(f"PUT /api/v1/rollout answered {reply.status_code}: {reply.text[:300]}")
        self.log.stages.append((time.time(), stage))

    def _silence(self, agent: str, seconds: float) -> str:
        now = datetime.now(timezone.utc)
        body = {"matchers": [{"name": "agent", "value": agent, "isRegex": False, "isEqual": True}],
                "startsAt": now.isoformat(), "endsAt": (now + timedelta(seconds=seconds + 60)).isoformat(),
                "createdBy": "autonomy soak", "comment": "soak: an SRE is working on it"}
        reply = requests.post(self.stack.alertmanager.url + "/api/v2/silences", json=body, timeout=10)
        reply.raise_for_status()
        return reply.json()["silenceID"]

    def _switch(self, enabled: bool) -> None:
        reply = self.stack.receiver_call("PUT", "/api/v1/remediation",
                                         json={"enabled": enabled, "reason": "soak: an SRE intervenes"})
        reply.raise_for_status()

    def _restart_receiver(self) -> None:
        self.stack.receiver.stop()
        self.stack.receiver.start()
        self.log.restarts.append(time.time())

    def _clear(self, agent: str) -> None:
        with self.fleet.lock:
            a = self.fleet.agents[agent]
            if a.faults or not a.inputs_valid:
                a.inputs_valid = True
                self.fleet.clear(agent, cause="operator")
                self.log.operator_clears += 1

    def _operate(self, incidents: list[dict], noticed: dict[str, float], now: float) -> None:
        """Fix by hand, OPERATOR_DELAY after noticing, what the layer escalated or held for a person."""
        for i in incidents:
            if i["state"] == "escalated" or (i["state"] == "skipped" and any(
                    r in (i.get("reason") or "") + (i.get("state_reason") or "") for r in HELD_FOR_A_PERSON)):
                for agent in i.get("claimants") or [i["agent"]]:
                    noticed.setdefault(agent, now)
        for agent, since in list(noticed.items()):
            if now - since >= OPERATOR_DELAY * self.tf:
                if agent == "fleet":
                    for name, a in self.fleet.agents.items():
                        if "cost-spike" in a.faults:
                            self.fleet.clear(name, "cost-spike", cause="operator")
                            self.log.operator_clears += 1
                elif agent in self.fleet.agents:
                    self._clear(agent)
                del noticed[agent]

    # -- episodes -----------------------------------------------------------------------------------------
    def _quiet(self, episode: Episode | None, incidents: list[dict] | None) -> bool:
        """Nothing broken in the fleet, and no open INCIDENTS or firing alert on the agents EPISODE touches (a
        conflict's victim and a source's dependents too; None: on any agent)."""
        if incidents is None or any(i["end"] is None for i in self.fleet.truth_intervals()):
            return False
        busy = {a for i in incidents if i["state"] != "closed" for a in (i.get("claimants") or [i["agent"]])}
        if episode is None:
            return not busy and not self._firing()
        related = set(episode.agents) | {"fleet"} | {a.name for a in self.fleet.agents.values()
                                                     if a.domain == "Revenue" or set(a.dependencies) & set(episode.agents)}
        return not (busy & related) and not (self._firing() & related)

    def _await_quiet(self, episode: Episode | None) -> None:
        """Wait for quiet, people fixing what the layer escalated or held; past EPISODE_LIMIT every fault is
        healed by hand (reported as a timed-out episode), and past another the soak stops."""
        noticed: dict[str, float] = {}
        deadline = time.time() + EPISODE_LIMIT * self.tf
        while not self._quiet(episode, incidents := self._recent()):
            if incidents is not None:
                self._operate(incidents, noticed, time.time())
            if time.time() >= deadline:
                where = "the end" if episode is None else f"episode {episode.number}"
                if f"before {where}" in self.log.timed_out:
                    raise RuntimeError(f"the fleet did not become quiet before {where}, even with every fault healed")
                self.log.timed_out.append(f"before {where}")
                for name in self.fleet.agents:
                    self._clear(name)
                deadline = time.time() + EPISODE_LIMIT * self.tf
            threading.Event().wait(0.25)

    def play(self, episode: Episode) -> None:
        """One episode: its faults and people's operations at their moments, then wait until all has healed."""
        self._await_quiet(episode)
        t0 = time.time()
        events: list[tuple[float, str, object]] = []
        for f in episode.faults:
            events.append((t0 + f.at * self.tf, "inject", f))
            if f.clears_after is not None:
                events.append((t0 + (f.at + f.clears_after) * self.tf, "self_heal", f))
        for op in episode.operations:
            events.append((t0 + op.at * self.tf, op.kind, op))
        events.sort(key=lambda e: e[0])
        flaps = {f for f in episode.faults if f.returns_after is not None}
        noticed: dict[str, float] = {}
        silence_ids: list[tuple[str, Window]] = []
        deadline = t0 + EPISODE_LIMIT * self.tf
        while True:
            now = time.time()
            while events and events[0][0] <= now:
                _, kind, what = events.pop(0)
                self._event(kind, what, now, events, silence_ids)
            for f in list(flaps):
                ended = [i for i in self.fleet.truth_intervals() if i["agent"] == f.agent and i["kind"] == f.kind
                         and i["end"] is not None and i["start"] >= t0]
                if ended:
                    events.append((ended[0]["end"] + f.returns_after * self.tf, "inject", _again(f)))
                    events.sort(key=lambda e: e[0])
                    flaps.discard(f)
            incidents = self._recent()
            if incidents is not None:
                self._operate(incidents, noticed, now)
            healed = not any(i["end"] is None for i in self.fleet.truth_intervals())
            if not events and not flaps and healed:
                return
            if now >= deadline:  # ended by hand: what people started is undone, every fault healed, and reported
                self.log.timed_out.append(str(episode.number))
                for _, kind, what in events:
                    if kind in ("unsilence", "switch_on"):
                        self._event(kind, what, now, [], silence_ids)
                for name in self.fleet.agents:
                    self._clear(name)
                return
            threading.Event().wait(0.2)

    def _event(self, kind: str, what, now: float, events: list, silence_ids: list) -> None:
        if kind == "inject":
            self.fleet.inject(what.agent, what.kind, what.fixable)
        elif kind == "self_heal":
            if what.kind in self.fleet.agents[what.agent].faults:
                self.fleet.clear(what.agent, what.kind, cause="self")
        elif kind == "silence":
            window = Window(now, now + what.lasts * self.tf, what.agent)
            silence_ids.append((self._silence(what.agent, what.lasts * self.tf), window))
            events.append((window.end, "unsilence", (silence_ids[-1], what.agent)))
            events.sort(key=lambda e: e[0])
        elif kind == "unsilence":
            (silence_id, window), agent = what
            self._clear(agent)  # the SRE fixed it under the silence, then lifts the silence
            requests.delete(f"{self.stack.alertmanager.url}/api/v2/silence/{silence_id}", timeout=10)
            self.log.silences.append(Window(window.start, time.time(), agent))
        elif kind == "kill_switch":
            self._switch(False)
            events.append((now + what.lasts * self.tf, "switch_on", now))
            events.sort(key=lambda e: e[0])
        elif kind == "switch_on":
            self._switch(True)
            self.log.switched_off.append(Window(what, time.time()))
        elif kind == "receiver_restart":
            self._restart_receiver()

    def run(self) -> None:
        stages = list(self.plan.stages)
        for n, episode in enumerate(self.plan.episodes):
            while self._stage < len(stages) and stages[self._stage].at <= episode.starts:
                self.set_stage(stages[self._stage])
                self._stage += 1
            self.play(episode)
            self.progress(n + 1, len(self.plan.episodes))
        for stage in stages[self._stage:]:
            self.set_stage(stage)
        self._await_quiet(None)


def _again(fault: Fault) -> Fault:
    """The same fault once more (a flap's return), without another return."""
    return replace(fault, at=0.0, clears_after=None, returns_after=None)


def sim_agents(plan: Schedule) -> list[SimAgent]:
    return [SimAgent(r.name, r.domain, r.directive, r.cost, r.dependencies) for r in plan.roles]


def run_soak(days: float = 7.0, agents: int = 6, seed: int = 1, time_factor: float = 1 / 30,
             progress: TextIO = sys.stderr, workdir: Path | None = None) -> dict:
    """Start the fleet and the layer, play the seed's week, and return the report (soak_report.report)."""
    from .soak_report import report
    plan = schedule(seed, days, agents)
    fleet = SimulatedFleet(sim_agents(plan))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="autonomy-soak-") as tmp, ServedApp(fleet.app) as fleet_server:
        workdir = workdir or Path(tmp)
        with LayerStack(workdir, fleet_server.url, env=layer_env(fleet_server.url, fleet), time_factor=time_factor,
                        receiver_process=True) as stack:
            fleet.budget_cap_daily = stack.settings.budget_cap_daily_usd  # the truth's "over budget" is the layer's
            beat = fleet_heartbeat(fleet, stack.push_url, stack.push_token, interval=HEARTBEAT_SECONDS).start()
            try:
                wait_until(lambda: stack.prometheus.query(f"count(autonomy_agent_info) >= {len(fleet.agents)}"),
                           60, "Prometheus to see the whole fleet")
                runner = SoakRunner(plan, stack, fleet, time_factor, _bar(progress, started))
                runner.run()
                result = report(plan, runner, started, time.time())
                _keep_evidence(workdir, fleet, runner, result)
                return result
            finally:
                beat.stop()


def _keep_evidence(workdir: Path, fleet: SimulatedFleet, runner: SoakRunner, result: dict) -> None:
    """The ground truth beside the receiver's ledger and lineage, for a look after a failed soak."""
    with fleet.lock:
        calls = [{"ts": ts, "agent": agent, "action": action} for ts, agent, action, _ in fleet.calls]
    evidence = {"report": result, "truth": fleet.truth_intervals(), "calls": calls,
                "silences": [vars(w) for w in runner.log.silences],
                "switched_off": [vars(w) for w in runner.log.switched_off],
                "stages": [{"at": t, "stage": stage.name} for t, stage in runner.log.stages],
                "restarts": runner.log.restarts}
    (workdir / "soak-evidence.json").write_text(json.dumps(evidence, indent=1))


def _bar(out: TextIO, started: float):
    def show(done: int, total: int) -> None:
        filled = int(30 * done / total)
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} episodes, {time.time() - started:.0f} s"
        if out.isatty():
            print("\r" + line, end="" if done < total else "\n", file=out, flush=True)
        elif done == total or done % 10 == 0:
            print(line, file=out, flush=True)
    return show
