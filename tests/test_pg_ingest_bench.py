"""bench/pg_ingest.py sends what it says: every agent fires before any resolves, one alert in 10 resolved after."""
import json

from bench import pg_ingest
from bench.receiver_ingest import ALERTS_PER_WEBHOOK


def alerts(n: int, prefix: str = "agent") -> list[dict]:
    return json.loads(pg_ingest.body(n, pg_ingest.AGENTS, prefix))["alerts"]


def test_the_first_pass_over_the_fleet_only_fires_and_names_every_agent_once():
    first_pass = [a for n in range(pg_ingest.AGENTS // ALERTS_PER_WEBHOOK) for a in alerts(n)]
    assert {a["status"] for a in first_pass} == {"firing"}
    assert sorted(a["labels"]["agent"] for a in first_pass) == sorted(f"agent-{k}" for k in range(pg_ingest.AGENTS))


def test_later_passes_resolve_one_alert_in_ten_with_an_end():
    later = [a for n in range(10, 300) for a in alerts(n)]
    resolved = [a for a in later if a["status"] == "resolved"]
    assert len(resolved) * pg_ingest.RESOLVED_EVERY == len(later)
    assert all(a["endsAt"] > a["startsAt"] for a in resolved)


def test_the_warm_up_uses_agents_of_its_own():
    assert all(a["labels"]["agent"].startswith("warmup-") for a in alerts(3, "warmup"))
