"""The incident's conditions re-checked: alert rules read from Prometheus's rules API (here built from the repo's
own rendered rule files, as Prometheus would list them), recording rules inlined, evaluated per agent."""
from pathlib import Path

import pytest
import yaml

from tests.engine_harness import unscoped
from webhook_receiver.alert_conditions import (
    AlertRule,
    RuleCatalog,
    catalog_from_groups,
    inline_recordings,
    scoped,
    still_true,
)
from webhook_receiver.upstreams import UpstreamError

RULES_DIR = Path(__file__).resolve().parent.parent / "alert_rules"


def groups_as_prometheus_lists_them() -> list[dict]:
    """/api/v1/rules `data.groups` for the repo's rule files (Prometheus lists `query`, `type`, `labels`)."""
    out = []
    for path in sorted(RULES_DIR.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules = [{"name": r.get("alert") or r["record"], "query": r["expr"].strip(), "labels": r.get("labels", {}),
                      "type": "alerting" if "alert" in r else "recording"} for r in group["rules"]]
            out.append({"name": group["name"], "file": str(path), "rules": rules})
    return out


def test_every_remediable_alert_of_the_repo_can_be_re_checked_on_raw_samples():
    catalog = catalog_from_groups(groups_as_prometheus_lists_them())
    remediable = [n for n, r in catalog.items() if r.problem is None and not n.startswith(("Autonomy", "Watchdog"))]
    assert {"AgentSuccessRatioBelowSLO", "AgentTransientError", "DirectiveClaimedByMultipleAgents",
            "AgentDependencyFailing", "AgentSilent", "FleetBudgetProjectedOverCap"} <= set(remediable)
    remediable = [r for r in catalog.values() if r.labels.get("autonomy_class") not in (None, "none")]
    assert remediable and all(r.problem is None for r in remediable), [r for r in remediable if r.problem]
    budget = catalog["FleetBudgetProjectedOverCap"]
    assert "fleet:" not in budget.expr  # the recording rule is inlined: freshness is judged on scraped samples
    assert budget.expr == "(sum(max by (agent) (autonomy_agent_cost_burn_dollars_per_hour)) * 24) > 25"
    assert budget.agent_of({}) == "fleet"  # its static label names whose alert it is


@pytest.mark.parametrize("expr, problem", [
    ("job:x:rate5m{job='a'} > 1", "with matchers, a range or an offset"),
    ("rate(job:x:rate5m[5m]) > 1", "with matchers, a range or an offset"),
    ("job:x:rate5m offset 5m > 1", "with matchers, a range or an offset"),
])
def test_a_recording_rule_read_with_matchers_ranges_or_offsets_is_not_guessed(expr, problem):
    _, why = inline_recordings(expr, {"job:x:rate5m": [{"query": "sum(rate(x[5m]))"}]})
    assert problem in why


def test_nested_recording_rules_are_inlined_all_the_way_down():
    expr, problem = inline_recordings("b:y:sum > 1", {"b:y:sum": [{"query": "a:x:sum * 2"}],
                                                     "a:x:sum": [{"query": "sum(x)"}]})
    assert (expr, problem) == ("((sum(x)) * 2) > 1", None)


def test_two_rules_of_one_name_cannot_be_re_checked():
    catalog = catalog_from_groups([{"rules": [{"type": "alerting", "name": "A", "query": "x > 1"},
                                              {"type": "alerting", "name": "A", "query": "y > 1"}]}])
    assert "2 alerting rules named A" in catalog["A"].problem


class Prom:
    def __init__(self, groups, results):
        self.groups, self.results, self.rule_reads, self.queries = groups, results, 0, []

    def rules(self):
        self.rule_reads += 1
        return self.groups

    def query(self, promql):
        expr, agents = unscoped(promql)
        self.queries.append(expr)
        rows = self.results.get(expr, [])
        return rows if agents is None else [r for r in rows if r.get("metric", {}).get("agent") in agents]


GROUPS = [{"rules": [{"type": "alerting", "name": "Low", "query": "ratio < 0.9", "labels": {"severity": "warning"}},
                     {"type": "alerting", "name": "Fleet", "query": "spend > 25", "labels": {"agent": "fleet"}}]}]


def test_an_alert_is_still_true_for_an_agent_only_when_a_result_row_is_that_agents():
    prom = Prom(GROUPS, {"ratio < 0.9": [{"metric": {"agent": "CRO"}, "value": [0, "0.5"]}],
                         "spend > 25": [{"metric": {}, "value": [0, "30"]}]})
    catalog = RuleCatalog(prom)
    assert still_true(prom, catalog, {"CMO": {"Low"}}) == ([], [])
    assert still_true(prom, catalog, {"CMO": {"Low"}, "CRO": {"Low"}}) == (["Low (CRO)"], [])
    assert still_true(prom, catalog, {"fleet": {"Fleet"}}) == (["Fleet"], [])
    assert prom.queries.count("ratio < 0.9") == 2  # once per check, whatever the number of agents


def test_an_expression_answers_only_for_the_agents_asked_about_unless_its_rule_names_the_agent():
    low, fleet = AlertRule("Low", "ratio < 0.9", {}), AlertRule("Fleet", "spend > 25", {"agent": "fleet"})
    assert scoped(low, ["CRO", "CMO", "CMO"]) == (
        '(ratio < 0.9) and on (agent) (label_replace(vector(1), "agent", "CMO", "", "") or '
        'label_replace(vector(1), "agent", "CRO", "", ""))')
    assert scoped(low, ['a"b$1']) == '(ratio < 0.9) and on (agent) (label_replace(vector(1), "agent", "a\\"b$$1", "", ""))'
    assert scoped(fleet, ["CMO"]) == "spend > 25"
    assert unscoped(scoped(low, ['a"b$1', "CRO"])) == ("ratio < 0.9", {'a"b$1', "CRO"})


def test_an_alert_prometheus_does_not_know_is_unknown_and_re_reads_the_rules_at_most_once_a_second():
    clock = [100.0]
    prom = Prom(GROUPS, {})
    catalog = RuleCatalog(prom, ttl=60, clock=lambda: clock[0])
    assert still_true(prom, catalog, {"CMO": {"Gone"}}) == (
        [], ["Gone: Prometheus has no alerting rule of that name"])
    still_true(prom, catalog, {"CMO": {"Gone"}})
    assert prom.rule_reads == 1
    clock[0] += 2
    still_true(prom, catalog, {"CMO": {"Gone"}})
    assert prom.rule_reads == 2
    still_true(prom, catalog, {"CMO": {"Low"}})  # known and fresh: no re-read
    assert prom.rule_reads == 2


def test_rules_unreachable_means_unknown_never_cleared():
    class Down(Prom):
        def rules(self):
            raise UpstreamError("http://prometheus/api/v1/rules: ConnectionError")

    prom = Down(GROUPS, {})
    true, unknown = still_true(prom, RuleCatalog(prom), {"CMO": {"Low"}})
    assert true == [] and unknown and "prometheus rules unreachable" in unknown[0]


@pytest.mark.parametrize("expr, expected", [
    ('autonomy_agent_error_code{code=~"TIMEOUT|RATE_LIMIT"} == 1',
     'autonomy_agent_error_code{code=~"TIMEOUT|RATE_LIMIT", agent=~"CMO|a\\\\.b"} == 1'),
    ("autonomy_agent_success_ratio < 0.94", 'autonomy_agent_success_ratio{agent=~"CMO|a\\\\.b"} < 0.94'),
    ('autonomy_agent_x{a="}, b"} >= 1e-3', 'autonomy_agent_x{a="}, b", agent=~"CMO|a\\\\.b"} >= 1e-3'),
    (r'autonomy_agent_x{a="q\"x\\"} == 1', r'autonomy_agent_x{a="q\"x\\", agent=~"CMO|a\\.b"} == 1'),
    # An agent matcher of its own, a join, another metric: evaluated whole, then filtered.
    ('autonomy_agent_x{agent="CMO"} == 1', None),
    ("autonomy_agent_x > 0 and on () up == 1", None),
    ("other_metric < 0.9", None),
])
def test_a_comparison_of_one_agent_series_selects_the_agents_in_its_selector(expr, expected):
    rule = AlertRule("R", expr, {})
    filtered = f"({expr}) and on (agent) ("
    assert scoped(rule, ["a.b", "CMO"]) == expected if expected else scoped(rule, ["CMO"]).startswith(filtered)
