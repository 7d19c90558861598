"""The agent library's action server: the contract's checks in its order, idempotent replay, mounting in Flask."""
import hmac
import threading

import pytest
from flask import Flask
from werkzeug.test import Client

from autonomy.agent import ActionRequest, ActionResult, ActionServer
from autonomy.agent.idempotency import IdempotencyTable, fingerprint
from autonomy.primitives import PRIMITIVES
from devstack.polling import wait_until

TOKEN = "action-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def until(predicate, deadline_s=60.0, what="the condition"):
    """Poll PREDICATE until it holds (a generous deadline: a loaded machine is slow, never wrong)."""
    wait_until(predicate, deadline_s, what, interval=0.002)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def server(clock):
    actions = ActionServer(token=TOKEN, agents={"Writer", "Editor"}, clock=clock, idempotency_size=3)
    actions.calls = []

    @actions.handler("restartAgent")
    def restart(request: ActionRequest):
        actions.calls.append(request)
        return {"restarted": request.agent, "mode": request.body.get("mode", "soft"), "n": len(actions.calls)}

    @actions.handler("throttleAgent")
    def throttle(request):
        actions.calls.append(request)
        return 202, {"accepted": True}

    return actions


def call(server, primitive="restartAgent", body=None, agent="Writer", key=None, headers=None, **options):
    sent = {**AUTH, **({"Idempotency-Key": key} if key else {}), **(headers or {})}
    options.setdefault("method", "POST")
    if "data" not in options:
        options["json"] = {} if body is None else body
    return Client(server).open(f"/agents/{agent}/actions/{primitive}", headers=sent, **options)


def test_a_registered_primitive_is_answered_by_its_handler(server):
    answer = call(server, body={"mode": "hard", "agent": "Writer", "x-trace": "t1"}, key="inc-1:1:0")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    assert answer.get_json() == {"restarted": "Writer", "mode": "hard", "n": 1}
    [request] = server.calls
    assert (request.agent, request.primitive, request.idempotency_key) == ("Writer", "restartAgent", "inc-1:1:0")
    assert "Idempotent-Replayed" not in answer.headers


def test_a_202_from_a_handler_is_passed_through(server):
    answer = call(server, "throttleAgent", {"maxConcurrent": 1, "minutes": 5})
    assert answer.status_code == 202 and answer.get_json() == {"accepted": True}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": TOKEN}])
def test_a_missing_or_wrong_token_is_401_with_www_authenticate(server, headers):
    answer = Client(server).post("/agents/Writer/actions/restartAgent", json={}, headers=headers)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    assert answer.get_json() == {"error": "missing or wrong bearer token"} and not server.calls


def test_the_token_is_compared_in_constant_time(server, monkeypatch):
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    assert call(server).status_code == 200
    assert compared == [(TOKEN.encode(), TOKEN.encode())]


def test_no_token_refuses_to_construct_unless_insecure_is_explicit():
    with pytest.raises(ValueError, match="no token .*insecure_no_auth=True"):
        ActionServer(agents="Writer")
    open_server = ActionServer(agents="Writer", insecure_no_auth=True)
    open_server.handler("refreshCache")(lambda request: {"refreshed": True})
    assert Client(open_server).post("/agents/Writer/actions/refreshCache", json={}).status_code == 200


def test_a_schema_error_is_422_naming_the_field(server):
    answer = call(server, "throttleAgent", {"maxConcurrent": -1, "minutes": 5})
    assert answer.status_code == 422
    assert answer.get_json()["field"] == "maxConcurrent"
    assert answer.get_json()["error"].startswith("maxConcurrent: ")
    missing = call(server, "throttleAgent", {"minutes": 5}).get_json()
    assert missing == {"error": "maxConcurrent: is required", "field": "maxConcurrent"}
    unknown = call(server, body={"mode": "soft", "colour": "red"}).get_json()
    assert unknown["field"] == "colour" and "unexpected property" in unknown["error"]
    assert not server.calls


@pytest.mark.parametrize("data, says", [(b"[1, 2]", "expected a JSON object, got list"), (b"", "empty body"),
                                         (b"{nope", "not valid JSON"), (b'"hi"', "expected a JSON object")])
