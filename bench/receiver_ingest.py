"""Benchmark: alerts durably ingested per second by the receiver, against a bare handler on the same stack."""
from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.client import HTTPConnection
from pathlib import Path

import requests

from devstack.local_stack import free_port
from devstack.polling import wait_until
from devstack.records import LEDGER_FILE, stored_bodies
from webhook_receiver.store import SqliteIncidentStore

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
ALERTS_PER_WEBHOOK = 100
# The same stack as the receiver (Flask on waitress, 16 threads), parsing the JSON and storing nothing.
BARE_SERVER = """
import json, sys
from flask import Flask, jsonify, request
from waitress import serve
app = Flask("bare")
@app.post("/api/v1/alerts")
def alerts():
    doc = json.loads(request.get_data())
    return jsonify({"alerts": len(doc["alerts"])})
@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=16, ident="autonomy")
"""

# The floor of any durable receiver on this stack: the bare handler plus one SQLite commit of the body
# (WAL, synchronous=FULL, like the ledger) and nothing else.
STORE_ONLY_SERVER = """
import json, sqlite3, sys, threading
from flask import Flask, jsonify, request
from waitress import serve
app = Flask("store-only")
db = sqlite3.connect(sys.argv[2], check_same_thread=False, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE notifications (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
lock = threading.Lock()
@app.post("/api/v1/alerts")
def alerts():
    raw = request.get_data()
    doc = json.loads(raw)
    with lock:
        db.execute("INSERT INTO notifications (body) VALUES (?)", (raw.decode("utf-8"),))
    return jsonify({"alerts": len(doc["alerts"])})
@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=16, ident="autonomy")
"""


def webhook(n: int, agents: int) -> bytes:
    """The n-th notification: 100 firing alerts over 100 agents of a fleet of AGENTS (repeats are duplicates)."""
    base = (n * ALERTS_PER_WEBHOOK) % agents
    alerts = [{"status": "firing", "labels": {
        "alertname": "AgentTransientError", "agent": f"agent-{(base + j) % agents}", "autonomy_class": "TRANSIENT",
        "severity": "warning", "code": "TIMEOUT", "job": "autonomy-exporter", "instance": "exporter:9817"},
        "annotations": {"summary": "An agent reports a transient error.", "description": "TIMEOUT",
                        "runbook_url": "http://localhost:9818/runbooks/AgentTransientError.md"},
        "startsAt": "2026-11-26T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph", "fingerprint": f"{(base + j) % agents:016x}"}
        for j in range(ALERTS_PER_WEBHOOK)]
    return json.dumps({"version": "4", "status": "firing", "receiver": "autonomy-receiver", "groupKey": f"g{n}",
                       "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                       "externalURL": "http://alertmanager:9093", "truncatedAlerts": 0, "alerts": alerts}).encode()


def _load(port: int, bodies: list[bytes], threads: int, results: multiprocessing.Queue) -> None:
    """The load generator (its own process): THREADS keep-alive connections share the bodies."""
    latencies: list[float] = []
    codes: list[tuple[int, int]] = []
    lock = threading.Lock()

    def worker(mine: list[tuple[int, bytes]]) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        for index, body in mine:
            while True:
                start = time.perf_counter()
                conn.request("POST", "/api/v1/alerts", body=body, headers=headers)
                reply = conn.getresponse()
                reply.read()
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    codes.append((index, reply.status))
                if reply.status != 503:
                    break
        conn.close()

    items = list(enumerate(bodies))
    pool = [threading.Thread(target=worker, args=(items[k::threads],)) for k in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    results.put({"seconds": time.perf_counter() - started, "latencies": latencies, "codes": codes})


def _drive(port: int, bodies: list[bytes], threads: int) -> dict:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_load, args=(port, bodies, threads, queue))
    process.start()
    result = queue.get(timeout=600)
    process.join(timeout=60)
    return result


def _idle(port: int) -> bool:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("autonomy_work_queue_depth ", "autonomy_remediations_in_flight "))}
    return values.get("autonomy_work_queue_depth") == 0 and values.get("autonomy_remediations_in_flight") == 0


def _serve(command: list[str], port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code in (200, 404),
               60, f"{command[0]} to serve")
    return process


def stop_process(process: subprocess.Popen) -> None:
    """Terminate a benchmark's server process; kill it if it does not exit."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def _measure(command: list[str], bodies: list[bytes], threads: int, *args: str) -> dict:
    """Start a comparison server, warm it up, and drive the measured load against it."""
    port = free_port()
    server = _serve([*command, str(port), *args], port, dict(os.environ))
    try:
        _drive(port, bodies[:10], threads)
        return _drive(port, bodies, threads)
    finally:
        stop_process(server)


def run(webhooks: int = 300, agents: int = 1000, threads: int = 4) -> dict:
    bodies = [webhook(n, agents) for n in range(webhooks)]
    with tempfile.TemporaryDirectory(prefix="autonomy-bench-") as tmp:
        port = free_port()
        env = {**os.environ, "AUTOREM_WEBHOOK_TOKEN": TOKEN, "AUTO_REMEDIATE": "false",
               "AUTOREM_QUEUE_SIZE": str(agents * 2), "AUTOREM_PROMETHEUS_URL": "http://127.0.0.1:9",
               "AUTOREM_ALERTMANAGER_URL": "", "AUTOREM_PLAYBOOKS_FILE": str(REPO / "playbooks.yaml")}
        autonomy = str(Path(sys.executable).with_name("autonomy"))
        receiver = _serve([autonomy, "receiver", "--port", str(port), "--data-dir", tmp], port, env)
        try:
            _drive(port, bodies[:10], threads)  # warm-up: the first incidents, connections, caches
            wait_until(lambda: _idle(port), 120, "the receiver's workers to drain the warm-up's incidents")
            measured = _drive(port, bodies, threads)
        finally:
            stop_process(receiver)
        acked = {index for index, code in measured["codes"] if code == 200}
        store = SqliteIncidentStore(Path(tmp) / LEDGER_FILE)  # read through the store, the receiver stopped
        try:
            stored = sum(len(json.loads(body)["alerts"]) for body in stored_bodies(store))
            open_per_agent = max(Counter(i.agent for i in store.open_incidents() if not i.conflict_key).values(),
                                 default=0)
        finally:
            store.close()
    bare_result = _measure([sys.executable, "-c", BARE_SERVER], bodies, threads)
    with tempfile.TemporaryDirectory(prefix="autonomy-bench-") as tmp:
        store_only = _measure([sys.executable, "-c", STORE_ONLY_SERVER], bodies, threads,
                              str(Path(tmp) / "store-only.sqlite3"))
    alerts = len(bodies) * ALERTS_PER_WEBHOOK
    acked_alerts = (len(acked) + 10) * ALERTS_PER_WEBHOOK  # the warm-up's alerts are in the ledger too
    latencies = sorted(measured["latencies"])
    return {
        "alerts_per_s": round(alerts / measured["seconds"], 1),
        "bare_alerts_per_s": round(alerts / bare_result["seconds"], 1),
        "ratio": round((alerts / measured["seconds"]) / (alerts / bare_result["seconds"]), 3),
        "store_only_alerts_per_s": round(alerts / store_only["seconds"], 1),
        "p99_ack_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1),
        "median_ack_ms": round(statistics.median(latencies) * 1000, 1),
        "lost": max(0, acked_alerts - stored),
        "open_incidents_per_agent_max": open_per_agent,
        "webhooks": len(bodies), "alerts_per_webhook": ALERTS_PER_WEBHOOK, "agents": agents,
        "load_threads": threads,
    }


if __name__ == "__main__":
    print(run())
