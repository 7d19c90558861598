"""`autonomy drill --target-config` on the real binaries: a running layer and a fleet served over HTTP, drilled
from a target file alone (nothing started by the drill), its verdict written as textfile metrics."""
import re
import time

import pytest
import yaml

from devstack.demo import TIME_FACTOR, layer_env
from devstack.fleet import SimulatedFleet, fleet_heartbeat
from devstack.layer_stack import LayerStack
from devstack.local_stack import ServedApp
from devstack.nightly_drill import run_target_drill
from tests.conftest import real_binary

pytestmark = pytest.mark.integration
DRILLS = ["transient-timeout", "kill-switch", "missing-secret"]


def test_the_drills_run_against_a_running_layer_and_their_verdict_is_written_as_metrics(tmp_path, capsys):
    real_binary("prometheus")
    real_binary("alertmanager")
    fleet = SimulatedFleet()
    with ServedApp(fleet.app) as fleet_server, LayerStack(tmp_path / "layer", fleet_server.url,
                                                           env=layer_env(fleet_server.url, fleet),
                                                           time_factor=TIME_FACTOR) as stack:
        beat = fleet_heartbeat(fleet, stack.push_url, stack.push_token, interval=0.5).start()
        try:
            config = tmp_path / "target.yaml"
            config.write_text(yaml.safe_dump({
                "receiver_url": stack.receiver.url, "exporter_url": stack.exporter.url,
                "prometheus_url": stack.prometheus.url, "alertmanager_url": stack.alertmanager.url,
                "fleet_url": fleet_server.url, "receiver_token_file": str(stack.token_file),
                "max_attempts": stack.settings.max_attempts, "slo_backlog_min": stack.settings.slo_backlog_min,
                "time_factor": TIME_FACTOR}))
            metrics = tmp_path / "autonomy_drill.prom"
            started = time.time()
            code = run_target_drill(config, DRILLS, metrics_file=metrics)
        finally:
            beat.stop()
    out = capsys.readouterr()
    assert code == 0, out.out[-3000:] + out.err[-3000:]
    assert stack.webhook_token.reveal() not in out.out + out.err
    text = metrics.read_text()
    passed = dict(re.findall(r'^autonomy_drill_passed\{drill="([a-z-]+)"\} (\S+)$', text, re.MULTILINE))
    assert passed == {name: "1" for name in DRILLS}
    durations = dict(re.findall(r'^autonomy_drill_duration_seconds\{drill="([a-z-]+)"\} (\S+)$', text, re.MULTILINE))
    assert set(durations) == set(DRILLS) and all(float(v) > 0 for v in durations.values())
    [last_run] = re.findall(r"^autonomy_drill_last_run_timestamp_seconds (\S+)$", text, re.MULTILINE)
    [last_success] = re.findall(r"^autonomy_drill_last_success_timestamp_seconds (\S+)$", text, re.MULTILINE)
    assert started < float(last_run) == float(last_success) <= time.time()
    # Nothing of the drill is left behind: remediation is on again and the fleet healthy.
    assert all(not state["faults"] for state in fleet.snapshot().values())
