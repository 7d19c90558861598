"""Benchmark: an alert storm against the real receiver (devstack/storm.py), and two clustered Alertmanagers
notifying it (devstack/ha_drill.py). `run(full)` returns the figures bench/run.py prints."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from devstack.ha_drill import ha_duplicates
from devstack.storm import storm


def run(full: bool = True) -> dict:
    """The storm (10,000 alerts for 1,000 agents when FULL, else 2,000 for 200) and the HA scenario."""
    sizes = dict(alerts=10_000, agents=1_000, queue_size=100) if full else dict(alerts=2_000, agents=200, queue_size=50)
    with tempfile.TemporaryDirectory(prefix="autonomy-bench-storm-") as tmp:
        result = storm(Path(tmp) / "storm", per_webhook=100, workers=4, clients=8, **sizes)
        figures = result.figures()
        ha = ha_duplicates(Path(tmp) / "ha")
    figures.update({"duplicate_remediations": ha.duplicate_remediations,
                    "ha_notifications_from_alertmanagers": sum(ha.from_alertmanagers().values()),
                    "ha_deliveries": len([n for n in ha.notifications if n["status"] == "firing"]),
                    "ha_seconds": round(ha.seconds, 2)})
    return figures


if __name__ == "__main__":
    print(json.dumps(run(full="--small" not in sys.argv), sort_keys=True))
