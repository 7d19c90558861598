"""Benchmark: webhook ingest on PostgreSQL with 1 and 2 `autonomy receiver` processes sharing one database (a real,
durable server started here): alerts/s, p99 ack, the ratio of 2 processes to 1, every acknowledged alert counted back
in the store, and the CPU seconds of the client, the receivers and PostgreSQL (they share this machine's cores)."""
from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from http.client import HTTPConnection
from pathlib import Path

import requests

from bench.receiver_ingest import ALERTS_PER_WEBHOOK, webhook
from devstack.local_stack import MissingBinary
from devstack.polling import wait_until
from devstack.records import every_incident, stored_bodies
from devstack.storm import bench_receiver

WEBHOOKS = 300
AGENTS = 1000
THREADS = 8  # for both runs: with 2 receivers, 4 connections each
WARMUP = 10  # webhooks per receiver, for agents of their own, before the measured load
RESOLVED_EVERY = 10  # one alert in 10 is resolved: it closes its agent's incident, a later firing opens another
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def body(n: int, agents: int, prefix: str = "agent") -> bytes:
    """receiver_ingest's n-th notification (100 alerts, repeats over AGENTS are duplicates), some alerts resolved."""
    doc = json.loads(webhook(n, agents))
    for j, alert in enumerate(doc["alerts"]):
        alert["labels"]["agent"] = alert["labels"]["agent"].replace("agent", prefix, 1)
        if (n + j) % RESOLVED_EVERY == 0 and n * ALERTS_PER_WEBHOOK >= agents:  # every agent fired once first
            alert["status"], alert["endsAt"] = "resolved", "2026-11-26T00:05:00Z"
    return json.dumps(doc).encode()


def _load(targets: list[tuple[int, str]], bodies: list[bytes], threads: int, results: multiprocessing.Queue) -> None:
    """The load generator (its own process): webhook n goes to target n % len(TARGETS), over keep-alive connections."""
    latencies: list[float] = []
    codes: list[tuple[int, int]] = []
    lock = threading.Lock()

    def worker(mine: list[tuple[int, bytes]]) -> None:
        connections: dict[int, HTTPConnection] = {}
        for index, data in mine:
            port, token = targets[index % len(targets)]
            conn = connections.setdefault(port, HTTPConnection("127.0.0.1", port, timeout=60))
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
            while True:
                start = time.perf_counter()
                conn.request("POST", "/api/v1/alerts", body=data, headers=headers)
                reply = conn.getresponse()
                reply.read()
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    codes.append((index, reply.status))
                if reply.status != 503:
                    break
        for conn in connections.values():
            conn.close()

    items = list(enumerate(bodies))
    pool = [threading.Thread(target=worker, args=(items[k::threads],)) for k in range(threads)]
    cpu, started = time.process_time(), time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    results.put({"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
                 "latencies": latencies, "codes": codes})


def _drive(targets: list[tuple[int, str]], bodies: list[bytes], threads: int) -> dict:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_load, args=(targets, bodies, threads, queue))
    process.start()
    result = queue.get(timeout=600)
    process.join(timeout=60)
    return result


def _cpu_seconds(pid: int, children_too: bool = False) -> float:
    """A process's user + system CPU seconds from /proc (with its reaped children's when CHILDREN_TOO)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children_too else 0)
    return ticks / CLOCK_TICKS


def _machine_cpu_seconds() -> float:
    """Every core's busy seconds since boot (user, nice, system, irq, softirq, steal), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return sum(int(fields[k]) for k in (0, 1, 2, 5, 6, 7)) / CLOCK_TICKS


def _postgres_cpu_seconds(postmaster: int) -> float:
    """The postmaster's CPU, its exited backends' (it reaps them) and its live children's."""
    total = _cpu_seconds(postmaster, children_too=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    total += _cpu_seconds(int(entry.name))
            except (OSError, ValueError, IndexError):  # the process exited while we looked
                continue
    return total


def _idle(url: str) -> bool:
    text = requests.get(f"{url}/metrics", timeout=5).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("autonomy_work_queue_depth ", "autonomy_remediations_in_flight "))}
    return values.get("autonomy_work_queue_depth") == 0 and values.get("autonomy_remediations_in_flight") == 0


def _count(store_url: str) -> tuple[int, int, int, int]:
    """(alerts in the stored notifications, the measured agents' incidents and how many agents have one, the most
    open incidents of one agent)."""
    from webhook_receiver.store.postgres_store import PostgresIncidentStore

    store = PostgresIncidentStore(store_url, 300)
    try:
        stored = sum(len(json.loads(b)["alerts"]) for b in stored_bodies(store))
        open_per_agent = max(Counter(i.agent for i in store.open_incidents() if not i.conflict_key).values(),
                             default=0)
        measured = [i for i in every_incident(store) if i.agent.startswith("agent-")]
        return stored, len(measured), len({i.agent for i in measured}), open_per_agent
    finally:
        store.close()


