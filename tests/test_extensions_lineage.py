"""Signal extensions in the lineage's before/after (issue 16, deliverable 7): on the direct path from the signals the
receiver holds; on the Prometheus path from the exporter (Prometheus never has them), a failed read noted and never
changing a verdict. The engine runs on the fakes of tests/engine_harness.py; the exporter is the real one."""
import json
import time

import pytest

from autonomy.settings import Secret, Settings
from autonomy.signal_contract import Signal
from devstack.local_stack import ServedApp
from exporter.app import create_app as create_exporter
from tests.engine_harness import iso
from tests.receivers import closed_url
from webhook_receiver.agent_extensions import NOTE, RETRY_AFTER_SECONDS, ExporterExtensions, with_extensions
from webhook_receiver.agent_view import FLEET, AgentView, signal_metrics
from webhook_receiver.classifier import Facts
from webhook_receiver.engine import Upstreams
from webhook_receiver.upstream_deadline import DeadlinePassed, UpstreamError, deadline

PUSH_TOKEN = "exp-SECRET-71c0d2aa"
BEFORE = {"successRate": 0.5, "alignment": 0.99, "backlogAgeMinutes": 1.0, "costBurnRatePerHour": 0.1}


def failing_cmo(h):
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False, successRate=0.5)


def with_exporter(h, extensions):
    """The harness's fakes, and EXTENSIONS as the Prometheus path's source of extensions (before build())."""
    h.upstreams = lambda settings, signals: Upstreams(
        prometheus=h.prom, alertmanager=h.am, latest_signal=signals.latest,
        all_signals=lambda: [e.signal for e in signals.snapshot()], extensions=extensions)


@pytest.fixture
def exporter():
    app = create_exporter({"SETTINGS": Settings.from_env({}),
                           "EXPORTER_TOKEN": Secret("AUTOREM_EXPORTER_TOKEN", PUSH_TOKEN)})
    served = ServedApp(app).start()
    yield app, served.url
    served.stop()


def push(app, doc: dict) -> None:
    reply = app.test_client().post("/api/v1/signals", data=json.dumps(doc), content_type="application/json",
                                   headers={"Authorization": f"Bearer {PUSH_TOKEN}"})
    assert reply.status_code == 200, reply.get_json()


# ------------------------------------------------------------------ the direct path

def test_the_direct_paths_lineage_carries_the_signals_extensions_before_and_after(h):
    h.build()
    failing_cmo(h)
    [incident_id] = h.post_signal({**h.prom.docs["CMO"], "ts": iso(time.time()),
                                   "extensions": {"runId": "r-1", "lane": {"id": 3}}})["opened"]

    def restart(agent, body):  # the agent's next heartbeat, healthy, from its next run
        h.prom.set(agent, status="healthy", errorCode=None, lastTaskSucceeded=True, successRate=0.98)
        h.state.signals.put(Signal.from_document({**h.prom.docs[agent], "ts": iso(time.time() + 1),
                                                  "extensions": {"runId": "r-2"}}))

    h.agents.handlers["restartAgent"] = restart
    incident = h.run(incident_id)
    [line] = h.lineage("auto_remediation")
    assert line["ok"] and incident.outcome == "auto_resolved"
    assert line["before"] == {**BEFORE, "extensions": {"runId": "r-1", "lane": {"id": 3}}}
    assert line["after"] == {"successRate": 0.98, "alignment": 0.99, "backlogAgeMinutes": 1.0,
                             "costBurnRatePerHour": 0.1, "extensions": {"runId": "r-2"}}
    assert h.store.get(incident.id).metrics["extensions"] == {"runId": "r-1", "lane": {"id": 3}}


def test_a_signal_without_extensions_leaves_before_and_after_as_they_were(h):
    h.build()
    failing_cmo(h)
    [incident_id] = h.post_signal({**h.prom.docs["CMO"], "ts": iso(time.time())})["opened"]

    def restart(agent, body):
        h.prom.set(agent, status="healthy", errorCode=None, lastTaskSucceeded=True, successRate=0.98)
        h.state.signals.put(Signal.from_document({**h.prom.docs[agent], "ts": iso(time.time() + 1)}))

    h.agents.handlers["restartAgent"] = restart
    h.run(incident_id)
    [line] = h.lineage("auto_remediation")
    assert line["before"] == BEFORE and "extensions" not in line["after"] and NOTE not in line["after"]


