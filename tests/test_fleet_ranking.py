"""Who yields (a slot donor, the lowest-priority spender), searched tier by tier: the same agent the ranking of the
whole fleet picks, for every fleet, and the search stops at the lowest tier that has one."""
import random

import pytest
import yaml

from autonomy.signal_contract import validate_signals
from devstack.checkout import PLAYBOOKS_FILE
from webhook_receiver.agent_view import view_from_signals
from webhook_receiver.fleet_ranking import Role, Tier, candidates_query, lowest_ranked, tiers
from webhook_receiver.fleet_reader import SignalFleetReader
from webhook_receiver.fleet_view import members_from_signals, template_variables
from webhook_receiver.playbooks import parse_playbooks

DOMAINS = ("Executive", "Revenue", "Marketing", "Content", "Data", "Ops", None)


def playbook_set(agents: dict):
    doc = yaml.safe_load(PLAYBOOKS_FILE.read_text())
    doc["agents"] = agents
    return parse_playbooks(doc)


def random_fleet(rng: random.Random, size: int) -> list[dict]:
    docs = []
    for n in range(size):
        doc = {"agent": f"a{rng.randrange(40):02d}-{n}", "status": rng.choice(("healthy", "healthy", "degraded", "error")),
               "lastReport": "t", "ts": "2026-12-01T00:00:00Z",
               "metrics": {"successRate": 0.99, "alignment": 0.99, "backlogAgeMinutes": 1,
                           "costBurnRatePerHour": rng.choice((0, 0, 0.1, 0.4))}}
        domain = rng.choice(DOMAINS)
        if domain:
            doc["domain"] = domain
        docs.append(doc)
    return docs


@pytest.mark.parametrize("seed", range(60))
def test_the_tier_search_picks_what_ranking_the_whole_fleet_picks(seed):
    rng = random.Random(seed)
    signals = validate_signals(random_fleet(rng, rng.randrange(1, 25)))
    priority = tuple(rng.sample(DOMAINS[:-1], rng.randrange(0, 5)))
    placed = {s.agent: {"domain": rng.choice(DOMAINS[:-1])} for s in rng.sample(signals, min(3, len(signals)))}
    playbooks = playbook_set(placed)
    agent = rng.choice(signals).agent
    view = view_from_signals(agent, signals, 120)
    whole = template_variables(agent, view, members_from_signals(signals), playbooks, priority, {}, "i")
    reader = SignalFleetReader(lambda: signals, 120, None)
    for role in Role:
        assert lowest_ranked(role, agent, tiers(priority, playbooks), reader.candidates) == whole[role.value], role


def test_tiers_run_from_the_unranked_domains_up_the_priority_order():
    playbooks = playbook_set({"CEO": {"domain": "Executive"}, "Side": {"domain": "Hobby"}})
    unranked, content, executive = tiers(("Executive", "Content"), playbooks)
    assert unranked == Tier(frozenset(), True, frozenset({"Executive", "Content"}), frozenset({"Side"}),
                            frozenset({"CEO", "Side"}))
    assert content.domains == {"Content"} and not content.listed
    assert executive.listed == {"CEO"}
    assert executive.holds("CEO", "Content") and not content.holds("CEO", "Content")
    assert unranked.holds("anyone", None) and unranked.holds("Side", "Executive")


def test_the_search_stops_at_the_lowest_tier_with_a_candidate():
    asked = []

    def candidates(role, tier):
        asked.append(tier)
        return ["CMO", "Zed"] if tier.domains == {"Content"} else []

    found = lowest_ranked(Role.DONOR, "Zed", tiers(("Executive", "Content", "Data"), playbook_set({})), candidates)
    assert found == "CMO"  # Zed is the incident's own agent: it donates to nobody
    assert [t.domains for t in asked] == [frozenset(), {"Data"}, {"Content"}]
    assert lowest_ranked(Role.SPENDER, "X", tiers((), playbook_set({})), lambda r, t: []) == "X"


def test_the_candidates_query_selects_by_domain_and_escapes_every_name():
    tier = Tier(frozenset({"Data"}), False, frozenset(), frozenset({'a"b'}), frozenset({'a"b', "c.d"}))
    query = candidates_query(Role.DONOR, tier)
    assert query == ('((max by (agent) (autonomy_agent_info{domain=~"Data"}) unless on (agent) '
                     'autonomy_agent_info{agent=~"a\\"b|c\\\\.d"}) or max by (agent) '
                     '(autonomy_agent_info{agent=~"a\\"b"})) unless on (agent) '
                     '(autonomy_agent_status{autonomy_agent_status!="healthy"} == 1)')
    spender = candidates_query(Role.SPENDER, Tier(frozenset(), True, frozenset(), frozenset(), frozenset()))
    assert spender == ("max by (agent) (autonomy_agent_info) and on (agent) "
                       "(max by (agent) (autonomy_agent_cost_burn_dollars_per_hour) > 0)")
