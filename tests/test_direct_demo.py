"""Without the Prometheus and Alertmanager binaries the demo says so and runs the direct signal path."""
import io

from devstack.demo import run_demo


def test_without_the_binaries_the_demo_runs_through_the_direct_signal_path(monkeypatch):
    monkeypatch.setenv("AUTOREM_PROMETHEUS_BIN", "/nonexistent/prometheus")
    out = io.StringIO()
    assert run_demo(out=out) == 0
    text = out.getvalue()
    first = text.splitlines()[0]
    assert "prometheus not found" in first and "direct signal path" in first
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line and line.split()[0] in (
        "transient-timeout", "directive-overlap", "missing-secret", "backlog-surge", "silenced")}
    assert rows["transient-timeout"][1:3] == ["TRANSIENT", "RestartAndRetryTransient"]
    assert rows["missing-secret"][4] == "escalated"
    assert rows["silenced"][4] == "skipped"
    assert all(row[-1] == "yes" for row in rows.values())