# ------------------------------------------------------------------ the Prometheus path

def test_the_prometheus_paths_lineage_reads_the_extensions_from_the_exporter(h, exporter):
    app, url = exporter
    failing_cmo(h)
    push(app, {**h.prom.docs["CMO"], "ts": iso(time.time()), "extensions": {"runId": "r-1"}})
    with_exporter(h, ExporterExtensions(url, Secret("AUTOREM_EXPORTER_TOKEN", PUSH_TOKEN)))
    h.build()

    def restart(agent, body):
        h.prom.set(agent, status="healthy", errorCode=None)
        push(app, {**h.prom.docs[agent], "ts": iso(time.time()), "extensions": {"runId": "r-2"}})

    h.agents.handlers["restartAgent"] = restart
    incident = h.run(h.fire())
    [line] = h.lineage("auto_remediation")
    assert line["ok"] and incident.outcome == "auto_resolved"
    assert line["before"] == {**BEFORE, "extensions": {"runId": "r-1"}}
    assert line["after"]["extensions"] == {"runId": "r-2"} and NOTE not in line["after"]


def test_an_unreachable_exporter_is_noted_in_the_lineage_and_changes_no_verdict(h):
    failing_cmo(h)
    with_exporter(h, ExporterExtensions(closed_url(), Secret("AUTOREM_EXPORTER_TOKEN", PUSH_TOKEN)))
    h.build()
    incident = h.run(h.fire())
    [line] = h.lineage("auto_remediation")
    assert line["ok"] and incident.outcome == "auto_resolved"
    assert line["verification"]["checks"] == {"lastTaskSucceeded": True}
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]
    assert {k: v for k, v in line["before"].items() if k != NOTE} == BEFORE
    for side in ("before", "after"):
        assert line[side][NOTE].startswith("extensions not read: "), line[side]
        assert PUSH_TOKEN not in line[side][NOTE]


def test_an_exporter_refusing_the_token_is_noted_too(h, exporter):
    _, url = exporter
    failing_cmo(h)
    with_exporter(h, ExporterExtensions(url, Secret("AUTOREM_EXPORTER_TOKEN", "not-the-token")))
    h.build()
    assert h.run(h.fire()).outcome == "auto_resolved"
    [line] = h.lineage("auto_remediation")
    assert "HTTP 401" in line["before"][NOTE]


# ------------------------------------------------------------------ the reader, alone

class Reply:
    def __init__(self, status: int, body):
        self.status_code, self.body = status, body

    def json(self):
        return self.body


class Session:
    """requests.Session's get, answering from a list; the requests it was asked."""

    def __init__(self, *replies):
        self.replies, self.asked, self.headers = list(replies), [], {}

    def get(self, url, params=None, timeout=None):
        self.asked.append((url, list(params or []), timeout))
        return self.replies.pop(0)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def view(agent: str) -> AgentView:
    doc = {"agent": agent, "status": "healthy", "lastReport": "ok", "ts": iso(time.time()),
           "metrics": {"successRate": 1, "alignment": 1, "backlogAgeMinutes": 0, "costBurnRatePerHour": 0}}
    signal = Signal.from_document(doc)
    return AgentView(signal, Facts(), signal_metrics(signal))


def test_the_reader_asks_every_exporter_in_batches_with_the_push_token():
    session = Session(Reply(200, {"extensions": {"a0": {"x": 1}}, "unknown": []}),
                      Reply(200, {"extensions": {}, "unknown": []}), Reply(200, {"extensions": {}, "unknown": []}),
                      Reply(200, {"extensions": {"a250": {"y": 2}}, "unknown": []}))
    source = ExporterExtensions("http://e1:9101, http://e2:9101/", Secret("AUTOREM_EXPORTER_TOKEN", PUSH_TOKEN),
                                session=session)
    found = source.read([f"a{i}" for i in range(300)])
    assert found == {"a0": {"x": 1}, "a250": {"y": 2}}
    assert session.headers["Authorization"] == f"Bearer {PUSH_TOKEN}"
    assert [(url, len(params)) for url, params, _ in session.asked] == [
        ("http://e1:9101/api/v1/signals/extensions", 200), ("http://e1:9101/api/v1/signals/extensions", 100),
        ("http://e2:9101/api/v1/signals/extensions", 200), ("http://e2:9101/api/v1/signals/extensions", 100)]
    assert all(0 < timeout <= 2.0 for _, _, timeout in session.asked)


