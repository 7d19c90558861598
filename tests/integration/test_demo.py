"""`autonomy demo` (what `make demo` runs) end to end on the real binaries."""
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import real_binary
from tests.integration.test_drills import EXPECTED, demo_processes

pytestmark = pytest.mark.integration
AUTONOMY = str(Path(sys.executable).with_name("autonomy"))
REPO = Path(__file__).resolve().parent.parent.parent


def test_the_demo_runs_every_drill_prints_the_summary_and_leaves_no_process_behind():
    real_binary("prometheus")
    real_binary("alertmanager")
    before = demo_processes()
    done = subprocess.run([AUTONOMY, "demo"], capture_output=True, text=True, timeout=600, cwd=REPO)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-2000:]
    for place in ("fleet ", "exporter ", "receiver ", "prometheus ", "alertmanager ", "lineage file: "):
        assert place in out
    for n, name in enumerate(EXPECTED, start=1):
        assert f"[{n}/{len(EXPECTED)}] {name}" in out  # the progress display
    table = out[out.index("drill  "):]
    assert all(name in table for name in EXPECTED)
    assert "KPIs: auto-resolve" in out and "lineage coverage 1.0" in out
    assert "stopping every process the demo started" in out
    assert demo_processes() == before
