"""Benchmark: one scrape of the exporter holding 10,000 agents, over HTTP on loopback."""
from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone

import requests

from autonomy.settings import Settings
from autonomy.signal_contract import validate_signals
from devstack.local_stack import ServedApp
from exporter.app import create_app

CODES = ("TIMEOUT", "RATE_LIMIT", None, None, "INPUT_MISSING", None)


def fleet(n: int) -> list[dict]:
    """N realistic signals: dependencies, directives, some errors and conflicts, checks."""
    ts = datetime.now(timezone.utc).isoformat()
    docs = []
    for i in range(n):
        context = {"directiveId": f"D-{i // 2}", "queueDepth": i % 9, "dependencies": [f"agent-{(i + 1) % n}"]}
        if CODES[i % len(CODES)]:
            context["errorCode"] = CODES[i % len(CODES)]
        if i % 50 == 0:
            context["conflictId"] = f"C-{i}"
        docs.append({
            "agent": f"agent-{i}", "domain": ("Revenue", "Marketing", "Content")[i % 3],
            "status": ("healthy", "degraded", "error")[i % 3], "lastReport": "bench",
            "metrics": {"successRate": 0.9, "alignment": 0.95, "backlogAgeMinutes": i % 30,
                        "costBurnRatePerHour": 0.25},
            "context": context, "checks": {"lastTaskSucceeded": True, "inputsValid": True},
            "ts": ts,
        })
    return docs


def run(agents: int = 10_000, scrapes: int = 15) -> dict:
    app = create_app({"SETTINGS": Settings.from_env({}), "INSECURE": True})
    app.extensions["autonomy_exporter"].store.put_many(validate_signals(fleet(agents)))
    timings, size = [], 0
    with ServedApp(app) as server, requests.Session() as session:
        for _ in range(scrapes):
            start = time.perf_counter()
            reply = session.get(server.url + "/metrics", timeout=60)
            size = len(reply.content)
            timings.append((time.perf_counter() - start) * 1000)
    return {"exporter_scrape_ms_10k": round(statistics.median(timings), 1),
            "exporter_scrape_ms_10k_max": round(max(timings), 1),
            "exporter_scrape_bytes_10k": size, "exporter_agents": agents}


if __name__ == "__main__":
    print(run())
