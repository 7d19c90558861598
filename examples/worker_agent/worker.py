"""An example agent: a worker with a queue, a flaky upstream and a config file, attached to the layer in one line.

    python examples/worker_agent/worker.py examples/worker_agent/worker.yaml

Each task fetches its input from the upstream. A call that times out fails the task: the worker reports
TIMEOUT and stops taking tasks until the layer restarts it and retries the task (restartAgent, retryLastTask).
A stale answer is reported as STALE_DATA: the layer's DATA_DEP playbook starts with refreshCache, which this
worker does not implement, so the layer escalates ("agent does not implement refreshCache").
"""
from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import requests
import yaml
from flask import Flask, jsonify
from werkzeug.serving import make_server

from autonomy.agent import ActionRequest, ActionResult, AgentReport, attach


class FlakyUpstream:
    """The builtin upstream: every Nth call hangs past the worker's timeout, every Mth answers stale data."""

    def __init__(self, timeout_every: int, stale_every: int, hang_seconds: float):
        self.calls = itertools.count(1)
        self.timeout_every, self.stale_every, self.hang_seconds = timeout_every, stale_every, hang_seconds
        self.app = Flask("flaky-upstream")
        self.app.add_url_rule("/input", view_func=self.answer)

    def answer(self):
        n = next(self.calls)
        if self.timeout_every and n % self.timeout_every == 0:
            time.sleep(self.hang_seconds)  # a hung upstream, for the example's sake
        return jsonify({"value": n, "stale": bool(self.stale_every and n % self.stale_every == 0)})


class Worker:
    """Takes queued tasks one at a time; a failed task stops it until the layer retries that task."""

    def __init__(self, config: dict, upstream_url: str, per_minute: float):
        self.upstream_url, self.timeout = upstream_url, float(config["upstream"].get("timeoutSeconds", 1))
        self.per_minute = per_minute
        self.queue: deque[tuple[int, float]] = deque(maxlen=10_000)  # (task, when it was queued)
        self.failed_task: tuple[int, float] | None = None
        self.results: deque[bool] = deque(maxlen=50)  # the recent tasks: the success rate's window
        self.session = requests.Session()
        self.running = threading.Lock()  # one task at a time: the loop's, or the one the layer retries
        self.agent = None  # attached in main()

    def report(self) -> None:
        """Tell the layer how the worker is, now: the success rate and how long the oldest task has waited."""
        oldest = self.failed_task or (self.queue[0] if self.queue else None)
        rate = sum(self.results) / len(self.results) if self.results else 1.0
        self.agent.update(success_rate=round(rate, 3), queue_depth=len(self.queue) + bool(self.failed_task),
                          backlog_minutes=round((time.time() - oldest[1]) / 60, 2) if oldest else 0.0,
                          checks={**self.agent.report.checks, "lastTaskSucceeded": self.failed_task is None})

    def run_task(self, task: tuple[int, float]) -> bool:
        """One task (under `running`): fetch its input; False if the call failed (the task is kept to retry)."""
        try:
            answer = self.session.get(self.upstream_url, params={"task": task[0]}, timeout=self.timeout).json()
        except (requests.RequestException, ValueError) as exc:
            self.failed_task = task
            self.results.append(False)
            code = "TIMEOUT" if isinstance(exc, requests.Timeout) else "OTHER"
            self.agent.update(status="error", error_code=code, last_report=f"task {task[0]} failed: {code}")
            return False
        self.failed_task = None
        self.results.append(True)
        stale = bool(answer.get("stale"))
        self.agent.update(status="degraded" if stale else "healthy", error_code="STALE_DATA" if stale else None,
                          last_report=f"task {task[0]}: {'stale input' if stale else 'done'}",
                          checks={**self.agent.report.checks, "inputsValid": not stale})
        return True

    def loop(self, stop: threading.Event) -> None:
        """Queue a task every 60/per_minute seconds; work the queue while no task is failed."""
        tasks, every = itertools.count(1), 60.0 / self.per_minute
        next_task = time.monotonic()
        while not stop.is_set():
            if time.monotonic() >= next_task:
                self.queue.append((next(tasks), time.time()))
                next_task += every
            with self.running:
                if self.failed_task is None and self.queue:
                    self.run_task(self.queue.popleft())
            self.report()
            if self.failed_task is not None or not self.queue:
                stop.wait(max(0.0, min(every, next_task - time.monotonic())))

    # -- what the layer may ask (pack §5 primitives this worker implements) ------------------------------
    def restart(self, request: ActionRequest) -> dict:
        """A soft restart: a fresh connection pool; a hard one also drops the failed task."""
        with self.running:
            self.session.close()
            self.session = requests.Session()
            if request.body.get("mode") == "hard":
                self.failed_task = None
        self.report()
        return {"restarted": True, "mode": request.body.get("mode", "soft")}

    def retry_last_task(self, request: ActionRequest):
        """Run the failed task again, up to `max` times `backoffMs` apart."""
        with self.running:
            task = self.failed_task
            if task is None:
                return {"retried": None}
            for n in range(int(request.body.get("max", 1))):
                if n:
                    time.sleep(int(request.body.get("backoffMs", 0)) / 1000)  # the layer asked for this spacing
                if self.run_task(task):
                    break
        self.report()
        if self.failed_task is None:
            return {"retried": task[0], "ok": True}
        return ActionResult(503, {"error": f"task {task[0]} failed again"}, {"Retry-After": "2"})

    def validate_inputs(self, request: ActionRequest) -> dict:
        return {"inputsValid": self.agent.report.checks.get("inputsValid", True)}


