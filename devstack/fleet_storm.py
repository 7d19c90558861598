"""A storm of simultaneous faults, recovered by the real loop: AGENTS simulated agents fail with a TRANSIENT fault
at one moment, on the real Prometheus and Alertmanager with the receiver's defaults (`autonomy receiver` as its own
process, as deployed); how long until the last was
verified-recovered, how many playbook runs each agent got, and how many action calls ran at once.
bench/fleet_storms.py measures it at 1, 100 and 200 agents; tests/integration/test_fleet_storm.py at 200."""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .drills import every_page
from .fleet import SimAgent, SimulatedFleet, fleet_heartbeat
from .layer_stack import LayerStack
from .local_stack import ServedApp
from .polling import DeadlineExceeded, wait_until

PLAYBOOK_FIRST_STEP = "restartAgent"  # RestartAndRetryTransient's first step: one per playbook run


@dataclass(frozen=True)
class FleetStormResult:
    """What the storm showed (durations in wall seconds, time compressed as the demo's)."""

    agents: int
    recovered: int  # incidents opened by the storm and verified-recovered (auto_resolved)
    escalated: int
    seconds_to_last: float | None  # from the faults to the last verified recovery
    remediations_per_s: float | None
    playbook_runs_max: int  # the most playbook runs one agent got (1: each remediated once)
    max_concurrent_actions: int  # action calls in flight at once, over the whole fleet
    max_concurrent_per_agent: int  # over one agent
    workers: int
    outcomes: dict  # every incident the storm opened, by how it ended (None: still open at the end)

    def as_dict(self) -> dict:
        return asdict(self)


class ActionGauge:
    """Wraps the fleet's actions to measure how many run at once, overall and per agent."""

    def __init__(self, fleet: SimulatedFleet, hold_seconds: float = 0.02):
        self.fleet, self.act, self.hold = fleet, fleet.act, hold_seconds
        self.lock = threading.Lock()
        self.now, self.peak, self.per_agent, self.peak_per_agent = 0, 0, Counter(), 0
        fleet.act = self  # the fleet's app calls self.act at request time

    def __call__(self, agent: str, action: str, body: dict, now: float):
        with self.lock:
            self.now += 1
            self.per_agent[agent] += 1
            self.peak = max(self.peak, self.now)
            self.peak_per_agent = max(self.peak_per_agent, self.per_agent[agent])
        try:
            time.sleep(self.hold)  # an action takes a moment, as a real agent's does: overlaps become visible
            return self.act(agent, action, body, now)
        finally:
            with self.lock:
                self.now -= 1
                self.per_agent[agent] -= 1


def run_fleet_storm(workdir: Path, agents: int, workers: int = 4, time_factor: float = 1 / 30,
                    timeout: float = 600.0, heartbeat_seconds: float | None = None) -> FleetStormResult:
    """Fail AGENTS agents at once with a timeout fault and wait until every one is verified-recovered (or
    TIMEOUT passes). The heartbeat slows with the fleet (500 signals a second at most): the exporter shares
    this one process with the fleet."""
    heartbeat_seconds = heartbeat_seconds or max(0.5, agents / 500)
    fleet = SimulatedFleet([SimAgent(f"storm-{n:04d}", "Content", None, 0.01) for n in range(agents)])
    gauge = ActionGauge(fleet)
    served = ServedApp(fleet.app, threads=16).start()
    env = {"AUTOREM_WORKERS": str(workers), "AUTOREM_QUEUE_SIZE": str(max(1000, 2 * agents)),
           "AUTOREM_PRIORITY": "Content", "AUTOREM_AGENT_TOKEN": fleet.action_token.reveal()}
    stack = LayerStack(Path(workdir), served.url, env=env, time_factor=time_factor, receiver_process=True)
    heartbeat = None
    try:
        stack.start()
        heartbeat = fleet_heartbeat(fleet, stack.push_url, stack.push_token, interval=heartbeat_seconds).start()
        wait_until(lambda: _count(stack, "count(autonomy_agent_info)") >= agents, 120,
                   "Prometheus to scrape every agent of the storm")
        started = time.time()
        for name in fleet.agents:
            fleet.inject(name, "timeout")

        # Watched through Prometheus (the receiver's own outcome counters), so that watching costs the receiver
        # nothing; the incidents are read once, at the end.
        ended = 'sum(autonomy_incident_outcomes_total{outcome=~"auto_resolved|escalated"})'
        try:
            wait_until(lambda: _count(stack, ended) >= agents, timeout, f"the storm of {agents} to end",
                       interval=0.5)
        except DeadlineExceeded:
            pass  # reported as what recovered in time
        incidents = [i for i in every_page(lambda p: stack.receiver_call("GET", "/api/v1/incidents", params=p),
                                           "incidents")["incidents"] if i["opened_at"] >= started - 1]
        recovered = [i for i in incidents if i["outcome"] == "auto_resolved"]
        last = max((i["recovered_at"] for i in recovered if i.get("recovered_at")), default=None)
        runs = Counter(agent for _, agent, action, _ in fleet.calls if action == PLAYBOOK_FIRST_STEP)
        elapsed = (last - started) if last is not None else None
        return FleetStormResult(
            agents=agents, recovered=len({i["agent"] for i in recovered}),
            escalated=sum(1 for i in incidents if i["outcome"] == "escalated"),
            seconds_to_last=round(elapsed, 2) if elapsed is not None else None,
            remediations_per_s=round(len(recovered) / elapsed, 2) if elapsed else None,
            playbook_runs_max=max(runs.values(), default=0), max_concurrent_actions=gauge.peak,
            max_concurrent_per_agent=gauge.peak_per_agent, workers=workers,
            outcomes=dict(Counter(str(i["outcome"]) for i in incidents)))
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        stack.stop()
        served.stop()


def _count(stack: LayerStack, promql: str) -> float:
    rows = stack.prometheus.query(promql)
    return float(rows[0]["value"][1]) if rows else 0.0
