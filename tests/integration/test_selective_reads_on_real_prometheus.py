"""The reads that select agents, on the real Prometheus: the tier queries of fleet_ranking select exactly the
candidates Tier.holds names (every role, every tier of a fleet with unranked, unnamed and playbooks.yaml-placed
agents), and a rule's expression scoped to some agents answers for exactly those."""
import random
from datetime import datetime, timezone

import pytest

from autonomy.signal_contract import validate_signals
from devstack.local_stack import PrometheusProcess, ServedApp
from devstack.polling import wait_until
from devstack.stack_config import prometheus_config
from tests.conftest import real_binary
from tests.test_fleet_ranking import playbook_set, random_fleet
from webhook_receiver.alert_conditions import AlertRule, RuleCatalog, scoped
from webhook_receiver.fleet_ranking import Role, tiers
from webhook_receiver.fleet_reader import PrometheusFleetReader, SignalFleetReader
from webhook_receiver.upstreams import PrometheusApi, promql_string

pytestmark = pytest.mark.integration


def test_every_tier_query_selects_what_the_signals_say(exporter_app, tmp_path):
    real_binary("prometheus")
    docs = random_fleet(random.Random(7), 60)
    now = datetime.now(timezone.utc).isoformat()
    for doc in docs:
        doc["ts"] = now
    docs[0]["agent"], docs[1]["agent"] = "da-sh", "dot.ted"  # regex characters, escaped
    signals = validate_signals(docs)
    exporter_app.extensions["autonomy_exporter"].store.put_many(signals)
    playbooks = playbook_set({"da-sh": {"domain": "Data"}, "dot.ted": {"domain": "Hobby"},
                              signals[2].agent: {"domain": "Content"}})
    with ServedApp(exporter_app) as exporter:
        config = prometheus_config({"autonomy-exporter": [exporter.url.removeprefix("http://")]})
        with PrometheusProcess(tmp_path / "prometheus", config) as prometheus:
            wait_until(lambda: len(prometheus.query("autonomy_agent_info")) == len(signals), 60,
                       "every agent's info in Prometheus")
            api = PrometheusApi(prometheus.url)
            through_prometheus = PrometheusFleetReader(api, RuleCatalog(api), 120, 25)
            from_signals = SignalFleetReader(lambda: signals, 120, None)
            checked = 0
            for tier in tiers(("Executive", "Revenue", "Content", "Data"), playbooks):
                for role in Role:
                    expected = from_signals.candidates(role, tier)
                    assert through_prometheus.candidates(role, tier) == expected, (role, tier)
                    checked += bool(expected)
            assert checked >= 6  # most tiers hold candidates: the comparison is not of empty lists


def test_a_scoped_expression_answers_for_exactly_the_agents_asked_about(tmp_path):
    real_binary("prometheus")
    names = ["CMO", 'qu"ote', "back\\slash", "dollar$1", "dot.ted"]
    expr = " or ".join(f'label_replace(vector({n}), "agent", {promql_string(a.replace("$", "$$"))}, "", "")'
                       for n, a in enumerate(names + ["bystander"]))
    rule = AlertRule("Every", expr, {})
    with PrometheusProcess(tmp_path / "prometheus", prometheus_config({})) as prometheus:
        api = PrometheusApi(prometheus.url)
        assert {r["metric"]["agent"] for r in api.query(rule.expr)} == set(names) | {"bystander"}
        for asked in (names, ["dollar$1"], ['qu"ote', "nobody"]):
            assert {r["metric"]["agent"] for r in api.query(scoped(rule, asked))} == set(asked) - {"nobody"}
