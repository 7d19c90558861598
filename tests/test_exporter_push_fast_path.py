"""The push's hot path agrees with the slow one: the signal hand checks with jsonschema, the exporter's WSGI
fast path with its Flask view, and the lines rendered once per change with lines rendered afresh."""
import copy
import dataclasses
import json
import time
from datetime import datetime, timezone
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autonomy.settings import Secret, Settings
from autonomy.signal_contract import (
    Signal,
    SignalError,
    checked_signal,
    document_errors,
    load_signals,
    validate_signals,
)
from bench.exporter_scrape import fleet
from exporter.agent_metrics import AGENT_METRICS
from exporter.app import create_app
from exporter.signal_store import SignalStore
from tests.signal_cases import MALFORMED, example
from tests.test_exporter_exposition import collector_text
from tests.test_hostile_input import FUZZ, dumps, signal_docs, valid_signals

TOKEN = "fast-path-token"
NOW = datetime.now(timezone.utc).isoformat()


def reference_load(body, now=None, max_skew=None) -> list[Signal]:
    """load_signals as it was before the hand checks: they doubt every document, so jsonschema decides each."""
    with mock.patch("autonomy.signal_contract.checked_signal", lambda doc: None):
        return load_signals(body, now, max_skew)


def outcome(load, body, *args):
    try:
        return [(s, s.document) for s in load(body, *args)]
    except SignalError as exc:
        return exc.errors


def with_(path: str, value=None, delete=False) -> dict:
    doc = copy.deepcopy(example())
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if delete:
        del node[last]
    else:
        node[last] = value
    return doc


# Documents at the edges of the schema, valid and not, beside the MALFORMED cases.
EDGES = [
    example(), *fleet(12), with_("context", {}), with_("checks", {}), with_("context", delete=True),
    with_("domain", None), with_("domain", "Marketing"), with_("domain", "9x"), with_("domain", ""),
    with_("agent", "A" * 64), with_("agent", "A" * 65), with_("agent", "autonomy-layer"), with_("agent", "CMO\n"),
    with_("agent", "ÇMO"), with_("status", None), with_("status", ["error"]), with_("lastReport", "x" * 4096),
    with_("lastReport", "x" * 4097), with_("lastReport", None), with_("ts", "2025-08-18T15:02:11.1234+02:00"),
    with_("ts", "2025-08-18T15:02:11z"), with_("ts", "2025-08-18 15:02:11Z"), with_("ts", "x" * 65),
    with_("ts", "2025-08-18T15:02:11+00:00" + " " * 40), with_("ts", 1755529331),
    with_("metrics.successRate", 0), with_("metrics.successRate", 1), with_("metrics.successRate", 1.0000001),
    with_("metrics.successRate", -0.0), with_("metrics.alignment", False), with_("metrics.alignment", None),
    with_("metrics.backlogAgeMinutes", 10 ** 307), with_("metrics.backlogAgeMinutes", 1.7976931348623157e308),
    with_("metrics.costBurnRatePerHour", 0), with_("metrics.extra", 1), with_("metrics", []),
    with_("context.queueDepth", 2.0), with_("context.queueDepth", True), with_("context.queueDepth", 0),
    with_("context.openConflicts", 10 ** 307), with_("context.openConflicts", -1),
    with_("context.errorCode", "OTHER"), with_("context.errorCode", "timeout"), with_("context.errorCode", None),
    with_("context.directiveId", "1" + "x" * 127), with_("context.directiveId", "x" * 129),
    with_("context.conflictId", "C:1"), with_("context.conflictId", ":C"),
    with_("context.dependencies", [f"a{i}" for i in range(64)]),
    with_("context.dependencies", [f"a{i}" for i in range(65)]),
    with_("context.dependencies", ["a", "a"]), with_("context.dependencies", []), with_("context.dependencies", [1]),
    with_("context.dependencies", ("a",)), with_("checks.configHealthy", 1), with_("checks.configHealthy", None),
    with_("checks.other", True), with_("extra", None), [], "x", None, 3, [example(), example()],
]


