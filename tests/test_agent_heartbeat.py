"""The agent library's heartbeat: on the interval, on change, backing off, newest wins, never blocking the agent."""
import json
import logging
import random
import threading
import time

import pytest
import requests

from autonomy.agent import AgentReport, Backoff, Heartbeat, build_signal
from autonomy.settings import Secret, Settings
from devstack.polling import wait_until
from exporter.app import create_app

TOKEN = "hb-secret-token-0123456789"
URL = "http://layer.test:9108"


def until(predicate, deadline_s=60.0, what="the condition"):
    """Poll PREDICATE until it holds (a generous deadline: a loaded machine is slow, never wrong)."""
    wait_until(predicate, deadline_s, what, interval=0.002)


class FakeClock:
    """Monotonic and wall time that move only when a test advances them; wait() returns when they pass its deadline
    or the event is set. Records every wait's timeout."""

    def __init__(self):
        self.now = 1000.0
        self.waits: list[float] = []
        self.waiting = 0
        self._cond = threading.Condition()

    def monotonic(self):
        return self.now

    def time(self):
        return 1_755_529_331.0 + self.now

    def wait(self, event, timeout):
        with self._cond:
            self.waits.append(timeout)
            deadline = self.now + timeout
            self.waiting += 1
            try:
                while not event.is_set() and self.now < deadline:
                    self._cond.wait(0.005)  # the event has no hook into this condition: look again soon
            finally:
                self.waiting -= 1
        return event.is_set()

    def advance(self, seconds):
        with self._cond:
            self.now += seconds
            self._cond.notify_all()

    def idle(self, beat, attempts):
        """Wait until BEAT has made ATTEMPTS pushes (landed or not) and sits waiting; that wait's timeout."""
        until(lambda: beat.pushed + beat.failed >= attempts and self.waiting, what=f"attempt {attempts}")
        return self.waits[-1]


def reply(status, body=None, headers=None):
    answer = requests.Response()
    answer.status_code = status
    answer._content = json.dumps(body if body is not None else {"stored": 1, "ignored_older": 0}).encode()
    answer.headers.update({"Content-Type": "application/json", **(headers or {})})
    return answer