def test_a_body_that_is_not_a_json_object_is_422(server, data, says):
    answer = call(server, data=data, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.get_json()["field"] == "(body)"
    assert says in answer.get_json()["error"] and not server.calls


def test_a_malformed_idempotency_key_is_422(server):
    answer = call(server, key="has spaces/and slashes")
    assert answer.status_code == 422 and answer.get_json()["field"] == "Idempotency-Key" and not server.calls


def test_a_replay_returns_the_first_answer_marked_and_calls_the_handler_once(server):
    first = call(server, body={"mode": "hard"}, key="inc-1:1:0")
    again = call(server, body={"mode": "hard"}, key="inc-1:1:0")
    assert again.status_code == first.status_code == 200 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true" and len(server.calls) == 1
    # The same key for another primitive or agent is another request.
    assert call(server, agent="Editor", key="inc-1:1:0").get_json()["n"] == 2
    # A 202 is remembered and replayed too.
    call(server, "throttleAgent", {"maxConcurrent": 1, "minutes": 5}, key="k202")
    replayed = call(server, "throttleAgent", {"maxConcurrent": 1, "minutes": 5}, key="k202")
    assert replayed.status_code == 202 and replayed.headers["Idempotent-Replayed"] == "true"


def test_the_same_key_with_another_body_is_422(server):
    call(server, body={"mode": "hard"}, key="inc-2:1:0")
    answer = call(server, body={"mode": "soft"}, key="inc-2:1:0")
    assert answer.status_code == 422
    assert answer.get_json()["error"] == "Idempotency-Key inc-2:1:0 was used for a different request"
    assert len(server.calls) == 1


def test_without_a_key_nothing_is_deduplicated(server):
    call(server)
    call(server)
    assert len(server.calls) == 2


def test_an_unregistered_primitive_is_501_with_the_exact_text(server):
    answer = call(server, "refreshCache")
    assert answer.status_code == 501
    assert answer.get_json() == {"error": "agent does not implement refreshCache", "primitive": "refreshCache"}


def test_an_unknown_agent_or_primitive_or_path_is_404(server):
    assert call(server, agent="Stranger").status_code == 404
    assert call(server, agent="Stranger").get_json()["agent"] == "Stranger"
    assert call(server, agent="bad name!").status_code == 404
    unknown = call(server, "launchRockets")
    assert unknown.status_code == 404 and unknown.get_json()["primitive"] == "launchRockets"
    assert Client(server).post("/elsewhere", headers=AUTH).status_code == 404


def test_a_callable_decides_which_agents_are_served():
    actions = ActionServer(token=TOKEN, agents=lambda name: name.startswith("w-"))
    actions.handler("refreshCache")(lambda request: {})
    assert call(actions, "refreshCache", agent="w-1").status_code == 200
    assert call(actions, "refreshCache", agent="x-1").status_code == 404
    with pytest.raises(ValueError, match="agents: 'not a name!' is not an agent name"):
        ActionServer(token=TOKEN, agents={"ok", "not a name!"})


def test_only_post_is_allowed(server):
    answer = Client(server).get("/agents/Writer/actions/restartAgent", headers=AUTH)
    assert answer.status_code == 405 and answer.headers["Allow"] == "POST" and "error" in answer.get_json()


def test_a_body_over_the_limit_is_413_unread(server):
    answer = call(server, data=b"{" + b" " * (64 * 1024) + b"}", headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "over the limit" in answer.get_json()["error"] and not server.calls


def test_a_chunked_body_over_the_limit_is_413_too(server):
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path="/agents/Writer/actions/restartAgent", method="POST", headers=AUTH,
                             data=b"{" + b" " * (64 * 1024) + b"}").get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True  # as a server does for Transfer-Encoding: chunked
    assert server.answer(environ).status == 413 and not server.calls


def test_a_handler_exception_is_500_and_not_remembered(clock):
    actions = ActionServer(token=TOKEN, agents="Writer", clock=clock)
    runs = []

    @actions.handler("refreshCache")
    def flaky(request):
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("cache server said no")
        return {"refreshed": True}

    first = call(actions, "refreshCache", key="inc-3:1:0")
    assert first.status_code == 500 and first.get_json() == {"error": "handler failed: RuntimeError"}
    retry = call(actions, "refreshCache", key="inc-3:1:0")
    assert retry.status_code == 200 and "Idempotent-Replayed" not in retry.headers and len(runs) == 2
    assert call(actions, "refreshCache", key="inc-3:1:0").headers["Idempotent-Replayed"] == "true"


def test_a_handler_answering_nonsense_is_500(server):
    server.handler("refreshCache")(lambda request: ["not", "a", "dict"])
    assert call(server, "refreshCache").get_json()["error"].startswith("handler failed: it answered list")


def test_an_action_result_carries_its_headers(server):
    server.handler("validateInputs")(lambda request: ActionResult(409, {"error": "busy migrating"},
                                                                  {"Retry-After": "30"}))
    answer = call(server, "validateInputs")
    assert answer.status_code == 409 and answer.headers["Retry-After"] == "30"


def test_a_concurrent_duplicate_waits_for_the_first_answer(clock):
    actions = ActionServer(token=TOKEN, agents="Writer", clock=clock)
    release, entered, runs = threading.Event(), threading.Event(), []

    @actions.handler("schemaMigrateIfNeeded")
    def migrate(request):
        runs.append(1)
        entered.set()
        release.wait(10)
        return {"migrated": 1}

    answers = {}
    first = threading.Thread(target=lambda: answers.update(first=call(actions, "schemaMigrateIfNeeded", key="m")))
    first.start()
    until(entered.is_set, what="the first request in its handler")
    second = threading.Thread(target=lambda: answers.update(second=call(actions, "schemaMigrateIfNeeded", key="m")))
    second.start()
    until(lambda: second.is_alive(), what="the duplicate")
    release.set()
    first.join(10)
    second.join(10)
    assert answers["first"].get_json() == answers["second"].get_json() == {"migrated": 1} and len(runs) == 1
    assert answers["second"].headers["Idempotent-Replayed"] == "true"


def test_the_table_holds_at_most_its_size_least_recently_used_out_and_answers_expire(server, clock):
    for n in range(5):
        call(server, key=f"k{n}")
    assert len(server.table) == 3
    assert call(server, key="k4").headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in call(server, key="k0").headers  # evicted: run again
    assert len(server.calls) == 6
    clock.now += 86_400
    assert "Idempotent-Replayed" not in call(server, key="k4").headers  # expired


def test_the_table_refuses_a_bad_size():
    with pytest.raises(ValueError, match="idempotency_size"):
        IdempotencyTable(0)
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})


