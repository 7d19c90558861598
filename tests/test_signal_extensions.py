"""A signal's `extensions` (issue 16, deliverable 7): the contract's limits and errors, the hand checks agreeing
with the schema, the exporter keeping them with the latest signal but never exposing them, and its read endpoint."""
import copy
import json

import pytest

from autonomy.signal_contract import SignalError, checked_signal, document_errors, load_signals, schema
from autonomy.signal_extensions import KEY, MAX_BYTES, MAX_KEYS, extensions_of, serialized_size
from exporter import AgentSignalCollector, SignalStore
from tests.signal_cases import example
from tests.test_exporter_exposition import EXPECTED_CMO, FLEET, collector_text

EXTENSIONS = {"runId": "r-2041", "model.name": "planner-v3", "tokens_used": 1832, "shadow": False,
              "notes": {"lane": "b", "retries": [1, 2]}, "ratio": 0.25, "nothing": None}


def with_extensions(value, doc=None) -> dict:
    return {**copy.deepcopy(doc or example()), "extensions": value}


def errors_of(doc) -> list[str]:
    with pytest.raises(SignalError) as caught:
        load_signals(json.dumps(doc))
    return list(caught.value.errors)


# ------------------------------------------------------------------ the contract

def test_a_signal_with_extensions_is_accepted_and_keeps_them():
    [signal] = load_signals(json.dumps(with_extensions(EXTENSIONS)))
    assert extensions_of(signal) == EXTENSIONS
    assert checked_signal(with_extensions(EXTENSIONS)) is not None  # the hot path takes it too


def test_a_signal_without_extensions_has_none():
    [signal] = load_signals(json.dumps(example()))
    assert extensions_of(signal) == {}
    assert extensions_of(None) == {}


def test_an_empty_extensions_object_is_accepted():
    [signal] = load_signals(json.dumps(with_extensions({})))
    assert extensions_of(signal) == {}


def test_a_typo_at_the_top_level_is_still_refused_naming_it():
    doc = with_extensions({"runId": "r-1"})
    doc["extension"] = {"runId": "r-1"}
    assert errors_of(doc) == ["extension: unexpected property"]
    assert errors_of({**example(), "runId": "r-1"}) == ["runId: unexpected property"]


@pytest.mark.parametrize("value,expected", [
    ({"foo bar": 1}, "extensions.foo bar: not a valid key"),
    ({"1st": 1}, "extensions.1st: not a valid key"),
    ({"": 1}, "extensions.: not a valid key"),
    ({"k" * 65: 1}, f"extensions.{'k' * 65}: not a valid key"),
    ({"ok\n": 1}, "extensions.ok\n: not a valid key"),
    ({f"k{i}": i for i in range(MAX_KEYS + 1)}, f"extensions: {MAX_KEYS + 1} keys, more than {MAX_KEYS}"),
    ({"blob": "x" * MAX_BYTES}, f"extensions: {MAX_BYTES + 11} bytes as compact JSON, more than {MAX_BYTES}"),
    ("r-1", "extensions: 'r-1' is not of type 'object'"),
    ([{"runId": "r-1"}], "extensions: [{'runId': 'r-1'}] is not of type 'object'"),
    (None, "extensions: None is not of type 'object'"),
], ids=["space", "digit-first", "empty-key", "key-too-long", "trailing-newline", "too-many-keys", "too-big",
        "string", "list", "null"])
def test_extensions_beyond_the_limits_are_refused_naming_the_field(value, expected):
    doc = with_extensions(value)
    errors = errors_of(doc)
    assert any(line.startswith(expected) for line in errors), errors
    assert checked_signal(doc) is None


def test_a_batch_names_the_item_whose_extensions_are_wrong():
    errors = errors_of([with_extensions({"ok": 1}), with_extensions({"bad key": 1})])
    assert [e.split(":")[0] for e in errors] == ["[1].extensions.bad key"]
    errors = errors_of([example(), with_extensions({"blob": "x" * MAX_BYTES})])
    assert errors[0].startswith("[1].extensions: ")


