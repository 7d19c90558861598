"""The drills' results as the table the demo prints."""
from __future__ import annotations

from .drills import DrillResult


def summary_table(results: list[DrillResult]) -> str:
    rows = [("drill", "class", "playbook", "attempts", "outcome", "recovered: from fault", "from onset",
             "from webhook", "passed")]

    def seconds(value: float | None) -> str:
        return f"{value:.1f} s" if value is not None else "-"
    for r in results:
        rows.append((r.name, r.classification or "-", r.playbook or "-", str(r.attempts), r.outcome,
                     seconds(r.mttr_s), seconds(r.mttr_onset_s), seconds(r.mttr_webhook_s),
                     "yes" if r.passed else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)