def test_mounting_in_flask_serves_the_actions_and_keeps_the_apps_own_routes(server):
    app = Flask("agent")
    app.add_url_rule("/health", "health", lambda: {"ok": True})
    server.mount(app)
    client = app.test_client()
    assert client.get("/health").get_json() == {"ok": True}
    answer = client.post("/agents/Writer/actions/restartAgent", json={"mode": "soft"}, headers=AUTH)
    assert answer.status_code == 200 and answer.get_json()["restarted"] == "Writer"
    assert client.post("/agents/Writer/actions/refreshCache", json={}, headers=AUTH).status_code == 501


def test_mounting_under_a_prefix_with_werkzeugs_dispatcher(server):
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = Flask("agent")
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/agents": server})
    answer = app.test_client().post("/agents/Writer/actions/restartAgent", json={}, headers=AUTH)
    assert answer.status_code == 200


def test_handlers_register_only_the_packs_primitives_once(server):
    with pytest.raises(ValueError, match="not one of the pack's primitives"):
        server.handler("launchRockets")
    with pytest.raises(ValueError, match="already has a handler"):
        server.handler("restartAgent")(lambda request: {})
    assert len(PRIMITIVES) == 12


def test_a_key_with_a_trailing_newline_is_refused(server):
    answer = call(server, environ_overrides={"HTTP_IDEMPOTENCY_KEY": "inc-1:1:0\n"})  # past werkzeug's own check
    assert answer.status_code == 422 and answer.get_json()["field"] == "Idempotency-Key"
