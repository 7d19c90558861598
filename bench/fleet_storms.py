"""Benchmark: storms of simultaneous faults on the simulated fleet, recovered by the real loop
(devstack/fleet_storm.py): one fault alone, then 100 and 1,000 at once. `run()` returns the figures."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from devstack.fleet_storm import run_fleet_storm

SIZES = (1, 100, 1000)


def run(sizes=SIZES) -> dict:
    figures = {}
    with tempfile.TemporaryDirectory(prefix="autonomy-bench-fleet-storm-") as tmp:
        for size in sizes:
            result = run_fleet_storm(Path(tmp) / f"storm-{size}", size, timeout=300)
            figures[f"fleet_storm_{size}_recovered"] = result.recovered
            figures[f"fleet_storm_{size}_seconds_to_last"] = result.seconds_to_last
            figures[f"fleet_storm_{size}_remediations_per_s"] = result.remediations_per_s
            figures[f"fleet_storm_{size}_max_concurrent_actions"] = result.max_concurrent_actions
            figures[f"fleet_storm_{size}_playbook_runs_max"] = result.playbook_runs_max
            figures[f"fleet_storm_{size}_outcomes"] = result.outcomes
    single = figures.get("fleet_storm_1_seconds_to_last")
    largest = figures.get(f"fleet_storm_{max(sizes)}_seconds_to_last")
    if single and largest:
        figures["fleet_storm_largest_over_single"] = round(largest / single, 2)
    return figures


if __name__ == "__main__":
    sizes = tuple(int(s) for s in sys.argv[1:]) or SIZES
    print(json.dumps(run(sizes), sort_keys=True))
