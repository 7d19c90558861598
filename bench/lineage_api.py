"""Benchmark: GET /api/v1/lineage's latency with 10k, 100k and 1M stored entries, on SQLite and on PostgreSQL (a
real server started and stopped here), through the receiver's Flask app: the newest page, an agent's page, 10 pages
deep and an agent's 5 deep (cursors), and the newest page of the last hour (`since`; entries a second apart).
`run()` returns the medians and, per store, the worst ratio of 1M to 10k (goal: flat, within 2x)."""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from flask import Flask

from autonomy.settings import Secret, Settings
from devstack.checkout import PLAYBOOKS_FILE
from devstack.local_stack import MissingBinary, free_port
from webhook_receiver.app import create_app, shutdown
from webhook_receiver.lineage import PACK_FIELDS

SIZES = (10_000, 100_000, 1_000_000)
AGENTS = 30
PAGE = 50
DEPTH = 10
AGENT_DEPTH = 5  # an agent of 30 has 333 entries at 10k: 6 pages
RUNS = 101
CHUNK = 50_000  # entries per insert transaction
EVENTS = ("auto_remediation", "auto_remediation", "auto_remediation", "remediation_refused", "escalation")


def line(n: int, start: float) -> tuple[float, str, str, str, str]:
    """The n-th entry as LineageLog writes it (pack fields first, then the layer's), and its indexed columns."""
    agent, event, seconds = f"agent-{n % AGENTS}", EVENTS[n % len(EVENTS)], start + n
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{n % 1000:03d}Z"
    incident = f"{n // 3:032x}"
    entry = {"ts": ts, "actor": "ChiefOfStaff", "event": event, "agent": agent, "classification": "TRANSIENT",
             "playbook": "RestartAndRetryTransient", "attempt": n % 3 + 1, "ok": n % 4 != 0,
             "before": {"successRate": 0.82, "alignment": 0.9, "backlogAgeMinutes": 41, "costBurnRatePerHour": 0.4},
             "after": {"successRate": 0.97, "alignment": 0.95, "backlogAgeMinutes": 3, "costBurnRatePerHour": 0.4},
             "incident_id": incident, "trace_id": f"{n:032x}",
             "steps": [{"action": "restartAgent", "target": agent, "ok": True, "status": 200, "attempts": 1,
                        "duration_s": 0.041, "error": None}],
             "verification": {"ok": True, "reason": "checks hold", "checks": {"lastTaskSucceeded": True}}}
    assert list(entry)[:len(PACK_FIELDS)] == list(PACK_FIELDS)
    return seconds, agent, incident, event, json.dumps(entry, separators=(",", ":"))


def rows(first: int, last: int, start: float) -> Iterator[tuple]:
    return (line(n, start) for n in range(first, last))


def fill_sqlite(store, first: int, last: int, start: float) -> None:
    for low in range(first, last, CHUNK):
        with store._lock, store._transaction():
            store._db.executemany("INSERT INTO lineage (ts, agent, incident_id, event, entry) VALUES (?, ?, ?, ?, ?)",
                                  rows(low, min(last, low + CHUNK), start))


def fill_postgres(store, first: int, last: int, start: float) -> None:
    with store._pool.connection() as db:
        for low in range(first, last, CHUNK):
            with db.transaction(), db.cursor() as cur:
                with cur.copy("COPY lineage (ts, agent, incident_id, event, entry) FROM STDIN") as copy:
                    for row in rows(low, min(last, low + CHUNK), start):
                        copy.write_row(row)
        db.execute("ANALYZE lineage")  # as autovacuum would have, on a table that grew this much


def receiver_app(data_dir: Path, store_url: str | None) -> Flask:
    env = {"AUTOREM_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
           "AUTOREM_ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}", "AUTOREM_PLAYBOOKS_FILE": str(PLAYBOOKS_FILE)}
    if store_url:
        env["AUTOREM_STORE_URL"] = store_url
    return create_app({"SETTINGS": Settings.from_env(env), "DATA_DIR": data_dir, "START_ENGINE": False,
                       "WEBHOOK_TOKEN": Secret("AUTOREM_WEBHOOK_TOKEN", "bench-token-0123456789"),
                       "ENVIRON": {"AUTOREM_AGENT_TOKEN": "bench-agent-token-0123"}})  # nothing is called


def median_ms(get: Callable[[], object]) -> float:
    for _ in range(3):
        get()
    times = []
    for _ in range(RUNS):
        begin = time.perf_counter()
        get()
        times.append(time.perf_counter() - begin)
    return round(statistics.median(times) * 1000, 3)


def measure(app: Flask, hour_ago: str) -> dict[str, float]:
    """The medians of each query, in ms; each answer checked to be a full page."""
    web = app.test_client()

    def page(**params) -> dict:
        reply = web.get("/api/v1/lineage", query_string={"limit": PAGE, **params})
        assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
        body = reply.get_json()
        assert len(body["entries"]) == PAGE and body["next_cursor"], body.get("error")
        return body

    def deep(depth: int, **params) -> str:
        cursor = None
        for _ in range(depth - 1):
            cursor = page(**params, **({"cursor": cursor} if cursor else {}))["next_cursor"]
        return cursor

    newest, agent = deep(DEPTH), deep(AGENT_DEPTH, agent="agent-7")
    return {"newest": median_ms(lambda: page()), "agent": median_ms(lambda: page(agent="agent-7")),
            "deep10": median_ms(lambda: page(cursor=newest)),
            f"agent_deep{AGENT_DEPTH}": median_ms(lambda: page(agent="agent-7", cursor=agent)),
            "since_1h": median_ms(lambda: page(since=hour_ago))}


def run_store(name: str, store_url: str | None, workdir: Path) -> dict:
    app = receiver_app(workdir / name, store_url)
    store = app.extensions["autonomy_receiver"].store
    fill = fill_postgres if store_url else fill_sqlite
    start, filled, figures, by_size = time.time() - SIZES[-1], 0, {}, {}
    try:
        for size in SIZES:
            began = time.perf_counter()
            fill(store, filled, size, start)
            filled = size
            print(f"  {name}: {size:,} entries stored in {time.perf_counter() - began:.1f} s", file=sys.stderr)
            hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + size - 3600))
            by_size[size] = measure(app, hour_ago)
            for query, ms in by_size[size].items():
                figures[f"lineage_api_{name}_{query}_ms_{size // 1000}k"] = ms
    finally:
        shutdown(app)
    ratios = {q: by_size[SIZES[-1]][q] / by_size[SIZES[0]][q] for q in by_size[SIZES[0]]}
    figures[f"lineage_api_{name}_1m_over_10k"] = round(max(ratios.values()), 2)
    return figures


def run() -> dict:
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-lineage-") as tmp:
        figures.update(run_store("sqlite", None, Path(tmp)))
        try:
            from devstack.postgres_server import PostgresServer

            server = PostgresServer()
        except MissingBinary as exc:
            print(f"  postgresql skipped: {exc}", file=sys.stderr)
            return figures
        try:
            server.start()
            figures.update(run_store("postgres", server.create_database(), Path(tmp)))
        finally:
            server.stop()
    return figures


if __name__ == "__main__":
    result = run()
    for key in sorted(result):
        print(f"{key}: {result[key]}")
    print(json.dumps(result, sort_keys=True))