def test_the_size_limit_counts_compact_utf8_json():
    fits = {"note": "é" * ((MAX_BYTES - len('{"note":""}')) // 2)}  # two bytes each in UTF-8
    assert serialized_size(fits) <= MAX_BYTES
    load_signals(json.dumps(with_extensions(fits)))
    over = {"note": fits["note"] + "é"}
    assert serialized_size(over) > MAX_BYTES
    assert errors_of(with_extensions(over))[0].startswith("extensions: ")


def test_the_schema_states_the_limits_the_code_enforces():
    published = schema()["properties"]["extensions"]
    assert published["maxProperties"] == MAX_KEYS and published["type"] == "object"
    name = schema()["$defs"][published["propertyNames"]["$ref"].rsplit("/", 1)[1]]["pattern"]
    assert name == f"^{KEY.pattern}(?!\\n)$"
    assert str(MAX_BYTES) in published["description"] and str(MAX_KEYS) in published["description"]


EDGES = [{}, EXTENSIONS, {"a": {"b": {"c": [1, [2, [3]]]}}}, {"k" * 64: 1}, {f"k{i}": i for i in range(MAX_KEYS)},
         {f"k{i}": i for i in range(MAX_KEYS + 1)}, {"blob": "x" * (MAX_BYTES - 11)}, {"blob": "x" * (MAX_BYTES - 10)},
         {"bad key": 1}, {"a\n": 1}, {"x": float("1e308")}, "s", 3, [], None, True,
         {"deep": json.loads("[" * 70 + "]" * 70)}]


@pytest.mark.parametrize("value", EDGES, ids=range(len(EDGES)))
def test_the_hand_checks_of_extensions_agree_with_the_schema(value):
    doc = json.loads(json.dumps(with_extensions(value)))
    signal, errors = checked_signal(doc), document_errors(doc)
    assert (signal is None) == bool(errors), (errors, value)


# ------------------------------------------------------------------ the exporter

def test_extensions_add_no_series_and_no_label_to_the_exposition():
    plain, extended = SignalStore(), SignalStore()
    plain.put_many(load_signals(json.dumps(FLEET[1])))
    extended.put_many(load_signals(json.dumps(with_extensions(EXTENSIONS, FLEET[1]))))
    assert extended.render() == plain.render() == EXPECTED_CMO
    assert collector_text(extended) == collector_text(plain)
    assert extensions_of(extended.latest("CMO")) == EXTENSIONS  # stored with the latest signal all the same


def test_a_pushed_signal_keeps_its_extensions_on_both_of_the_exporters_paths(exporter_app, client, auth):
    store = exporter_app.extensions["autonomy_exporter"].store
    body = json.dumps(with_extensions(EXTENSIONS)).encode()
    assert client.post("/api/v1/signals", data=body, headers=auth, content_type="application/json").status_code == 200
    assert extensions_of(store.latest("CMO")) == EXTENSIONS  # the fast path (FastPush)
    other = json.dumps(with_extensions({"runId": "r-2"}, dict(example(), agent="CRO"))).encode()
    reply = client.post("/api/v1/signals", data=other, headers=auth, content_type="application/json; charset=utf-8")
    assert reply.status_code == 200  # Flask's view
    assert extensions_of(store.latest("CRO")) == {"runId": "r-2"}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "runId" not in metrics and "r-2041" not in metrics and "planner" not in metrics


def test_a_pushed_signal_with_bad_extensions_is_a_422_naming_the_field(exporter_app, client, auth):
    body = json.dumps(with_extensions({"bad key": 1})).encode()
    reply = client.post("/api/v1/signals", data=body, headers=auth, content_type="application/json")
    assert reply.status_code == 422
    assert reply.get_json()["errors"][0].startswith("extensions.bad key: ")
    assert exporter_app.extensions["autonomy_exporter"].store.latest("CMO") is None


def read(client, auth, *agents):
    query = "&".join(f"agent={a}" for a in agents)
    return client.get(f"/api/v1/signals/extensions?{query}", headers=auth)


def test_the_exporter_serves_the_latest_signals_extensions_behind_its_token(client, auth):
    for doc in (with_extensions(EXTENSIONS), dict(example(), agent="CRO")):
        client.post("/api/v1/signals", data=json.dumps(doc), headers=auth, content_type="application/json")
    reply = read(client, auth, "CMO", "CRO", "Ghost", "CMO")
    assert reply.status_code == 200
    assert reply.get_json() == {"extensions": {"CMO": EXTENSIONS, "CRO": {}}, "unknown": ["Ghost"]}
    assert read(client, {}, "CMO").status_code == 401
    assert read(client, {"Authorization": "Bearer wrong"}, "CMO").status_code == 401


@pytest.mark.parametrize("agents,expected", [
    ((), "agent: name 1 to 500 agents"),
    (tuple(f"a{i}" for i in range(501)), "agent: name 1 to 500 agents"),
    (("CMO", "..%2FCEO"), "agent: '../CEO' is not an agent name"),
])
def test_a_bad_extensions_read_is_a_400_naming_the_parameter(client, auth, agents, expected):
    reply = read(client, auth, *agents)
    assert reply.status_code == 400
    assert reply.get_json()["error"].startswith(expected)


def test_the_embedded_collector_ignores_extensions_too():
    store = SignalStore()
    store.put_many(load_signals(json.dumps([with_extensions(EXTENSIONS, doc) for doc in FLEET])))
    plain = SignalStore()
    plain.put_many(load_signals(json.dumps(FLEET)))
    assert collector_text(store) == collector_text(plain) == plain.render() == store.render()
    assert AgentSignalCollector(store).describe()  # the families are the agent metrics' alone
