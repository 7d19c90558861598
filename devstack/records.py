"""What a drill or a benchmark reads back from the layer it ran: /metrics, the lineage, the receiver's store
(through the store's own API, never its file)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from webhook_receiver.incident import Incident
from webhook_receiver.store import IncidentStore, SqliteIncidentStore

LEDGER_FILE = "incidents.sqlite3"
LINEAGE_FILE = "decision_lineage.jsonl"
PAGE = 1000


def fingerprint(labels: dict[str, str]) -> str:
    """A stable 16-hex-digit fingerprint of a label set (Alertmanager's are the same shape)."""
    text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by (sample name, sorted labels)."""
    reply = requests.get(url + "/metrics", timeout=30)
    reply.raise_for_status()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def read_lineage(data_dir: Path) -> list[dict]:
    path = data_dir / LINEAGE_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def stored_bodies(store: IncidentStore) -> list[str]:
    """Every stored notification body, oldest first, a page at a time."""
    bodies, after = [], 0
    while True:
        page = store.notifications(after=after, limit=PAGE)
        bodies += [n.body for n in page]
        if len(page) < PAGE:
            return bodies
        after = page[-1].id


def every_incident(store: IncidentStore) -> list[Incident]:
    """Every incident, oldest first, a page at a time."""
    found, before = [], None
    while True:
        page = store.list(limit=PAGE, before=before)
        found += page
        if len(page) < PAGE:
            return found[::-1]
        before = (page[-1].opened_at, page[-1].id)


def read_stopped_receiver(data_dir: Path) -> tuple[list[str], list[dict]]:
    """(notification bodies, incident documents) of a receiver that has stopped, read through its store."""
    store = SqliteIncidentStore(Path(data_dir) / LEDGER_FILE)
    try:
        return stored_bodies(store), [i.as_dict() for i in every_incident(store)]
    finally:
        store.close()
