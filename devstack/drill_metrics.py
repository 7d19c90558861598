"""The nightly drill's verdict as a node_exporter textfile-collector file, replaced atomically."""
from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from autonomy.exposition import label_value

from .drills import DRILLS

LAST_SUCCESS = "autonomy_drill_last_success_timestamp_seconds"
FAMILIES = (
    ("autonomy_drill_last_run_timestamp_seconds", "When the last drill run against the layer ended (Unix time)."),
    (LAST_SUCCESS, "When a drill run last passed every drill it ran (Unix time; 0: never)."),
    ("autonomy_drill_passed", "Whether the drill passed (1) or failed (0) on the last run."),
    ("autonomy_drill_duration_seconds", "How long the drill took on the last run."),
)
SUCCESS_LINE = re.compile(rf"^{LAST_SUCCESS} (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class DrillRun:
    """One drill of a run: its name (from the DRILLS table), its verdict, its duration (None: it did not run)."""

    name: str
    passed: bool
    seconds: float | None


def previous_success(path: Path) -> float:
    """The last success the file at PATH recorded; 0 when there is none (no file, or not one of ours)."""
    try:
        match = SUCCESS_LINE.search(path.read_text())
        return float(match.group(1)) if match else 0.0
    except (OSError, UnicodeDecodeError, ValueError):
        return 0.0


def render(runs: Sequence[DrillRun], finished_at: float, last_success: float) -> str:
    """The exposition text: HELP and TYPE of each family, drills in the DRILLS table's order."""
    unknown = [r.name for r in runs if r.name not in DRILLS]
    if unknown:  # the label's values are the fixed table's names, so the series stay bounded
        raise ValueError(f"not drills of the DRILLS table: {', '.join(unknown)}")
    order = list(DRILLS)
    ordered = sorted(runs, key=lambda r: order.index(r.name))
    samples = {
        FAMILIES[0][0]: [("", finished_at)],
        FAMILIES[1][0]: [("", last_success)],
        FAMILIES[2][0]: [(r.name, 1.0 if r.passed else 0.0) for r in ordered],
        FAMILIES[3][0]: [(r.name, r.seconds) for r in ordered if r.seconds is not None],
    }
    lines = []
    for name, text in FAMILIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for drill, value in samples[name]:
            labels = f'{{drill="{label_value(drill)}"}}' if drill else ""
            lines.append(f"{name}{labels} {value:.3f}" if "timestamp" in name or "duration" in name
                         else f"{name}{labels} {value:g}")
    return "\n".join(lines) + "\n"


def write_metrics(path: Path, runs: Sequence[DrillRun], now: float | None = None) -> str:
    """Write the file for this run (its last success kept from the previous file when this run failed), atomically:
    a temporary file in the same directory, flushed to disk, renamed over PATH. Returns the text."""
    path = Path(path)
    now = time.time() if now is None else now
    passed = bool(runs) and all(r.passed for r in runs)
    text = render(runs, now, now if passed else previous_success(path))
    # Not *.prom: the textfile collector never reads a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # node_exporter often runs as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
    return text