class FakeLayer:
    """A requests session whose answers a test scripts: a status, an exception, or a gate that holds the call."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls: list[dict] = []
        self.gate: threading.Event | None = None
        self.in_flight = threading.Event()

    def post(self, url, data, headers, timeout):
        self.calls.append({"url": url, "body": json.loads(data), "headers": headers})
        if self.gate is not None:
            self.in_flight.set()
            self.gate.wait(10)
        answer = self.answers.pop(0) if len(self.answers) > 1 else (self.answers[0] if self.answers else reply(200))
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def report():
    return AgentReport(last_report="state 0")


def make(report, layer, clock, **options):
    options.setdefault("backoff", Backoff(0.5, 4.0, 0.0))
    return Heartbeat(URL, TOKEN, source=lambda: build_signal("Writer", "Content", report, clock.time()),
                     session=layer, clock=clock, rng=random.Random(1), **options)


def test_it_pushes_at_once_then_on_the_interval_with_the_token(report):
    clock, layer = FakeClock(), FakeLayer()
    with make(report, layer, clock, interval=15) as beat:
        assert clock.idle(beat, 1) == 15
        assert beat.pushed == 1 and beat.last_push_at == clock.time()
        assert layer.calls[0]["url"] == URL + "/api/v1/signals"
        assert layer.calls[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
        assert layer.calls[0]["body"]["agent"] == "Writer"
        clock.advance(14)
        assert beat.pushed == 1
        clock.advance(1)
        assert clock.idle(beat, 2) == 15
        assert beat.pushed == 2 and len(layer.calls) == 2 and beat.failed == 0


def test_a_change_pushes_at_once_and_changes_coalesce(report):
    clock, layer = FakeClock(), FakeLayer()
    with make(report, layer, clock) as beat:
        clock.idle(beat, 1)
        layer.gate = threading.Event()
        report.update(status="error", error_code="TIMEOUT", last_report="state 1")
        beat.changed()
        until(layer.in_flight.is_set, what="the change's push")
        for n in range(2, 6):  # while that push is in flight: one more push, with the last of these
            report.update(last_report=f"state {n}")
            beat.changed()
        layer.gate.set()
        until(lambda: beat.pushed == 3, what="the coalesced push")
        clock.idle(beat, 3)
        assert [c["body"]["lastReport"] for c in layer.calls] == ["state 0", "state 1", "state 5"]
        assert layer.calls[1]["body"]["context"] == {"errorCode": "TIMEOUT"}
        assert clock.now == 1000.0  # no time had to pass


def test_failures_back_off_doubling_to_the_cap_then_the_interval_again(report):
    clock = FakeClock()
    layer = FakeLayer(*[requests.ConnectionError("refused")] * 6, reply(200))
    with make(report, layer, clock, interval=15) as beat:
        waits = []
        for n in range(1, 7):
            waits.append(clock.idle(beat, n))
            clock.advance(waits[-1])
        assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
        assert clock.idle(beat, 7) == 15
        assert (beat.failed, beat.pushed) == (6, 1)
        assert beat.last_error == "unreachable: ConnectionError: refused"


def test_jitter_stretches_a_delay_by_at_most_its_share():
    rng = random.Random(7)
    delays = [Backoff(1.0, 30.0, 0.5).delay(3, rng) for _ in range(200)]
    assert all(4.0 <= d <= 6.0 for d in delays) and max(delays) > 5.5
    assert Backoff(1.0, 30.0, 0.5).delay(20, rng) == 30.0
    with pytest.raises(ValueError, match="backoff: initial"):
        Backoff(5, 1)


def test_429_and_5xx_honour_retry_after(report):
    clock = FakeClock()
    layer = FakeLayer(reply(429, {"error": "agent limit"}, {"Retry-After": "7"}),
                      reply(503, {"error": "busy"}, {"Retry-After": "0"}), reply(200))
    with make(report, layer, clock) as beat:
        assert clock.idle(beat, 1) == 7
        clock.advance(7)
        assert clock.idle(beat, 2) == 1.0  # Retry-After 0: the backoff's own second delay
        clock.advance(1)
        clock.idle(beat, 3)
        assert (beat.failed, beat.pushed) == (2, 1) and beat.last_error == "HTTP 503: busy"


def test_after_an_outage_the_first_push_that_lands_carries_the_newest_signal_only(report):
    clock = FakeClock()
    layer = FakeLayer(*[requests.ConnectionError("down")] * 4, reply(200))
    with make(report, layer, clock) as beat:
        for n in range(1, 5):
            clock.idle(beat, n)
            report.update(last_report=f"state {n}")
            beat.changed()  # a change during the backoff does not cut it short
            clock.advance(clock.waits[-1])
        clock.idle(beat, 5)
        landed = layer.calls[-1]["body"]
        assert beat.pushed == 1 and isinstance(landed, dict) and landed["lastReport"] == "state 4"
        assert [c["body"]["lastReport"] for c in layer.calls] == [f"state {n}" for n in range(5)]


def test_changed_never_blocks_while_the_layer_hangs(report):
    clock, layer = FakeClock(), FakeLayer()
    layer.gate = threading.Event()
    beat = make(report, layer, clock).start()
    try:
        until(layer.in_flight.is_set, what="the hanging push")
        started = time.monotonic()
        for _ in range(100):
            beat.changed()
        assert time.monotonic() - started < 0.5 and not layer.gate.is_set() and beat.pushed == 0
    finally:
        layer.gate.set()
        beat.stop()
    assert not beat.running


def test_a_4xx_is_logged_with_its_error_and_not_retried_before_the_next_beat(report, caplog):
    clock = FakeClock()
    refusal = reply(422, {"error": "invalid signal; nothing was stored",
                          "errors": ["metrics.successRate: 2 is greater than the maximum of 1"]})
    layer = FakeLayer(refusal, reply(200))
    with caplog.at_level(logging.ERROR, "autonomy.agent.heartbeat"):
        with make(report, layer, clock, interval=15) as beat:
            assert clock.idle(beat, 1) == 15
            assert beat.failed == 1 and len(layer.calls) == 1
            assert beat.last_error == ("HTTP 422: invalid signal; nothing was stored: metrics.successRate: 2 is "
                                       "greater than the maximum of 1")
            clock.advance(15)
            clock.idle(beat, 2)
            assert beat.pushed == 1
    assert "invalid signal; nothing was stored" in caplog.text


def test_the_token_never_reaches_a_log_or_last_error(report, caplog):
    clock = FakeClock()
    layer = FakeLayer(requests.ConnectionError(f"bad header {TOKEN}"), reply(500, {"error": f"echo {TOKEN}"}),
                      reply(401, {"error": f"wrong token {TOKEN}"}), reply(200))
    errors = []
    with caplog.at_level(logging.DEBUG):
        with make(report, layer, clock, interval=15, token_env=None) as beat:
            for n in range(1, 4):
                clock.idle(beat, n)
                errors.append(beat.last_error)
                clock.advance(clock.waits[-1])
            clock.idle(beat, 4)
    assert beat.failed == 3 and all(TOKEN not in e for e in errors)
    assert "<heartbeat token>" in errors[0] and TOKEN not in caplog.text
    assert all(c["headers"]["Authorization"] == f"Bearer {TOKEN}" for c in layer.calls)
    assert TOKEN not in repr(beat.__dict__)


def test_the_token_is_read_by_name_from_the_variable_or_its_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    source = dict
    assert Heartbeat(URL, token_env="PUSH", env={"PUSH": TOKEN}, source=source)._token.reveal() == TOKEN
    assert Heartbeat(URL, token_env="PUSH", env={"PUSH_FILE": str(path)}, source=source)._token.reveal() == TOKEN
    with pytest.raises(ValueError, match="neither PUSH nor PUSH_FILE is set"):
        Heartbeat(URL, token_env="PUSH", env={}, source=source)
    with pytest.raises(ValueError, match="not both"):
        Heartbeat(URL, TOKEN, token_env="PUSH", source=source)
    with pytest.raises(ValueError, match="url: 'layer' is not an http"):
        Heartbeat("layer", source=source)
    with pytest.raises(ValueError, match="interval"):
        Heartbeat(URL, source=source, interval=0)


def test_a_failing_source_is_counted_and_the_thread_lives_on():
    clock, layer, calls = FakeClock(), FakeLayer(), []

    def source():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("status: 'sleepy' is not one of healthy, degraded, error")
        return {"agent": "x"}

    with Heartbeat(URL, source=source, session=layer, clock=clock) as beat:
        assert clock.idle(beat, 1) == 15
        assert beat.last_error.startswith("source failed: ValueError: status") and not layer.calls
        clock.advance(15)
        clock.idle(beat, 2)
        assert len(layer.calls) == 1 and "Authorization" not in layer.calls[0]["headers"]


class ExporterSession:
    """A requests-shaped session that hands each push to the real exporter app."""

    def __init__(self, app):
        self.client = app.test_client()

    def post(self, url, data, headers, timeout):
        answer = self.client.post(url.removeprefix(URL), data=data, headers=headers)
        return reply(answer.status_code, answer.get_json(), dict(answer.headers))


def test_the_exporter_accepts_what_the_heartbeat_pushes_one_signal_or_a_fleet_batch():
    clock = FakeClock()
    app = create_app({"SETTINGS": Settings.from_env({}), "EXPORTER_TOKEN": Secret("AUTOREM_EXPORTER_TOKEN", TOKEN)})
    reports = {name: AgentReport(extensions={"shard": i}) for i, name in enumerate(("CMO", "CFO"))}

    def fleet():
        return [build_signal(name, "Revenue", r, time.time()) for name, r in reports.items()]

    with Heartbeat(URL, TOKEN, source=fleet, session=ExporterSession(app), clock=clock) as beat:
        clock.idle(beat, 1)
    assert (beat.pushed, beat.failed) == (1, 0)
    exposition = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'agent="CMO"' in exposition and 'agent="CFO"' in exposition


def test_an_unexpected_error_of_the_session_is_a_failed_push_and_the_beats_go_on(report):
    clock, layer = FakeClock(), FakeLayer(RuntimeError("the session broke"), reply(200))
    with make(report, layer, clock) as beat:
        clock.idle(beat, 1)
        assert beat.failed == 1 and beat.last_error == "push failed: RuntimeError" and beat.running
        clock.advance(5)
        clock.idle(beat, 2)
        assert beat.pushed == 1 and beat.running


def test_a_token_that_cannot_travel_in_a_header_is_refused_at_once():
    with pytest.raises(ValueError, match="visible ASCII characters only"):
        Heartbeat(URL, "two words", source=lambda: {"agent": "x"})