def run_processes(processes: int, store_url: str, postmaster: int, workdir: Path, bodies: list[bytes]) -> dict:
    """PROCESSES receivers on STORE_URL, warmed up, then the measured load spread round-robin over them."""
    env = {"AUTO_REMEDIATE": "false", "AUTOREM_WORKERS": "1", "AUTOREM_QUEUE_SIZE": str(AGENTS * 20),
           "AUTOREM_STORE_URL": store_url, "AUTOREM_PROMETHEUS_URL": "http://127.0.0.1:9",
           "AUTOREM_ALERTMANAGER_URL": ""}
    with ExitStack() as stack:
        receivers = [stack.enter_context(bench_receiver(workdir / f"receiver-{k}", env)) for k in range(processes)]
        targets = [(r.port, r.token) for r in receivers]
        warmup = [body(n, AGENTS, "warmup") for n in range(WARMUP * processes)]
        _drive(targets, warmup, THREADS)  # the first incidents, pooled connections, caches
        wait_until(lambda: all(_idle(r.url) for r in receivers), 120, "the receivers to drain the warm-up")
        cpu_before = [_cpu_seconds(r.process.pid) for r in receivers], _postgres_cpu_seconds(postmaster)
        machine_before = _machine_cpu_seconds()
        measured = _drive(targets, bodies, THREADS)
        machine_cpu = _machine_cpu_seconds() - machine_before
        receiver_cpu = sum(_cpu_seconds(r.process.pid) for r in receivers) - sum(cpu_before[0])
        postgres_cpu = _postgres_cpu_seconds(postmaster) - cpu_before[1]
    stored, incidents, agents_with_incidents, open_per_agent = _count(store_url)
    acked = {index for index, code in measured["codes"] if code == 200}
    acked_alerts = (len(acked) + len(warmup)) * ALERTS_PER_WEBHOOK
    latencies = sorted(measured["latencies"])
    seconds = measured["seconds"]
    name = f"pg_ingest_{processes}p"
    return {
        f"{name}_alerts_per_s": round(len(bodies) * ALERTS_PER_WEBHOOK / seconds, 1),
        f"{name}_p99_ack_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1),
        f"{name}_median_ack_ms": round(statistics.median(latencies) * 1000, 1),
        f"{name}_not_200": sum(1 for _, code in measured["codes"] if code != 200),
        f"{name}_unacked_webhooks": len(bodies) - len(acked),
        f"{name}_lost": max(0, acked_alerts - stored),
        f"{name}_stored_alerts": stored,
        f"{name}_incidents": incidents,
        f"{name}_agents_with_incidents": agents_with_incidents,
        f"{name}_open_incidents_per_agent_max": open_per_agent,
        f"{name}_cpu_client_s": round(measured["cpu_seconds"], 2),
        f"{name}_cpu_receivers_s": round(receiver_cpu, 2),
        f"{name}_cpu_postgres_s": round(postgres_cpu, 2),
        f"{name}_cores_busy": round((measured["cpu_seconds"] + receiver_cpu + postgres_cpu) / seconds, 2),
        f"{name}_cores_busy_machine": round(machine_cpu / seconds, 2),  # with whatever else ran meanwhile
    }


def run(webhooks: int = WEBHOOKS) -> dict:
    try:
        from devstack.postgres_server import PostgresServer

        server = PostgresServer()
    except MissingBinary as exc:
        print(f"  postgresql skipped: {exc}", file=sys.stderr)
        return {}
    bodies = [body(n, AGENTS) for n in range(webhooks)]
    figures: dict = {"pg_ingest_webhooks": webhooks, "pg_ingest_alerts_per_webhook": ALERTS_PER_WEBHOOK,
                     "pg_ingest_agents": AGENTS, "pg_ingest_load_threads": THREADS, "pg_ingest_cores": os.cpu_count()}
    try:
        server.start(durable=True)  # fsync and synchronous commits on: an ack means what it means when deployed
        postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
        with tempfile.TemporaryDirectory(prefix="bench-pg-ingest-") as tmp:
            for processes in (1, 2):
                url = server.create_database()
                try:
                    figures.update(run_processes(processes, url, postmaster, Path(tmp) / f"{processes}p", bodies))
                finally:
                    server.drop_database(url)
                print(f"  {processes} receiver(s): {figures[f'pg_ingest_{processes}p_alerts_per_s']:,} alerts/s, "
                      f"p99 {figures[f'pg_ingest_{processes}p_p99_ack_ms']} ms", file=sys.stderr)
    finally:
        server.stop()
    figures["pg_ingest_2p_over_1p_alerts_per_s"] = round(
        figures["pg_ingest_2p_alerts_per_s"] / figures["pg_ingest_1p_alerts_per_s"], 2)
    figures["pg_ingest_2p_over_1p_p99_ack"] = round(
        figures["pg_ingest_2p_p99_ack_ms"] / figures["pg_ingest_1p_p99_ack_ms"], 2)
    return figures


if __name__ == "__main__":  # python -m bench.pg_ingest
    result = run()
    for key in sorted(result):
        print(f"{key}: {result[key]}")
    print(json.dumps(result, sort_keys=True))
