"""Conflicts: their key, arbitration by the priority order (refused where it does not decide), and the evidence
an agent's own incident leaves to the conflict's incident."""
import pytest

from autonomy.signal_contract import Signal
from webhook_receiver.agent_view import AgentView
from webhook_receiver.classifier import Facts, classify
from webhook_receiver.conflicts import arbitrate, conflict_key, signal_conflict_labels, without_conflicts

PACK = ("Revenue", "Marketing", "Content")
DEMO = ("Executive", "Revenue", "Operations", "Marketing", "Content", "Data")


@pytest.mark.parametrize("labels, key", [
    ({"autonomy_class": "CONFLICT", "directive_id": "D-1"}, "directive:D-1"),
    ({"autonomy_class": "CONFLICT", "conflict_id": "C-9", "directive_id": "D-1"}, "conflict:C-9"),
    ({"autonomy_class": "CONFLICT"}, None),  # a conflict without an id stays the agent's own incident
    ({"autonomy_class": "CAPACITY", "directive_id": "D-1"}, None),
])
def test_the_conflict_an_alert_is_about(labels, key):
    assert conflict_key(labels) == key


# (claimants agent -> domain, priority, ordered claimants, problem contains)
ARBITRATION = [
    ({"CMO": "Marketing", "CRO": "Revenue"}, PACK, ("CRO", "CMO"), None),
    ({"Content": "Content", "CMO": "Marketing", "CRO": "Revenue"}, PACK, ("CRO", "CMO", "Content"), None),
    # The pack's default order ranks no Executive domain: the layer does not let CEO lose to Content.
    ({"CEO": "Executive", "Content": "Content"}, PACK, ("Content", "CEO"), "does not rank CEO (Executive)"),
    ({"CEO": "Executive", "Content": "Content"}, DEMO, ("CEO", "Content"), None),
    ({"CMO": None, "CRO": "Revenue"}, PACK, ("CRO", "CMO"), "does not rank CMO (no domain)"),
    ({"CMO": "Marketing", "CMO2": "Marketing"}, PACK, ("CMO", "CMO2"), "CMO and CMO2 share the domain Marketing"),
    ({"CEO": "Executive"}, PACK, ("CEO",), None),  # one claimant: nothing to arbitrate
]


@pytest.mark.parametrize("claimants, priority, ordered, problem", ARBITRATION)
def test_arbitration_ranks_by_the_priority_order_and_refuses_where_it_does_not_speak(claimants, priority, ordered,
                                                                                   problem):
    result = arbitrate(claimants, priority)
    assert result.claimants == ordered
    if problem is None:
        assert result.problem is None
        assert (result.as_dict()["winner"], result.as_dict()["loser"]) == (ordered[0], ordered[-1])
    else:
        assert problem in result.problem and "a human" in result.problem
        assert "winner" not in result.as_dict()


def sig(**fields) -> Signal:
    base = dict(agent="CRO", status="degraded", last_report="ok", success_ratio=0.97, alignment_ratio=0.85,
                backlog_age_seconds=60.0, cost_burn_dollars_per_hour=0.1, timestamp=1.0, directive_id="D-1")
    base.update(fields)
    return Signal(**base)


def test_an_agents_own_incident_leaves_a_conflict_with_its_own_incident_alone():
    view = AgentView(sig(), Facts(directive_claimants=2), {})
    assert classify(view.signal, view.facts).classification == "CONFLICT"
    rest = without_conflicts(view, ["directive:D-1"])
    decision = classify(rest.signal, rest.facts)
    assert decision.classification == "CAPACITY"  # what is left: the alignment the conflict cost it
    assert without_conflicts(view, ["directive:OTHER"]) == view


def test_a_reported_conflict_id_is_left_to_its_incident_too():
    view = AgentView(sig(conflict_id="C-1", status="healthy", alignment_ratio=0.99), Facts(), {})
    rest = without_conflicts(view, ["conflict:C-1"])
    assert rest.signal.conflict_id is None and classify(rest.signal, rest.facts).classification is None


@pytest.mark.parametrize("fields, claimants, labels", [
    ({"conflict_id": "C-1"}, 1, {"conflict_id": "C-1"}),
    ({}, 2, {"directive_id": "D-1"}),
    ({}, 1, {}),
])
def test_a_direct_path_signal_is_tied_to_its_conflict_as_the_rules_label_it(fields, claimants, labels):
    assert signal_conflict_labels(sig(**fields), claimants) == labels
