"""The receiver's calls to agents: the token and the idempotency key on every action, how answers are read
(202 accepted, 501 not implemented, Retry-After), and what a step records of its callee."""
from __future__ import annotations

import json
import threading

import pytest
import requests
import yaml

from autonomy.primitives import PRIMITIVES, idempotency_key
from devstack.checkout import PLAYBOOKS_FILE
from webhook_receiver.actions import ActionRunner, retry_after
from webhook_receiver.playbooks import PlaybookError, Step, parse_playbooks

TOKEN = "agent-SECRET-7c1d"


class Reply:
    def __init__(self, status: int, headers: dict | None = None):
        self.status_code, self.headers = status, headers or {}


class FakeSession:
    """Answers each request with the next of ANSWERS (a status, a (status, headers) pair, or an exception)."""

    def __init__(self, *answers):
        self.answers, self.sent = list(answers), []

    def request(self, method, url, json=None, headers=None, timeout=None, allow_redirects=True):
        self.sent.append({"method": method, "url": url, "json": json, "headers": dict(headers or {}),
                          "allow_redirects": allow_redirects})
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        status, extra = answer if isinstance(answer, tuple) else (answer, {})
        return Reply(status, extra)


class RecordingStop(threading.Event):
    """A stop event that records how long each backoff would wait, without waiting."""

    def __init__(self):
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return False


def playbooks(env=None, change=lambda doc: None):
    doc = yaml.safe_load(PLAYBOOKS_FILE.read_text())
    doc["actions"]["retry"] = {"attempts": 3, "backoffSeconds": 0.5, "maxBackoffSeconds": 1, "jitter": 0}
    change(doc)
    return parse_playbooks(doc, env={"AUTOREM_AGENT_TOKEN": TOKEN} if env is None else env)


def run(session, step=Step("restartAgent", {"mode": "soft"}), agent="CMO", key="inc-1:1:0", stop=None, pb=None):
    return ActionRunner(pb or playbooks(), session).run(step, agent, {}, stop or RecordingStop(), key)


def test_every_call_of_a_step_carries_the_token_and_the_same_idempotency_key():
    session = FakeSession(503, requests.ConnectionError(), 200)
    result = run(session)
    assert result.ok and result.attempts == 3
    assert [s["headers"] for s in session.sent] == [{"Authorization": f"Bearer {TOKEN}",
                                                     "Idempotency-Key": "inc-1:1:0"}] * 3
    assert result.idempotency_key == "inc-1:1:0"


def test_an_agent_of_its_own_token_gets_its_own_and_the_others_the_shared_one(tmp_path):
    (tmp_path / "cro").write_text("cro-SECRET\n")

    def own(doc):
        doc["agents"]["CRO"]["tokenSecret"] = "CRO_ACTION_TOKEN"

    pb = playbooks({"AUTOREM_AGENT_TOKEN": TOKEN, "CRO_ACTION_TOKEN_FILE": str(tmp_path / "cro")}, own)
    session = FakeSession(200)
    run(session, agent="CRO", pb=pb)
    run(session, agent="CMO", pb=pb)
    assert [s["headers"]["Authorization"] for s in session.sent] == ["Bearer cro-SECRET", f"Bearer {TOKEN}"]


def test_without_a_configured_token_no_authorization_is_sent():
    pb = playbooks({}, lambda doc: doc["actions"].pop("tokenSecret"))
    session = FakeSession(200)
    run(session, pb=pb)
    assert session.sent[0]["headers"] == {"Idempotency-Key": "inc-1:1:0"}


@pytest.mark.parametrize("change, env, message", [
    (lambda doc: None, {}, "actions.tokenSecret: AUTOREM_AGENT_TOKEN is not set (nor AUTOREM_AGENT_TOKEN_FILE)"),
    (lambda doc: doc["actions"].update(tokenSecret="lower-case"), {}, "actions.tokenSecret: 'lower-case' is not an "
                                                                       "environment variable name"),
    (lambda doc: doc["agents"]["CRO"].update(tokenSecret="CRO_T"), {"AUTOREM_AGENT_TOKEN": "x"},
     "agents.CRO.tokenSecret: CRO_T is not set (nor CRO_T_FILE)"),
    (lambda doc: None, {"AUTOREM_AGENT_TOKEN": "x", "AUTOREM_AGENT_TOKEN_FILE": "/x"},
     "actions.tokenSecret: AUTOREM_AGENT_TOKEN: set either AUTOREM_AGENT_TOKEN or AUTOREM_AGENT_TOKEN_FILE, not both"),
    (lambda doc: None, {"AUTOREM_AGENT_TOKEN_FILE": "/nonexistent/token"},
     "actions.tokenSecret: AUTOREM_AGENT_TOKEN: cannot read AUTOREM_AGENT_TOKEN_FILE '/nonexistent/token'"),
])
def test_a_token_that_cannot_be_read_stops_the_start_naming_where(change, env, message):
    with pytest.raises(PlaybookError) as caught:
        playbooks(env, change)
    assert message in str(caught.value)


