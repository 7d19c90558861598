"""`make bench`: runs every benchmark; the last line on stdout is one JSON object with the figures."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import exporter_push, exporter_scrape, lineage_api, pg_ingest, receiver_ingest, sqlite_retention  # noqa: E402

# figure -> (comparison, goal): the goals of the issues, checked here and never in timed tests
GOALS = {
    "alerts_per_s": (">=", 10_000),
    "ratio": (">=", 0.5),
    "p99_ack_ms": ("<", 100),
    "lost": ("==", 0),
    "duplicate_remediations": ("==", 0),
    "exporter_scrape_ms_10k": ("<=", 250),
    "fleet_storm_largest_over_single": ("<=", 3),
    "attempt_cost_10k_over_100": ("<=", 2),
    "rules_agents_eval_ms_10k": ("<=", 100),
    "kpis_eval_ms_10k_week": ("<=", 1000),
    "exporter_push_single_per_s": (">=", 5_000),
    "exporter_push_batched_per_s": (">=", 20_000),
    "lineage_api_sqlite_1m_over_10k": ("<=", 2),
    "lineage_api_postgres_1m_over_10k": ("<=", 2),
    "sqlite_retention_day30_over_day8": ("<=", 1.2),
    "pg_ingest_1p_lost": ("==", 0),
    "pg_ingest_2p_lost": ("==", 0),
}


def meets(value: float, op: str, goal: float) -> bool:
    return {">=": value >= goal, "<=": value <= goal, "<": value < goal, "==": value == goal}[op]


def main() -> int:
    figures: dict = {}
    print("receiver ingest (webhooks of 100 alerts from a separate process) ...", file=sys.stderr)
    figures.update(receiver_ingest.run())
    print("receiver ingest on PostgreSQL, 1 and 2 receiver processes sharing the database ...", file=sys.stderr)
    figures.update(pg_ingest.run())
    print("exporter scrape of 10,000 agents ...", file=sys.stderr)
    figures.update(exporter_scrape.run())
    print("exporter pushes, single signals and batches of 100 ...", file=sys.stderr)
    figures.update(exporter_push.run())
    print("the lineage API at 10k, 100k and 1M stored entries, on SQLite and PostgreSQL ...", file=sys.stderr)
    figures.update(lineage_api.run())
    print("the SQLite ledger through 30 simulated days of steady load, retention at 7 days ...", file=sys.stderr)
    figures.update(sqlite_retention.run())
    try:
        from bench import storm_and_ha
    except ImportError:
        storm_and_ha = None
    if storm_and_ha is not None:
        print("alert storm (10,000 alerts, 1,000 agents) and the HA Alertmanager pair ...", file=sys.stderr)
        figures.update(storm_and_ha.run(full=True))
        from bench import attempt_cost, fleet_storms, rule_eval
        print("storms of simultaneous faults on the simulated fleet (1, 100, 1,000 agents) ...", file=sys.stderr)
        figures.update(fleet_storms.run())
        print("one attempt's reads at 100 and 10,000 agents ...", file=sys.stderr)
        figures.update(attempt_cost.run())
        print("rule evaluation at 10,000 agents, and the 7-day KPIs over a backfilled week ...", file=sys.stderr)
        figures.update(rule_eval.run())
    for name, (op, goal) in GOALS.items():
        if name in figures:
            verdict = "ok" if meets(figures[name], op, goal) else "MISSED"
            print(f"{name}: {figures[name]} (goal {op} {goal}) {verdict}")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