@pytest.mark.parametrize("doc", EDGES, ids=range(len(EDGES)))
def test_the_hand_checks_accept_only_what_the_schema_accepts_and_build_the_same_signal(doc):
    signal = checked_signal(doc)
    if signal is not None:
        assert document_errors(doc) == []
        assert signal == Signal.from_document(doc) and signal.__dict__ == Signal.from_document(doc).__dict__


def test_the_hand_checks_take_the_ordinary_signals_themselves():
    for doc in [example(), *fleet(12), with_("context", delete=True), with_("metrics.successRate", 1)]:
        assert checked_signal(doc) is not None, doc


def test_the_hand_checks_agree_with_the_schema_on_1000_generated_documents():
    seen = {"taken": 0, "doubted": 0, "refused": 0}

    @FUZZ
    @given(doc=st.one_of(signal_docs, valid_signals))
    def one(doc):
        doc = json.loads(dumps(doc))
        signal, errors = checked_signal(doc), document_errors(doc)
        if signal is not None:
            assert errors == [], (errors, doc)
            assert signal.__dict__ == Signal.from_document(doc).__dict__
        seen["taken" if signal else "refused" if errors else "doubted"] += 1

    one()
    assert seen["taken"] > 200 and seen["refused"] > 200, seen


BODIES = [c[1] for c in MALFORMED] + [dumps(d) for d in EDGES] + [
    dumps([example(), with_("status", "sick"), with_("agent", "CRO")]),
    dumps([with_("agent", f"a{i}") for i in range(5)]),
    dumps(dict(example(), ts="2999-01-01T00:00:00Z")), dumps([example(), dict(example(), ts="2999-01-01T00:00:00Z")]),
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_load_signals_answers_exactly_as_jsonschema_alone_did(body):
    now = time.time()
    assert outcome(load_signals, body) == outcome(reference_load, body)
    assert outcome(load_signals, body, now, 300) == outcome(reference_load, body, now, 300)


def test_validate_signals_doubting_one_item_of_a_batch_lets_jsonschema_judge_them_all():
    batch = [example(), with_("context.queueDepth", 2.0), with_("agent", "CRO")]  # 2.0 is an integer to the schema
    assert [type(s.queue_depth) for s in validate_signals(batch)] == [int, float, int]
    with pytest.raises(SignalError) as caught:
        validate_signals([with_("context.queueDepth", 2.0), with_("status", "sick")])
    assert caught.value.errors == ("[1].status: 'sick' is not one of healthy, degraded, error",)


# ------------------------------------------------------------------------------------ the exporter's fast path


def exporters(**settings):
    """The exporter as served, and one whose every push goes through the Flask view (the fast path removed)."""
    config = {"SETTINGS": Settings.from_env(settings), "EXPORTER_TOKEN": Secret("AUTOREM_EXPORTER_TOKEN", TOKEN)}
    fast, slow = create_app(dict(config)), create_app(dict(config))
    slow.wsgi_app = slow.wsgi_app.wsgi_app
    return fast, slow


def answer(app, body, headers=None, content_type="application/json", **options):
    reply = app.test_client().open("/api/v1/signals", method=options.pop("method", "POST"), data=body, content_type=content_type,
                                   headers={"Authorization": f"Bearer {TOKEN}"} if headers is None else headers,
                                   **options)
    return reply.status_code, sorted(reply.headers.items()), reply.get_data()


def exposition(app) -> str:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return "\n".join(line for line in text.splitlines() if "_created" not in line)


def doc(agent="CMO", **changes) -> dict:
    return {**example(), "agent": agent, "ts": NOW, **changes}


REQUESTS = [
    (dumps(doc()), {}), (dumps([doc(), doc("CRO"), doc("COO")]), {}), (dumps(doc(ts="2025-01-01T00:00:00Z")), {}),
    (dumps(doc(status="sick")), {}), (dumps([doc(), doc(status="sick")]), {}), (b"{", {}), (b"", {}), (b"[]", {}),
    (dumps(doc(ts="2999-01-01T00:00:00Z")), {}), (dumps(doc(agent="fleet")), {}), (dumps(doc()), {"headers": {}}),
    (dumps(doc()), {"headers": {"Authorization": "Bearer wrong"}}), (dumps(doc()), {"content_type": "text/plain"}),
    (dumps(doc()), {"content_type": "application/json; charset=utf-8"}), (dumps(doc("C4")), {}),
    (dumps(doc("C5")), {}), (dumps([doc("C5"), doc("C6")]), {}), (b"[" + b" " * (1024 * 1024) + b"]", {}),
    (dumps(doc()), {"environ_overrides": {"CONTENT_LENGTH": "99999"}}),  # the body cut short
    (dumps(doc()), {"environ_overrides": {"CONTENT_LENGTH": "+3"}}), (dumps(doc()), {"method": "PUT"}),
]


def test_the_fast_path_answers_every_request_as_the_flask_view_does():
    fast, slow = exporters(AUTOREM_MAX_AGENTS="5")
    for body, options in REQUESTS:  # in order: the last ones meet the agent limit
        assert answer(fast, body, **options) == answer(slow, body, **options), body[:200]
        assert exposition(fast) == exposition(slow)


def test_a_valid_push_never_reaches_flask(monkeypatch):
    fast, _ = exporters()
    monkeypatch.setattr(fast.wsgi_app, "wsgi_app", lambda *_: pytest.fail("reached Flask"))
    assert answer(fast, dumps([doc(), doc("CRO")]))[0] == 200
    assert [e.signal.agent for e in fast.extensions["autonomy_exporter"].store.snapshot()] == ["CMO", "CRO"]


def test_what_the_fast_path_doubts_goes_to_flask_with_the_body_intact():
    fast, _ = exporters()
    status, _, body = answer(fast, dumps(doc(context={"queueDepth": 2.0})))  # valid, but for jsonschema to say
    assert (status, json.loads(body)) == (200, {"stored": 1, "ignored_older": 0})


# ------------------------------------------------------------------------------------ rendered once per change


def test_every_metric_reads_only_its_declared_field():
    signal = load_signals(json.dumps(example()))[0]
    other = load_signals(json.dumps(dict(example(), agent="CRO", status="healthy", domain="Revenue", ts=NOW,
                                         metrics={"successRate": 0.5, "alignment": 0.4, "backlogAgeMinutes": 9,
                                                  "costBurnRatePerHour": 2},
                                         context={"errorCode": "OTHER", "directiveId": "D-9", "conflictId": "C-1",
                                                  "queueDepth": 7, "openConflicts": 2, "dependencies": ["x"]},
                                         checks={"lastTaskSucceeded": True, "inputsValid": False,
                                                 "configHealthy": True})))[0]
    for metric in AGENT_METRICS:
        for f in dataclasses.fields(Signal):
            if f.name not in (metric.reads, "agent", "document"):
                changed = dataclasses.replace(signal, **{f.name: getattr(other, f.name)})
                assert list(metric.samples(changed)) == list(metric.samples(signal)), (metric.name, f.name)


FIELDS = {"success_ratio": [0.0, -0.0, 0.5, 1.0], "queue_depth": [None, 0, 2, 0.0, -0.0, 2.0],
          "error_code": [None, "TIMEOUT", "OTHER"], "last_task_succeeded": [None, True, False],
          "timestamp": [0.0, -0.0, 1.0, 1.7e9], "domain": [None, "", "Marketing"],
          "dependencies": [(), ("a",), ("a", "b")], "status": ["healthy", "degraded", "error"]}
changes = st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in FIELDS.items()})


@FUZZ
@given(updates=st.lists(st.tuples(st.sampled_from(["CMO", "CRO"]), changes), max_size=8))
def test_lines_kept_from_the_held_signal_are_the_lines_rendered_afresh(updates):
    base = load_signals(json.dumps(example()))[0]
    store = SignalStore()
    for agent, fields in updates:
        store.put(dataclasses.replace(base, agent=agent, **fields))
    fresh = SignalStore()
    fresh.put_many([e.signal for e in store.snapshot()])
    assert store.render() == fresh.render() == collector_text(store)
