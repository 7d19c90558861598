"""Issue 14: a storm of 200 simultaneous TRANSIENT faults on the simulated fleet, recovered by the real loop (the
exporter, the real Prometheus and Alertmanager with the repo's rules and routes, time compressed as in the demo,
the receiver with its default 4 workers). Every agent is verified-recovered, each remediated once, and no more
action calls run at once than there are workers: the verification waits hold no worker (devstack/fleet_storm.py)."""
import pytest

from devstack.fleet_storm import run_fleet_storm
from tests.conftest import real_binary

pytestmark = pytest.mark.integration

AGENTS, WORKERS = 200, 4


@pytest.fixture(scope="module")
def storm(tmp_path_factory):
    real_binary("prometheus")
    real_binary("alertmanager")
    return run_fleet_storm(tmp_path_factory.mktemp("fleet-storm"), AGENTS, workers=WORKERS, timeout=300)


def test_every_agent_of_the_storm_is_verified_recovered(storm):
    assert (storm.recovered, storm.escalated) == (AGENTS, 0), storm


def test_each_agent_is_remediated_once_and_never_twice_at_a_time(storm):
    assert storm.playbook_runs_max == 1, storm
    assert storm.max_concurrent_per_agent == 1, storm


def test_no_more_action_calls_run_at_once_than_there_are_workers(storm):
    assert 1 <= storm.max_concurrent_actions <= WORKERS, storm
