"""Property test: whatever Prometheus and Alertmanager answer (valid, truncated, wrong types, not JSON, errors),
every incident the engine takes ends in a recorded state, with its lineage, and never an exception."""
import itertools
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook_receiver.incident import RUNNABLE_STATES
from webhook_receiver.upstreams import AlertmanagerApi, PrometheusApi

CASES = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NAMES = itertools.count()

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
                    st.text(max_size=6), st.sampled_from(["1", "0", "NaN", "+Inf", "many", "1e400"]))
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                    max_leaves=8)
labels = st.dictionaries(st.sampled_from(["agent", "alertname", "code", "directive_id", "autonomy_agent_status"]),
                         st.one_of(st.sampled_from(["CMO", "CRO", "AgentTransientError", "TIMEOUT", "error"]),
                                   st.integers()), max_size=3)
sample = st.one_of(st.tuples(st.floats(1, 2e9), st.sampled_from(["1", "0", "0.5", "NaN"])).map(list), junk)
row = st.fixed_dictionaries({"metric": st.one_of(labels, junk)}, optional={"value": sample, "values": st.lists(sample)})
prometheus_answers = st.one_of(
    st.fixed_dictionaries({"status": st.just("success"), "data": st.fixed_dictionaries({
        "resultType": st.sampled_from(["vector", "matrix", "scalar", "string"]),
        "result": st.one_of(st.lists(row, max_size=3), sample)})}),
    st.fixed_dictionaries({"status": st.sampled_from(["success", "error"])}, optional={"data": junk, "error": junk}),
    junk)
alert = st.fixed_dictionaries({"labels": st.one_of(labels, junk), "status": st.one_of(st.fixed_dictionaries({
    "state": st.sampled_from(["active", "suppressed", "unprocessed"]),
    "silencedBy": st.one_of(st.lists(st.sampled_from(["s-1"]), max_size=1), junk),
    "inhibitedBy": st.lists(st.just("a-1"), max_size=1)}), junk)})
alertmanager_answers = st.one_of(st.lists(alert, max_size=3), junk)


class Reply:
    def __init__(self, status: int, body):
        self.status_code, self.body = status, body

    def json(self):
        if self.body is NotJson:
            raise ValueError("not JSON")
        return json.loads(json.dumps(self.body))


NotJson = object()


class Scripted:
    """A requests.Session whose answers the property draws, one per call."""

    def __init__(self, data, answers, valid=None):
        self.data, self.answers, self.valid = data, answers, valid

    def get(self, url, params=None, timeout=None):
        status = self.data.draw(st.sampled_from([200, 200, 200, 200, 500, 404]))
        body = self.data.draw(st.one_of(self.answers, st.just(NotJson)))
        if self.valid is not None and self.data.draw(st.integers(0, 9)) < 6:
            status, body = 200, self.valid  # mostly a sound answer, so that the loop goes on to the next question
        return Reply(status, body)

    def post(self, url, json=None, timeout=None):
        return Reply(self.data.draw(st.sampled_from([200, 200, 400, 500])), {})


@CASES
@given(data=st.data())
def test_every_incident_ends_in_a_recorded_state_whatever_the_upstreams_answer(h, data):
    if h.app is None:
        # One look per verification (the next would land on its deadline): how many answers an example draws
        # must not depend on how fast a loaded machine runs it.
        h.build({"AUTOREM_MAX_ATTEMPTS": "2", "AUTOREM_VERIFY_TIMEOUT_SECONDS": "0.1",
                 "AUTOREM_VERIFY_INTERVAL_SECONDS": "0.1", "AUTOREM_QUEUE_SIZE": "100000"})
    agent = f"Agent{next(NAMES)}"
    active = [{"labels": {"agent": agent, "alertname": "AgentTransientError", "autonomy_class": "TRANSIENT"},
               "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}}]
    h.engine.up.prometheus = PrometheusApi("http://prometheus.invalid", session=Scripted(data, prometheus_answers))
    h.engine.up.alertmanager = AlertmanagerApi("http://alertmanager.invalid",
                                               session=Scripted(data, alertmanager_answers, active))
    incident_id = h.notify(agent, data.draw(st.sampled_from(["TRANSIENT", "CAPACITY", "CONFIG"])))["opened"][0]
    h.engine.process(incident_id)
    for _ in range(3):  # an unexpected failure is retried: drive the retries as the watchdog would
        incident = h.store.get(incident_id)
        if incident.state not in RUNNABLE_STATES:
            break
        assert incident.retry_at, incident  # runnable only while a retry is scheduled
        h.store.update(incident_id, retry_at=None)
        h.engine.process(incident_id)
    incident = h.store.get(incident_id)
    assert incident.state in ("escalated", "skipped", "recovered", "closed"), incident
    lines = h.state.lineage.read(incident_id=incident_id).entries
    events = [e["event"] for e in lines]
    assert events, incident  # every ending has its line
    # A malformed answer is an upstream error with its reason, never an exception inside the engine.
    assert not [e["error"] for e in lines if e.get("error")]
    if incident.state == "escalated":
        assert "escalation" in events
    if incident.state == "skipped":
        assert "remediation_refused" in events

