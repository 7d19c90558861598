"""Thin clients for the upstreams the receiver reads: Prometheus's and Alertmanager's HTTP APIs (and Grafana's
Alertmanager-compatible API for Grafana's own alerts)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Mapping, TypeVar

import requests

from autonomy.settings import Secret

from .upstream_deadline import (
    DeadlinePassed,
    UpstreamError,
    UpstreamSlow,
    client_timeout,
    patience,
    request_timeout,
    time_left,
)

PROBE_LABEL = "autonomy_probe"  # marks the alerts the receiver posts only to ask Alertmanager for its verdict
PROBE_LIFETIME = timedelta(minutes=5)
# Grafana serves the Alertmanager v2 API for its own (Grafana-managed) alerts and silences under this path.
GRAFANA_ALERTMANAGER_PATH = "/api/alertmanager/grafana"
T = TypeVar("T")


def prometheus_problem(exc: UpstreamError) -> str:
    """What went wrong with Prometheus, in words: a malformed answer says so, anything else is unreachable."""
    text = str(exc)
    return text if text.startswith("prometheus") else f"prometheus unreachable: {text}"


def _get_json(session: requests.Session, url: str, params: Mapping | None = None) -> object:
    timeout = request_timeout()
    try:
        reply = session.get(url, params=params, timeout=timeout)
    except requests.RequestException as exc:
        if isinstance(exc, requests.Timeout) and timeout < client_timeout():
            # Cut short by the caller's deadline: not waited for any longer, which is not "unreachable".
            raise DeadlinePassed(f"{url}: the deadline passed before it answered") from None
        raise (UpstreamSlow if isinstance(exc, requests.Timeout) else UpstreamError)(
            f"{url}: {type(exc).__name__}") from None
    if reply.status_code != 200:
        raise UpstreamError(f"{url}: HTTP {reply.status_code}")
    try:
        return reply.json()
    except ValueError:
        raise UpstreamError(f"{url}: not JSON") from None


def get_json(session: requests.Session, url: str, params: Mapping | None = None) -> object:
    """GET URL's JSON answer within this thread's deadline (the receiver's other upstreams, agent_extensions.py)."""
    return _get_json(session, url, params)


def _labels_ok(labels: object) -> bool:
    return isinstance(labels, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())


def _sample_ok(sample: object) -> bool:
    """[unix time, "value"] with a number for the time and a float-parsable string (NaN and Inf included)."""
    if not isinstance(sample, (list, tuple)) or len(sample) != 2:
        return False
    moment, value = sample
    if isinstance(moment, bool) or not isinstance(moment, (int, float)) or not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def query_result(body: object) -> list[dict]:
    """The rows of a /api/v1/query answer, each checked for shape and value types; UpstreamError otherwise.

    A vector or a matrix gives its rows; a scalar is one row without labels.
    """
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise UpstreamError(f"prometheus query failed: {str(error)[:200] if error else 'not a success answer'}")
    data = body.get("data")
    if not isinstance(data, dict) or "result" not in data:
        raise UpstreamError("prometheus answered without data")
    kind, result = data.get("resultType"), data["result"]
    if kind == "scalar":
        if not _sample_ok(result):
            raise UpstreamError("prometheus answered a scalar that is not a [time, number] pair")
        return [{"metric": {}, "value": result}]
    if kind not in ("vector", "matrix") or not isinstance(result, list):
        raise UpstreamError(f"prometheus answered a result of type {str(kind)[:40]!r}, not a vector or matrix")
    for row in result:
        if not isinstance(row, dict) or not _labels_ok(row.get("metric", {})):
            raise UpstreamError("prometheus answered a series without string labels")
        samples = [row["value"]] if "value" in row else row.get("values")
        if not isinstance(samples, list) or not all(_sample_ok(s) for s in samples):
            raise UpstreamError("prometheus answered a sample that is not a [time, number] pair")
    return result


def samples(rows: list[dict], *labels: str) -> list[dict]:
    """The instant samples of ROWS that carry every one of LABELS (a sound answer may still lack a label a
    query expects: such a row says nothing about what was asked, and is left out)."""
    return [r for r in rows if "value" in r and all(name in r.get("metric", {}) for name in labels)]


def promql_string(value: str) -> str:
    """VALUE as a PromQL double-quoted string literal (labels from alerts are data, never PromQL)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def promql_alternatives(values: Iterable[str]) -> str:
    """A PromQL regex string matching exactly VALUES (each escaped), for `label=~` matchers."""
    return promql_string("|".join(re.escape(v) for v in sorted(values)))


class PrometheusApi:
    """Instant queries against Prometheus's /api/v1/query."""

    def __init__(self, base_url: str, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()

    def query(self, promql: str) -> list[dict]:
        """The rows of an instant query; UpstreamError when unreachable, on an API error or a malformed answer."""
        return query_result(_get_json(self.session, self.base_url + "/api/v1/query", {"query": promql}))

    def rules(self) -> list[dict]:
        """The rule groups Prometheus evaluates (/api/v1/rules): what its alerts and recordings really are."""
        body = _get_json(self.session, self.base_url + "/api/v1/rules")
        if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
            raise UpstreamError("prometheus rules: not a successful answer")
        groups = body["data"].get("groups")
        if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("rules", []), list)
                                                   for g in groups):
            raise UpstreamError("prometheus rules: groups in an unexpected shape")
        return groups

    def ready(self) -> bool:
        try:
            return self.session.get(self.base_url + "/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False


def alerts_result(body: object, who: str = "alertmanager") -> list[dict]:
    """The alerts of a /api/v2/alerts answer, each checked for labels and status; UpstreamError otherwise."""
    if not isinstance(body, list):
        raise UpstreamError(f"{who} answered alerts that are not a list")
    for alert in body:
        status = alert.get("status") if isinstance(alert, dict) else None
        if not isinstance(alert, dict) or not _labels_ok(alert.get("labels")) or not isinstance(status, dict) \
                or not isinstance(status.get("state"), str) \
                or not all(isinstance(status.get(k, []), list) and all(isinstance(i, str) for i in status.get(k, []))
                           for k in ("silencedBy", "inhibitedBy")):
            raise UpstreamError(f"{who} answered an alert without string labels or a status")
    return body


class AlertmanagerApi:
    """Alertmanager's v2 API across the instances of a cluster: reads from one that answers, posts to all.

    WHO names it in errors; TOKEN, if given, is sent as a bearer token by its session (Grafana's API needs one);
    READY_PATH is what answers 200 when it is ready."""

    def __init__(self, base_urls: str | list[str], session: requests.Session | None = None, *,
                 who: str = "alertmanager", token: Secret | None = None, ready_path: str = "/-/ready"):
        urls = base_urls.split(",") if isinstance(base_urls, str) else list(base_urls)
        self.base_urls = [u.strip().rstrip("/") for u in urls if u.strip()]
        self.session = session or requests.Session()
        self.who, self.ready_path = who, ready_path
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token.reveal()}"

    @property
    def base_url(self) -> str:
        return self.base_urls[0]

    def _ask(self, question: Callable[[str], T]) -> T:
        """QUESTION(base) answered by the first instance that can; UpstreamError naming each one's problem."""
        # Silences and alerts are gossiped: any instance will do. Instances only slow (busy with a storm) are asked
        # again while the caller's deadline lasts, waiting twice as long each round (one always slower than the
        # client timeout is answered too): a hold would wait for the next notification, maybe hours away.
        rounds, first = 0, []
        while True:
            rounds, problems = rounds + 1, []
            with patience(rounds):
                for base in self.base_urls:
                    try:
                        return question(base)
                    except UpstreamError as exc:
                        problems.append(exc)
            first = first or problems
            if not problems or any(type(p) is not UpstreamSlow for p in problems) or (time_left() or 0) <= 0:
                said = "; ".join(map(str, first)) or f"no {self.who} configured"
                raise UpstreamError(said + (f" (asked {rounds} times)" if rounds > 1 else ""))

    def agent_alerts(self, agent: str) -> list[dict]:
        """Every alert Alertmanager holds for AGENT, silenced and inhibited ones included."""
        params = {"filter": f"agent={promql_string(agent)}", "active": "true", "silenced": "true",
                  "inhibited": "true", "unprocessed": "true"}
        return alerts_result(self._ask(lambda base: _get_json(self.session, base + "/api/v2/alerts", params)),
                             self.who)

    def verdict(self, labels: Mapping[str, str]) -> tuple[list[str], list[str]]:
        """Alertmanager's own verdict on an alert with LABELS: (silences that match it, alerts that inhibit it).

        Alertmanager decides, with its own matcher grammar and RE2 regexes: the alert is posted with
        `autonomy_probe="true"` (routed to no one by the shipped configuration), read back from the same
        instance, and resolved. UpstreamError when no instance gives a clear answer.
        """
        probe = {**labels, PROBE_LABEL: "true"}
        now = datetime.now(timezone.utc)
        params = [("filter", f"{k}={promql_string(v)}") for k, v in sorted(probe.items())]
        params += [("active", "true"), ("silenced", "true"), ("inhibited", "true"), ("unprocessed", "true")]

        def ask(base: str) -> tuple[list[str], list[str]]:
            self._post(base, [{"labels": probe, "startsAt": now.isoformat(),
                               "endsAt": (now + PROBE_LIFETIME).isoformat()}])
            held = [a for a in alerts_result(_get_json(self.session, base + "/api/v2/alerts", params))
                    if a["labels"] == probe]
            if not held:
                raise UpstreamError(f"{base}/api/v2/alerts: the probe alert just posted is not there")
            status = held[0]["status"]
            try:  # resolved at once: the probe was only a question
                self._post(base, [{"labels": probe, "startsAt": now.isoformat(),
                                   "endsAt": datetime.now(timezone.utc).isoformat()}])
            except UpstreamError:
                pass  # it expires by itself within PROBE_LIFETIME
            return list(status.get("silencedBy") or []), list(status.get("inhibitedBy") or [])
        return self._ask(ask)

    def _post(self, base: str, alerts: list[dict]) -> None:
        try:
            reply = self.session.post(base + "/api/v2/alerts", json=alerts, timeout=request_timeout())
        except requests.RequestException as exc:
            raise (UpstreamSlow if isinstance(exc, requests.Timeout) else UpstreamError)(
                f"{base}/api/v2/alerts: {type(exc).__name__}") from None
        if reply.status_code != 200:
            raise UpstreamError(f"{base}/api/v2/alerts: HTTP {reply.status_code}")

    def post_alerts(self, alerts: list[dict]) -> None:
        """Post to every instance (alerts are not gossiped); UpstreamError names the ones that failed."""
        problems = []
        for base in self.base_urls:
            try:
                self._post(base, alerts)
            except UpstreamError as exc:
                problems.append(str(exc))
        if problems:
            raise UpstreamError("; ".join(problems))

    def ready(self) -> bool:
        for base in self.base_urls:
            try:
                if self.session.get(base + self.ready_path, timeout=2).status_code == 200:
                    return True
            except requests.RequestException:
                continue
        return False


def grafana_alertmanager(grafana_url: str, token: Secret | None) -> AlertmanagerApi:
    """Grafana's Alertmanager-compatible API for its own alerts and silences; ready when its status answers (the
    token accepted too)."""
    return AlertmanagerApi(grafana_url.rstrip("/") + GRAFANA_ALERTMANAGER_PATH, who="grafana", token=token,
                           ready_path="/api/v2/status")