def load_config(path: Path) -> dict:
    config = yaml.safe_load(path.read_text())
    missing = [k for k in ("name", "domain", "listen", "connection", "upstream") if k not in (config or {})]
    if missing:
        raise SystemExit(f"{path}: missing {', '.join(missing)}")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the worker's YAML configuration")
    config_path = parser.parse_args(argv).config.resolve()
    config = load_config(config_path)
    connection_path = (config_path.parent / config["connection"]).resolve()
    try:
        connection = json.loads(connection_path.read_text())
    except OSError as exc:
        raise SystemExit(f"{connection_path}: {exc.strerror}; start the layer first "
                         "(make demo DEMO_ARGS=--keep-running)") from None
    stop = threading.Event()
    servers = []
    url = config["upstream"]["url"]
    if url == "builtin":
        flaky = config["upstream"].get("flaky", {})
        upstream = FlakyUpstream(int(flaky.get("timeoutEvery", 0)), int(flaky.get("staleEvery", 0)),
                                 3 * float(config["upstream"].get("timeoutSeconds", 1)))
        server = make_server("127.0.0.1", 0, upstream.app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_port}/input"
    worker = Worker(config, url, float(config.get("tasksPerMinute", 60)))
    # The one line (pack §10): its actions served on listen.port, its signal pushed to the layer.
    worker.agent = attach(None, name=config["name"], domain=config["domain"], layer_url=connection["exporterUrl"],
                          push_token=connection["pushToken"], action_token=connection["agentToken"],
                          interval=float(config.get("heartbeatSeconds", 15)),
                          host=config["listen"]["host"], port=int(config["listen"]["port"]),
                          report=AgentReport(checks={"lastTaskSucceeded": True, "inputsValid": True}, queue_depth=0),
                          handlers={"restartAgent": worker.restart, "retryLastTask": worker.retry_last_task,
                                    "validateInputs": worker.validate_inputs})
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"{config['name']}: actions on {worker.agent.url}, reporting to {connection['exporterUrl']}", flush=True)
    try:
        worker.loop(stop)
    except KeyboardInterrupt:
        pass
    finally:
        worker.agent.stop()
        for server in servers:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
