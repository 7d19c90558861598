"""Benchmark: the SQLite ledger's size (file + WAL) through 30 simulated days of steady load, with retention at 7 days
and without. A fleet of 50 agents, a webhook every simulated minute (one agent's alerts, as Alertmanager groups them),
each agent faulty two hours in twelve: its incident opens, gets a lineage entry per notification, and closes (as a
worker would) when its alert resolves. The trimmer's own round (engine/retention.py) runs every simulated hour, as
the receiver's thread does every real one. Goal: bounded, the size at day 30 within 1.2x of day 8's."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webhook_receiver.engine.retention import RetentionTrimmer  # noqa: E402
from webhook_receiver.incident import AlertRef  # noqa: E402
from webhook_receiver.notification import AgentNotification  # noqa: E402
from webhook_receiver.receiver_metrics import ReceiverMetrics  # noqa: E402
from webhook_receiver.store import SqliteIncidentStore  # noqa: E402

AGENTS = [f"agent-{n:02d}" for n in range(50)]
DAYS = 30
RETENTION_DAYS = 7
MINUTE = 60.0
START = 1_780_000_000.0  # 2026-05-28, a simulated clock: the store's and the trimmer's
FAULT_EVERY_MINUTES, FAULT_MINUTES = 720, 120


class SimulatedClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def faulty(agent_index: int, minute: int) -> bool:
    return (minute + agent_index * 29) % FAULT_EVERY_MINUTES < FAULT_MINUTES


def webhook(agent: str, firing: bool, starts_at: str) -> tuple[str, AgentNotification]:
    """Alertmanager's body for one agent's group (about 1.2 kB, as real ones) and what the receiver reads of it."""
    status = "firing" if firing else "resolved"
    labels = {"alertname": "AgentTransientError", "agent": agent, "autonomy_class": "TRANSIENT", "code": "TIMEOUT",
              "severity": "warning", "domain": "Revenue", "job": "autonomy-exporter", "instance": "exporter:9817"}
    alert = {"status": status, "labels": labels, "fingerprint": f"{agent}-transient", "startsAt": starts_at,
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus:9090/graph?g0.expr=autonomy_agent"
             "_error_code%7Bcode%3D%22TIMEOUT%22%7D+%3D%3D+1&g0.tab=1",
             "annotations": {"summary": f"{agent} fails its tasks with TIMEOUT",
                             "description": "The agent's last tasks failed with a transient error; the layer "
                                            "restarts it and retries the task (RestartAndRetryTransient).",
                             "runbook_url": "http://receiver:8080/runbooks/AgentTransientError"}}
    body = {"version": "4", "groupKey": f'{{}}:{{agent="{agent}"}}', "status": status, "receiver": "autonomy",
            "groupLabels": {"agent": agent}, "commonLabels": labels, "commonAnnotations": alert["annotations"],
            "externalURL": "http://alertmanager:9093", "truncatedAlerts": 0, "alerts": [alert]}
    ref = AlertRef(alert["fingerprint"], status, labels, starts_at)
    return json.dumps(body), AgentNotification(agent, (ref,))


def lineage_line(store: SqliteIncidentStore, clock: SimulatedClock, agent: str, incident_id: str, event: str) -> None:
    """A lineage entry shaped as the receiver's (about 700 bytes)."""
    entry = {"ts": iso(clock.now), "actor": "autonomy-layer", "event": event, "agent": agent,
             "incident_id": incident_id, "classification": "TRANSIENT", "playbook": "RestartAndRetryTransient",
             "attempt": 1, "ok": event != "escalation", "reason": "AgentTransientError firing: TIMEOUT",
             "before": {"successRate": 0.42, "alignment": 0.97, "backlogAgeMinutes": 12, "errorCode": "TIMEOUT"},
             "after": {"successRate": 0.99, "alignment": 0.98, "backlogAgeMinutes": 2, "errorCode": None},
             "steps": [{"primitive": "restartAgent", "status": 200, "ms": 21},
                       {"primitive": "retryTask", "status": 200, "ms": 18}],
             "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
    store.append_lineage(entry, json.dumps(entry, separators=(",", ":")))


def size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def simulate(workdir: Path, retention: bool) -> dict:
    """Sizes at the end of each simulated day (bytes), the largest WAL seen, and the rows left at the end."""
    path = workdir / ("kept.sqlite3" if retention else "unbounded.sqlite3")
    clock = SimulatedClock(START)
    store = SqliteIncidentStore(path, clock=clock)
    trimmer = RetentionTrimmer(store, RETENTION_DAYS, ReceiverMetrics(), clock=clock, pause=0)
    sizes, largest_wal, onset = [], 0, {}
    wal = path.with_name(path.name + "-wal")
    for minute in range(DAYS * 24 * 60):
        clock.now = START + minute * MINUTE
        index = minute % len(AGENTS)
        agent = AGENTS[index]
        firing = faulty(index, minute)
        if firing:
            onset.setdefault(agent, iso(clock.now))
        body, item = webhook(agent, firing, onset.get(agent, iso(clock.now)))
        result = store.ingest("alertmanager", body, [item])
        incident = store.open_for(agent)
        if incident is not None and firing:
            lineage_line(store, clock, agent, incident.id, "auto_remediation" if result.opened else "no_action")
        elif incident is not None:  # resolved: a worker holding it closes it when its attempt ends
            store.update(incident.id, state="closed", closed_at=clock.now, outcome="self_resolved_after_failure")
            lineage_line(store, clock, agent, incident.id, "no_action")
            onset.pop(agent, None)
        if retention and minute % 60 == 59:
            trimmer.trim_round()
        largest_wal = max(largest_wal, wal.stat().st_size if wal.exists() else 0)
        if minute % (24 * 60) == 24 * 60 - 1:
            sizes.append(size(path))
    rows = {"notifications": store.notification_count(), "incidents": len(store.list(limit=100_000)),
            "lineage": len(store.lineage_after(0, 1_000_000))}
    store.close()
    return {"sizes": sizes, "largest_wal": largest_wal, "rows": rows}


def run() -> dict:
    # tmpfs when there is one: the sizes are the same, and its fsyncs (about 90,000 per run) cost nothing.
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    workdir = Path(tempfile.mkdtemp(prefix="autonomy-retention-", dir=base))
    try:
        started = time.perf_counter()
        kept = simulate(workdir, retention=True)
        unbounded = simulate(workdir, retention=False)
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    mb = [s / 1e6 for s in kept["sizes"]]
    print(f"  with retention ({RETENTION_DAYS} days), MB by day: " + " ".join(f"{m:.1f}" for m in mb), file=sys.stderr)
    print("  without, MB by day: " + " ".join(f"{s / 1e6:.1f}" for s in unbounded["sizes"]), file=sys.stderr)
    print(f"  rows left with retention: {kept['rows']}, without: {unbounded['rows']}; {seconds:.0f}s", file=sys.stderr)
    return {
        "sqlite_retention_mb_day7": round(mb[6], 2),
        "sqlite_retention_mb_day14": round(mb[13], 2),
        "sqlite_retention_mb_day30": round(mb[29], 2),
        "sqlite_retention_day30_over_day8": round(mb[29] / mb[7], 3),
        "sqlite_retention_largest_wal_mb": round(kept["largest_wal"] / 1e6, 2),
        "sqlite_no_retention_mb_day30": round(unbounded["sizes"][29] / 1e6, 2),
    }


if __name__ == "__main__":
    print(json.dumps(run(), sort_keys=True))
