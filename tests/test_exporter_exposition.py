import json
from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest

from autonomy.signal_contract import load_signals
from exporter import AgentSignalCollector, SignalStore
from tests.signal_cases import example

FLEET = json.loads(open(__import__("pathlib").Path(__file__).resolve().parent.parent
                        / "examples" / "fleet-signals.json").read())

EXPECTED_CMO = """\
# HELP autonomy_agent_info Always 1; carries the agent's priority domain.
# TYPE autonomy_agent_info gauge
autonomy_agent_info{agent="CMO",domain="Marketing"} 1.0
# HELP autonomy_agent_status The agent's reported status: 1 for the current state.
# TYPE autonomy_agent_status gauge
autonomy_agent_status{agent="CMO",autonomy_agent_status="degraded"} 0.0
autonomy_agent_status{agent="CMO",autonomy_agent_status="error"} 1.0
autonomy_agent_status{agent="CMO",autonomy_agent_status="healthy"} 0.0
# HELP autonomy_agent_success_ratio Share of the agent's recent tasks that succeeded (0..1).
# TYPE autonomy_agent_success_ratio gauge
autonomy_agent_success_ratio{agent="CMO"} 0.81
# HELP autonomy_agent_alignment_ratio How well the agent's work aligns with its directives (0..1).
# TYPE autonomy_agent_alignment_ratio gauge
autonomy_agent_alignment_ratio{agent="CMO"} 0.93
# HELP autonomy_agent_backlog_age_seconds Age of the oldest item in the agent's backlog, in seconds.
# TYPE autonomy_agent_backlog_age_seconds gauge
autonomy_agent_backlog_age_seconds{agent="CMO"} 720.0
# HELP autonomy_agent_queue_depth Items waiting in the agent's queue (only when reported).
# TYPE autonomy_agent_queue_depth gauge
autonomy_agent_queue_depth{agent="CMO"} 3.0
# HELP autonomy_agent_cost_burn_dollars_per_hour The agent's current spend rate, in dollars per hour.
# TYPE autonomy_agent_cost_burn_dollars_per_hour gauge
autonomy_agent_cost_burn_dollars_per_hour{agent="CMO"} 0.3
# HELP autonomy_agent_last_signal_timestamp_seconds Unix time of the agent's latest signal (its ts field).
# TYPE autonomy_agent_last_signal_timestamp_seconds gauge
autonomy_agent_last_signal_timestamp_seconds{agent="CMO"} 1.755529331e+09
# HELP autonomy_agent_error_code 1 for the error code the agent reports, 0 for the others.
# TYPE autonomy_agent_error_code gauge
autonomy_agent_error_code{agent="CMO",code="TIMEOUT"} 1.0
autonomy_agent_error_code{agent="CMO",code="RATE_LIMIT"} 0.0
autonomy_agent_error_code{agent="CMO",code="TEMP_NETWORK"} 0.0
autonomy_agent_error_code{agent="CMO",code="INPUT_MISSING"} 0.0
autonomy_agent_error_code{agent="CMO",code="STALE_DATA"} 0.0
autonomy_agent_error_code{agent="CMO",code="CONFIG_MISSING"} 0.0
autonomy_agent_error_code{agent="CMO",code="AUTH_FAILED"} 0.0
autonomy_agent_error_code{agent="CMO",code="OTHER"} 0.0
# HELP autonomy_agent_dependency 1 for each agent or source this agent depends on.
# TYPE autonomy_agent_dependency gauge
# HELP autonomy_agent_directive_claim 1 for the directive the agent is working on.
# TYPE autonomy_agent_directive_claim gauge
autonomy_agent_directive_claim{agent="CMO",directive_id="D-1002"} 1.0
# HELP autonomy_agent_conflict 1 for the conflict the agent reports.
# TYPE autonomy_agent_conflict gauge
# HELP autonomy_agent_open_conflicts Conflicts the agent reports as still open (only when reported).
# TYPE autonomy_agent_open_conflicts gauge
# HELP autonomy_agent_last_task_succeeded 1 if the agent's last task succeeded, 0 if not (only when reported).
# TYPE autonomy_agent_last_task_succeeded gauge
autonomy_agent_last_task_succeeded{agent="CMO"} 0.0
# HELP autonomy_agent_inputs_valid 1 if the agent's inputs validate, 0 if not (only when reported).
# TYPE autonomy_agent_inputs_valid gauge
# HELP autonomy_agent_config_healthy 1 if the agent's configuration and secrets are complete, 0 if not (only when reported).
# TYPE autonomy_agent_config_healthy gauge
"""


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def collector_text(store: SignalStore) -> str:
    registry = CollectorRegistry()
    registry.register(AgentSignalCollector(store))
    return generate_latest(registry).decode()


def test_one_agent_is_exposed_exactly_so():
    store = SignalStore()
    store.put_many(load_signals(json.dumps(FLEET[1])))
    assert store.render() == EXPECTED_CMO


def test_the_embedded_collector_gives_the_same_text_as_the_fast_renderer():
    store = SignalStore()
    store.put_many(load_signals(json.dumps(FLEET + [example()])))
    assert collector_text(store) == store.render()


def test_label_values_are_escaped_as_prometheus_client_escapes_them():
    [signal] = load_signals(json.dumps(example()))
    store = SignalStore()
    store.put(replace(signal, agent='we"ird\\agent\nname', conflict_id="c\"1"))
    text = store.render()
    assert 'agent="we\\"ird\\\\agent\\nname"' in text
    assert collector_text(store) == text


def test_an_empty_store_exposes_only_the_family_headers():
    text = SignalStore().render()
    assert all(line.startswith("# ") for line in text.splitlines())
    assert collector_text(SignalStore()) == text


def test_a_silent_agent_is_dropped_after_the_expiry():
    clock = FakeClock()
    store = SignalStore(expiry_seconds=60, clock=clock)
    store.put_many(load_signals(json.dumps(FLEET)))
    clock.now += 30
    store.put_many(load_signals(json.dumps(dict(FLEET[0], ts="2025-08-18T15:03:00Z"))))
    clock.now += 45  # CRO spoke 45 s ago, the others 75 s ago
    assert [e.signal.agent for e in store.snapshot()] == ["CRO"]
    assert store.expired_total == 2
    assert store.latest("CMO") is None and store.latest("CRO").agent == "CRO"
    assert 'agent="CMO"' not in store.render()


def test_the_agent_set_is_dynamic():
    store = SignalStore()
    registry = CollectorRegistry()
    registry.register(AgentSignalCollector(store))
    assert registry.get_sample_value("autonomy_agent_success_ratio", {"agent": "CRO"}) is None
    store.put_many(load_signals(json.dumps(FLEET[0])))
    assert registry.get_sample_value("autonomy_agent_success_ratio", {"agent": "CRO"}) == 0.97
