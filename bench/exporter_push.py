"""Benchmark: signals pushed per second to `autonomy exporter`, one per request and in batches of 100.

The exporter runs as in production (`autonomy exporter`: waitress with the layer's server options, 8 threads) in
its own process; the load comes from another process over several keep-alive connections, each request built
beforehand and its answer read by hand (http.client costs more per request than the exporter does). Every
heartbeat is newer than the last and changes what a heartbeat changes (ts, queue depth, backlog age), over a
fleet the exporter already holds. The 2 cores are shared by the two processes, so the context is measured
too: the same load against waitress answering at once, the body read and dropped (`bare_*`: the server's own
ceiling), against a socket that answers at once (`client_ceiling_*`: the client's), and the CPU each costs.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.exporter_scrape import fleet
from bench.receiver_ingest import stop_process
from devstack.local_stack import free_port
from devstack.polling import wait_until

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
BATCH = 100
# Waitress as the exporter runs it, and a WSGI app that reads the body and answers: the server's own ceiling.
BARE_SERVER = """
import sys
from autonomy.http_edge import create_waitress_server
BODY = b'{"ignored_older":0,"stored":1}\\n'
def app(environ, start_response):
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
create_waitress_server(app, "127.0.0.1", int(sys.argv[1]), 8).run()
"""
# A socket that answers each request as soon as it has read it: what the client alone can reach.
CANNED_SERVER = """
import socket, sys, threading
BODY = b'{"ignored_older":0,"stored":1}\\n'
REPLY = b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(BODY), BODY)
def serve(conn):
    buf = b""
    with conn:
        while True:
            while b"\\r\\n\\r\\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\\r\\n\\r\\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
            while len(buf) < length:
                buf += conn.recv(65536)
            buf = buf[length:]
            conn.sendall(REPLY)
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
"""


def heartbeats(agents: int, count: int, start: float) -> list[list[bytes]]:
    """COUNT heartbeats of a fleet of AGENTS, one a second from START: each signal JSON-encoded."""
    docs = fleet(agents)
    rounds = []
    for n in range(count):
        ts = datetime.fromtimestamp(start + n, timezone.utc).isoformat()
        for i, doc in enumerate(docs):
            doc["ts"] = ts
            doc["context"]["queueDepth"] = (i + n) % 9
            doc["metrics"]["backlogAgeMinutes"] = (i + n) % 30
        rounds.append([json.dumps(doc).encode() for doc in docs])
    return rounds


def requests_of(signals: list[bytes], per_request: int) -> list[bytes]:
    bodies = signals if per_request == 1 else [b"[" + b", ".join(signals[i:i + per_request]) + b"]"
                                               for i in range(0, len(signals), per_request)]
    head = (f"POST /api/v1/signals HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: ").encode()
    return [head + b"%d\r\n\r\n" % len(body) + body for body in bodies]


def _load(port: int, requests: list[bytes], connections: int, results: multiprocessing.Queue) -> None:
    """The load generator (its own process): CONNECTIONS keep-alive connections share the requests."""
    failures: list[bytes] = []

    def worker(mine: list[bytes]) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            for request in mine:
                sock.sendall(request)
                while (end := buf.find(b"\r\n\r\n")) < 0:
                    buf += sock.recv(65536)
                head = buf[:end].lower()
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buf) < end + 4 + length:
                    buf += sock.recv(65536)
                if not head.startswith(b"http/1.1 200"):
                    failures.append(buf[:end + 4 + length])
                buf = buf[end + 4 + length:]

    pool = [threading.Thread(target=worker, args=(requests[k::connections],)) for k in range(connections)]
    cpu, started = time.process_time(), time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    results.put({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu, "failures": failures})


def _cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds of process PID so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drive(server: subprocess.Popen, port: int, requests: list[bytes], connections: int) -> dict:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_load, args=(port, requests, connections, queue))
    before = _cpu_seconds(server.pid)
    process.start()
    result = queue.get(timeout=300)
    process.join(timeout=60)
    after = _cpu_seconds(server.pid)
    if result["failures"]:
        raise RuntimeError(f"{len(result['failures'])} pushes failed, e.g. {result['failures'][0][:300]!r}")
    result["server_cpu"] = None if before is None or after is None else after - before
    return result


def _serve(command: list[str], port: int) -> subprocess.Popen:
    env = {**os.environ, "AUTOREM_EXPORTER_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    wait_until(ready, 60, f"{command[0]} to serve")
    return process


def _measure(command: list[str], phases: dict[str, list[list[bytes]]], connections: int) -> dict:
    """Start a server, and for each phase drive its first load (the warm-up) and then the others; per phase the
    median signals/s, and the median CPU (µs) per signal of the server and per request of the client."""
    port = free_port()
    server = _serve([*command, str(port)], port)
    out = {}
    try:
        for name, loads in phases.items():
            per = BATCH if name == "batched" else 1
            _drive(server, port, loads[0], connections)
            runs = [_drive(server, port, load, connections) for load in loads[1:]]
            out[f"{name}_per_s"] = round(statistics.median(len(load) * per / r["seconds"]
                                                           for load, r in zip(loads[1:], runs)))
            out[f"{name}_client_cpu_us"] = round(statistics.median(r["cpu"] / len(load) * 1e6
                                                                   for load, r in zip(loads[1:], runs)))
            if all(r["server_cpu"] is not None for r in runs):
                out[f"{name}_server_cpu_us"] = round(statistics.median(
                    r["server_cpu"] / (len(load) * per) * 1e6 for load, r in zip(loads[1:], runs)), 1)
    finally:
        stop_process(server)
    return out


def run(agents: int = 10_000, single_agents: int = 4_000, rounds: int = 3, connections: int = 4) -> dict:
    # Every heartbeat in the past, each newer than the one before: two per batched load, then one per single load.
    beats = heartbeats(agents, 3 * (rounds + 1), time.time() - 120)
    batched = [requests_of(beats[k] + beats[k + 1], BATCH) for k in range(0, 2 * (rounds + 1), 2)]
    single = [requests_of(beat[:single_agents], 1) for beat in beats[2 * (rounds + 1):]]
    phases = {"batched": batched, "single": single}  # the batched warm-up stores the fleet: it is held from then on
    autonomy = str(Path(sys.executable).with_name("autonomy"))
    exporter = _measure([autonomy, "exporter", "--port"], phases, connections)
    bare = _measure([sys.executable, "-c", BARE_SERVER], phases, connections)
    canned = _measure([sys.executable, "-c", CANNED_SERVER], phases, connections)
    figures = {
        "exporter_push_single_per_s": exporter["single_per_s"],
        "exporter_push_batched_per_s": exporter["batched_per_s"],
        "exporter_push_bare_single_per_s": bare["single_per_s"],
        "exporter_push_bare_batched_per_s": bare["batched_per_s"],
        "exporter_push_client_ceiling_single_per_s": canned["single_per_s"],
        "exporter_push_client_ceiling_batched_per_s": canned["batched_per_s"],
        "exporter_push_client_cpu_us_per_request": exporter["single_client_cpu_us"],
        "exporter_push_client_cpu_us_per_batch": exporter["batched_client_cpu_us"],
    }
    for name in ("single", "batched"):
        if f"{name}_server_cpu_us" in exporter:
            figures[f"exporter_push_{name}_server_cpu_us_per_signal"] = exporter[f"{name}_server_cpu_us"]
            figures[f"exporter_push_bare_{name}_server_cpu_us_per_signal"] = bare[f"{name}_server_cpu_us"]
    return {**figures, "exporter_push_agents": agents, "exporter_push_single_agents": single_agents,
            "exporter_push_batch": BATCH, "exporter_push_connections": connections, "exporter_push_rounds": rounds}


if __name__ == "__main__":
    print(run())
