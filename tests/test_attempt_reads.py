"""What one attempt reads of the fleet: only the agents its playbook's templates need, by queries that select
them, so its cost does not grow with the fleet (a CAPACITY playbook reads the candidates of one priority tier)."""
import re

from tests.test_engine import failing_cmo
from tests.test_verdicts import overlap
from webhook_receiver.templating import template_roots

MEMBER_QUERIES = re.compile(r"^(autonomy_agent_info|autonomy_agent_status|max by \(agent\) "
                            r"\(autonomy_agent_cost_burn_dollars_per_hour|autonomy_agent_directive_claim)\b")


def member_queries(h) -> list[str]:
    return [q for q in h.prom.queries if MEMBER_QUERIES.match(q)]


def crowd(h, count=50):
    for n in range(count):
        h.prom.add(f"bystander-{n:02d}", "Content")


def test_a_transient_attempt_reads_no_other_agent(h):
    h.build()
    crowd(h)
    failing_cmo(h)
    assert h.run(h.fire()).outcome == "auto_resolved"
    assert member_queries(h) == []


def test_a_conflict_reads_only_its_claimants(h):
    h.build({"AUTOREM_PRIORITY": "Revenue,Marketing,Content"})
    crowd(h)
    overlap(h)
    conflict = h.fire("CMO", "CONFLICT", alertname="DirectiveClaimedByMultipleAgents", directive_id="D-REV-1")
    h.fire("CRO", "CONFLICT", alertname="DirectiveClaimedByMultipleAgents", directive_id="D-REV-1")
    assert h.run(conflict).outcome == "auto_resolved"
    queries = member_queries(h)
    assert queries and all('{agent=~"CMO|CRO"}' in q for q in queries), queries


def test_an_agents_own_conflict_reads_the_claimants_of_its_directive_only(h):
    h.build({"AUTOREM_PRIORITY": "Revenue,Marketing,Content"})
    crowd(h)
    overlap(h)
    h.run(h.fire("CMO", "CONFLICT", alertname="AgentConflictReported"))  # classified from CMO's own signal
    queries = member_queries(h)
    assert queries and all('{agent=~"CMO|CRO"}' in q for q in queries), queries
    throttled = [body for agent, action, body in h.agents.calls if action == "throttleAgent"]
    assert throttled == [{"agent": "CMO", "maxConcurrent": 1, "minutes": 20}]  # the same loser as before


def test_a_capacity_playbook_reads_only_the_lowest_tier_holding_a_slot_donor(h):
    h.build({"AUTOREM_BUDGET_CAP_DAILY_USD": "25", "AUTOREM_PRIORITY": "Executive,Revenue,Marketing,Content,Data"})
    crowd(h, 3)  # Content, healthy: ranked above Data, whose only agent is in error
    h.prom.add("CMO", "Marketing", status="degraded", backlogAgeMinutes=41, costBurnRatePerHour=0.5)
    h.prom.add("MarketIntel", "Data", status="error", costBurnRatePerHour=0)
    h.run(h.fire(cls="CAPACITY"))
    assert member_queries(h) == []
    tiers = [q for q in h.prom.queries if q.lstrip("(").startswith("max by (agent) (autonomy_agent_info")]
    assert len(tiers) == 3, tiers  # unranked domains, Data, Content: the search stops at the first with a donor
    [(agent, body)] = [(a, b) for a, action, b in h.agents.calls if action == "reallocateSlots"]
    assert body["from"] == "bystander-02"


def test_the_roots_a_template_names_are_found_in_every_nested_string():
    args = {"from": "{{ slotDonorAgent }}", "to": "{{ agent }}", "list": ["{{ context.directiveId }}", 3],
            "text": "for {{ incident.id }} of {{ labels.team }}", "plain": "no template"}
    assert template_roots(args) == {"slotDonorAgent", "agent", "context", "incident", "labels"}
    assert template_roots({"n": 1}) == frozenset()
