"""`autonomy demo` end to end on the real Prometheus."""
import io
import subprocess

import pytest

from autonomy.demo import run_demo
from tests.conftest import real_binary

pytestmark = pytest.mark.integration


def prometheus_children() -> set[str]:
    out = subprocess.run(["pgrep", "-f", "autonomy-demo-"], capture_output=True, text=True).stdout
    return set(out.split())


def test_the_demo_reads_the_sample_fleet_back_and_leaves_no_process(monkeypatch):
    real_binary("prometheus")
    monkeypatch.delenv("AUTOREM_EXPORTER_TOKEN", raising=False)
    before = prometheus_children()
    out = io.StringIO()
    assert run_demo(out=out) == 0
    text = out.getvalue()
    assert "agents reporting:" in text and "(total)  3" in text
    assert "agent=Content  1320" in text
    assert "agent=CMO,code=TIMEOUT  1" in text
    assert prometheus_children() == before