def test_the_token_never_appears_in_what_a_step_records():
    result = run(FakeSession(200))
    assert TOKEN not in json.dumps(result.as_dict())
    assert "inc-1:1:0" in json.dumps(result.as_dict())


def test_a_501_is_not_retried_and_says_the_agent_does_not_implement_the_action():
    session = FakeSession(501)
    result = run(session, step=Step("refreshCache"))
    assert (result.ok, result.status, result.attempts, result.not_implemented) == (False, 501, 1, True)
    assert result.error == "agent does not implement refreshCache"


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_a_refusal_is_not_retried(status):
    session = FakeSession(status)
    result = run(session)
    assert (result.ok, result.attempts, result.error) == (False, 1, f"HTTP {status}")


def test_a_redirect_is_never_followed_and_fails_the_step():
    session = FakeSession((307, {"Location": "http://elsewhere.invalid/"}))
    result = run(session)
    assert session.sent[0]["allow_redirects"] is False
    assert (result.ok, result.attempts, result.status) == (False, 1, 307)
    assert result.error == "HTTP 307: the agent redirected the action; redirects are not followed"


@pytest.mark.parametrize("value", ["two words", "tab\there", "newline\nhere", "caf\u00e9"])
def test_a_token_that_cannot_travel_in_a_header_stops_the_start(value):
    with pytest.raises(PlaybookError) as caught:
        playbooks({"AUTOREM_AGENT_TOKEN": value})
    assert "visible ASCII characters only" in str(caught.value) and value not in str(caught.value)


def test_202_is_accepted_and_left_to_verification():
    result = run(FakeSession(202))
    assert result.ok and result.accepted and result.status == 202


def test_retry_after_is_honoured_over_a_shorter_backoff_and_capped():
    stop = RecordingStop()
    result = run(FakeSession((429, {"Retry-After": "7"}), (503, {"Retry-After": "3600"}), 200), stop=stop)
    assert result.ok and result.attempts == 3
    assert stop.waits == [7.0, 30.0]  # the policy's backoff is 0.5 s and 1 s; an hour is cut to 30 s


def test_without_retry_after_the_policy_spaces_the_retries():
    stop = RecordingStop()
    run(FakeSession(500, 500, 500), stop=stop)
    assert stop.waits == [0.5, 1.0]


@pytest.mark.parametrize("value, expected", [("12", 12.0), ("", None), ("soon", None), ("-3", None),
                                             ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_reads_seconds_and_dates(value, expected):
    assert retry_after(Reply(503, {"Retry-After": value} if value else {})) == expected


def test_each_step_records_who_was_called_and_what_was_asked():
    result = run(FakeSession(200), step=Step("reallocateSlots", {"from": "CRO", "to": "CMO", "slots": 2}))
    assert result.meaning.startswith("called: the incident's agent (the receiver of the slots); asks: take `slots`")
    assert "the donor, which is not called" in result.meaning


def test_every_primitive_of_the_playbooks_has_a_meaning():
    assert set(playbooks().primitives) == {p.name for p in PRIMITIVES}


def test_the_engine_sends_each_step_its_own_key_and_the_token(h):
    h.build()
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False, successRate=0.7)
    incident = h.run(h.fire(cls="TRANSIENT"))
    assert incident.state == "recovered"
    assert h.agents.headers == [{"Authorization": "Bearer test-agent-token",
                                 "Idempotency-Key": idempotency_key(incident.id, 1, step)} for step in (0, 1)]
    [attempt] = h.lineage("auto_remediation")
    assert [s["idempotency_key"] for s in attempt["steps"]] == [idempotency_key(incident.id, 1, s) for s in (0, 1)]
    assert attempt["steps"][0]["meaning"].startswith("called: the incident's agent; asks: restart your worker")


def test_an_unimplemented_action_escalates_at_once_naming_it(h):
    h.build()
    h.agents.handlers["refreshCache"] = lambda agent, body: 501
    h.prom.add("Content2", "Content", status="degraded", errorCode="STALE_DATA", inputsValid=False)
    incident = h.run(h.fire(agent="Content2", cls="DATA_DEP"))
    assert h.agents.actions() == ["refreshCache"]  # once: no second attempt calls it again
    assert incident.state == "escalated" and incident.reason == "ActionNotImplemented"
    attempt, escalation = h.lineage()
    assert attempt["verification"]["reason"] == "step refreshCache failed: agent does not implement refreshCache"
    assert escalation["payload"]["reason"] == "ActionNotImplemented"
    assert h.metric("autonomy_escalations_total", reason="ActionNotImplemented") == 1
