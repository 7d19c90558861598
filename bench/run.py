"""`make bench`: runs every benchmark; the last line on stdout is one JSON object with the figures."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import exporter_scrape  # noqa: E402

GOALS = {"exporter_scrape_ms_10k": ("<=", 250)}


def main() -> int:
    figures: dict = {}
    figures.update(exporter_scrape.run())
    for name, (op, goal) in GOALS.items():
        ok = figures[name] <= goal if op == "<=" else figures[name] >= goal
        print(f"{name}: {figures[name]} (goal {op} {goal}) {'ok' if ok else 'MISSED'}")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