def test_views_gain_extensions_only_where_an_agent_has_them():
    answer = Reply(200, {"extensions": {"A": {"k": 1}, "B": {}}})
    source = ExporterExtensions("http://e1", None, session=Session(answer))
    views = {"A": view("A"), "B": view("B"), FLEET: AgentView(None, Facts(), {"projectedDailySpendDollars": 1.0}),
             "Gone": AgentView(None, Facts(), {}, "prometheus unreachable: x")}
    out = with_extensions(views, source)
    assert out["A"].metrics == {**views["A"].metrics, "extensions": {"k": 1}}
    assert out["B"] == views["B"] and out[FLEET] == views[FLEET] and out["Gone"] == views["Gone"]
    assert source.session.asked[0][1] == [("agent", "A"), ("agent", "B")]  # never the fleet, nor an unread agent
    assert with_extensions(views, None) == views


@pytest.mark.parametrize("reply", [Reply(200, {"extensions": ["A"]}), Reply(200, {"extensions": {"A": 3}}),
                                   Reply(200, [1]), Reply(500, {"error": "x"})], ids=["list", "value", "shape", "5xx"])
def test_a_bad_answer_becomes_a_note_in_place_of_the_extensions(reply):
    out = with_extensions({"A": view("A")}, ExporterExtensions("http://e1", None, session=Session(reply)))
    assert out["A"].metrics[NOTE].startswith("extensions not read: http://e1/api/v1/signals/extensions")
    assert "extensions" not in out["A"].metrics


def test_after_a_failure_the_exporters_are_left_alone_for_a_while():
    clock = Clock()
    session = Session(Reply(503, {}), Reply(200, {"extensions": {"A": {"k": 1}}}))
    source = ExporterExtensions("http://e1", None, session=session, clock=clock)
    with pytest.raises(UpstreamError):
        source.read(["A"])
    with pytest.raises(UpstreamError, match="not asked again"):
        source.read(["A"])
    assert len(session.asked) == 1
    clock.now += RETRY_AFTER_SECONDS + 1
    assert source.read(["A"]) == {"A": {"k": 1}}


def test_the_callers_deadline_passing_is_no_fault_of_the_exporters():
    session = Session(Reply(200, {"extensions": {"A": {"k": 1}}}))
    source = ExporterExtensions("http://e1", None, session=session)
    with deadline(time.time() - 1), pytest.raises(DeadlinePassed):
        source.read(["A"])
    assert source.read(["A"]) == {"A": {"k": 1}}  # asked at once, not left alone


# ------------------------------------------------------------------ the setting

def test_autorem_exporter_url_refuses_credentials_without_echoing_them():
    from autonomy.settings import SettingsError

    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"AUTOREM_EXPORTER_URL": "http://user:hunter2@exporter:9817"})
    assert "AUTOREM_EXPORTER_URL: must not carry credentials" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_receiver_reads_extensions_from_the_exporters_it_is_given_and_only_then(make_receiver, tmp_path):
    app = make_receiver({"AUTOREM_EXPORTER_URL": "http://exporter-0:9817, http://exporter-1:9817/",
                         "AUTOREM_EXPORTER_TOKEN": PUSH_TOKEN}, data_dir=tmp_path / "with")
    source = app.extensions["autonomy_receiver"].engine.up.extensions
    assert source.base_urls == ["http://exporter-0:9817", "http://exporter-1:9817"]
    assert source.session.headers["Authorization"] == f"Bearer {PUSH_TOKEN}"
    plain = make_receiver(data_dir=tmp_path / "without")
    assert plain.extensions["autonomy_receiver"].engine.up.extensions is None
