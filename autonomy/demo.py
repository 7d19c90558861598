"""`autonomy demo`: the exporter and the real Prometheus on loopback, fed with sample signals."""
from __future__ import annotations

import json
import secrets
import sys
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

import requests

from .local_stack import MissingBinary, PrometheusProcess, ServedApp
from .polling import wait_until
from .settings import Secret, Settings
from .stack_config import REPO_ROOT, prometheus_config

SAMPLE_SIGNALS = REPO_ROOT / "examples" / "fleet-signals.json"
QUERIES = (
    ("agents reporting", 'count(autonomy_agent_info)'),
    ("success ratio by agent", 'autonomy_agent_success_ratio'),
    ("backlog age (s) over the 15 min SLO", 'autonomy_agent_backlog_age_seconds > 900'),
    ("agents in error", 'autonomy_agent_status{autonomy_agent_status="error"} == 1'),
    ("error codes reported", 'autonomy_agent_error_code == 1'),
)


def _fresh(signals: list[dict]) -> list[dict]:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return [{**s, "ts": now} for s in signals]


def run_demo(keep_running: bool = False, out=sys.stdout) -> int:
    """Start exporter + Prometheus, push the sample fleet, read it back with PromQL, stop everything."""
    from exporter.app import create_app

    token = Secret("AUTOREM_EXPORTER_TOKEN", secrets.token_urlsafe(24))
    app = create_app({"SETTINGS": Settings.from_env(), "EXPORTER_TOKEN": token})
    with tempfile.TemporaryDirectory(prefix="autonomy-demo-") as tmp, ServedApp(app) as exporter:
        exporter_addr = exporter.url.removeprefix("http://")
        reply = requests.post(exporter.url + "/api/v1/signals", json=_fresh(json.loads(SAMPLE_SIGNALS.read_text())),
                              headers={"Authorization": f"Bearer {token.reveal()}"}, timeout=10)
        reply.raise_for_status()
        print(f"exporter   {exporter.url}/metrics  ({reply.json()['stored']} sample signals pushed)", file=out)
        config = prometheus_config({"autonomy-exporter": [exporter_addr]})
        try:
            prometheus = PrometheusProcess(Path(tmp) / "prometheus", config).start()
        except MissingBinary as exc:
            print(f"prometheus unavailable ({exc}); the exporter alone is shown", file=out)
            print(requests.get(exporter.url + "/metrics", timeout=10).text[:2000], file=out)
            return 0
        try:
            print(f"prometheus {prometheus.url}", file=out)
            wait_until(lambda: prometheus.query("count(autonomy_agent_info)"), 60, "the first scrape")
            for title, promql in QUERIES:
                print(f"\n{title}:  {promql}", file=out)
                for row in prometheus.query(promql):
                    labels = ",".join(f"{k}={v}" for k, v in row["metric"].items() if k not in ("__name__", "job", "instance"))
                    print(f"  {labels or '(total)'}  {row['value'][1]}", file=out)
            if keep_running:
                print("\nstack is up; Ctrl-C to stop", file=out)
                threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            prometheus.stop()
    print("\nstopped every process the demo started", file=out)
    return 0
