"""The soak's schedule: a pure function of its seed that covers every kind of fault, overlapping."""
import pytest

from devstack.fleet import FAULTS
from devstack.soak_schedule import CANARY, DAY, HOUR, SHAPES, rollout_plan, roster, schedule


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another():
    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)


def test_a_default_week_has_every_shape_and_every_fault_kind():
    week = schedule(1)
    assert {e.shape for e in week.episodes} == set(SHAPES)
    kinds = {f.kind for e in week.episodes for f in e.faults}
    assert kinds == set(FAULTS)
    assert any(not f.fixable for e in week.episodes for f in e.faults), "a share the layer cannot fix"
    assert {op.kind for e in week.episodes for op in e.operations} == {"silence", "kill_switch", "receiver_restart"}
    assert any(f.returns_after for e in week.episodes for f in e.faults), "a flapping fault"
    assert any(f.clears_after for e in week.episodes for f in e.faults), "a fault that heals by itself"


@pytest.mark.parametrize("seed", range(20))
def test_every_default_week_is_in_the_size_the_issue_asks_for(seed):
    week = schedule(seed)
    faults = sum(len(e.faults) for e in week.episodes)
    assert 80 <= faults <= 200
    assert all(0 <= e.starts < week.span for e in week.episodes)
    assert [e.starts for e in week.episodes] == sorted(e.starts for e in week.episodes)
    assert sum(1 for e in week.episodes if e.starts < HOUR) >= 3, "the canary's hour sees faults"


def test_faults_overlap_two_agents_two_faults_on_one_and_during_a_remediation():
    week = schedule(3)
    by_shape = {e.shape: e for e in week.episodes}
    two = by_shape["two_agents"].faults
    assert len({f.agent for f in two}) == 2 and abs(two[0].at - two[1].at) <= 10
    one = by_shape["two_faults_one_agent"].faults
    assert len({f.agent for f in one}) == 1 and {f.kind for f in one} == {"timeout", "backlog"}
    during = by_shape["during_remediation"].faults
    assert len({f.agent for f in during}) == 2 and 40 <= during[1].at - during[0].at <= 70


def test_overlaps_never_come_from_a_revenue_agent_and_silences_never_hit_a_source():
    for agents in (6, 50):
        roles = {r.name: r for r in roster(agents)}
        for seed in range(10):
            for e in schedule(seed, agents=agents).episodes:
                for f in e.faults:
                    if f.kind == "overlap":
                        assert roles[f.agent].domain != "Revenue", (seed, e)
                    if f.kind == "silent":
                        assert not any(f.agent in r.dependencies for r in roles.values()), (seed, e)
    assert any(f.agent == "CRO" for e in schedule(1).episodes for f in e.faults), "CRO has faults of its own"


def test_a_larger_fleet_has_dependency_chains_across_domains():
    roles = {r.name: r for r in roster(50)}
    assert len(roles) == 50
    assert {r.domain for r in roles.values()} >= {"Data", "Content", "Marketing", "Revenue", "Operations"}
    chains = [r for r in roles.values() if r.dependencies and roles[r.dependencies[0]].dependencies]
    assert chains, "a Marketing agent reading a Content agent reading a Data source"
    assert all(d in roles for r in roles.values() for d in r.dependencies)
    assert len({r.directive for r in roles.values() if r.directive}) == sum(1 for r in roles.values() if r.directive)


def test_the_rollout_plan_is_the_packs_section_11():
    canary, expanded, capacity = rollout_plan(7)
    assert (canary.at, canary.agents, "CAPACITY" in canary.classes) == (0.0, CANARY, False)
    assert (expanded.at, expanded.agents, "CAPACITY" in expanded.classes) == (HOUR, None, False)
    assert (capacity.at, capacity.agents, "CAPACITY" in capacity.classes) == (DAY, None, True)
    assert rollout_plan(1)[2].at == 0.75 * DAY


@pytest.mark.parametrize("days, agents, message", [(0, 6, "--days"), (-1, 6, "--days"), (7, 5, "--agents")])
def test_a_bad_size_is_refused_naming_the_option(days, agents, message):
    with pytest.raises(ValueError, match=message):
        schedule(1, days, agents)


def test_a_budget_spike_is_fixable_only_on_the_lowest_priority_spender_the_playbook_throttles():
    spikes = [f for seed in range(30) for e in schedule(seed).episodes for f in e.faults if f.kind == "cost-spike"]
    assert {f.agent for f in spikes if f.fixable} == {"Content"}
    assert any(not f.fixable for f in spikes) and all(f.agent != "Content" for f in spikes if not f.fixable)
