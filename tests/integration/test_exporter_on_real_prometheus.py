"""The exporter scraped by the real Prometheus binary, read back through its HTTP API."""
import json
from datetime import datetime, timezone

import pytest
import requests

from devstack.local_stack import PrometheusProcess, ServedApp
from devstack.polling import wait_until
from devstack.stack_config import prometheus_config
from tests.conftest import TOKEN, real_binary
from tests.signal_cases import example

pytestmark = pytest.mark.integration


def test_a_pushed_value_is_read_back_through_prometheus(exporter_app, tmp_path):
    real_binary("prometheus")
    with ServedApp(exporter_app) as exporter:
        config = prometheus_config({"autonomy-exporter": [exporter.url.removeprefix("http://")]})
        with PrometheusProcess(tmp_path / "prometheus", config) as prometheus:
            signal = example()
            signal["metrics"]["backlogAgeMinutes"] = 41
            signal["metrics"]["successRate"] = 0.82
            signal["ts"] = datetime.now(timezone.utc).isoformat()
            reply = requests.post(exporter.url + "/api/v1/signals", data=json.dumps(signal),
                                  headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                                  timeout=10)
            assert reply.status_code == 200, reply.text

            rows = wait_until(lambda: prometheus.query('autonomy_agent_backlog_age_seconds{agent="CMO"}'),
                              60, "the pushed backlog age in Prometheus")
            assert float(rows[0]["value"][1]) == 41 * 60
            assert rows[0]["metric"]["job"] == "autonomy-exporter"
            [ratio] = prometheus.query('autonomy_agent_success_ratio{agent="CMO"}')
            assert float(ratio["value"][1]) == 0.82
            [code] = prometheus.query('autonomy_agent_error_code{agent="CMO"} == 1')
            assert code["metric"]["code"] == "TIMEOUT"
            assert prometheus.query('up{job="autonomy-exporter"} == 1')
