"""Thin clients for the two upstreams the receiver reads: Prometheus's and Alertmanager's HTTP APIs."""
from __future__ import annotations

import re
from typing import Mapping

import requests

TIMEOUT_SECONDS = 5.0


class UpstreamError(RuntimeError):
    """An upstream could not be reached or answered badly; the message says which and why."""


def _get_json(session: requests.Session, url: str, params: Mapping | None = None) -> object:
    try:
        reply = session.get(url, params=params, timeout=TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        raise UpstreamError(f"{url}: {type(exc).__name__}") from None
    if reply.status_code != 200:
        raise UpstreamError(f"{url}: HTTP {reply.status_code}")
    try:
        return reply.json()
    except ValueError:
        raise UpstreamError(f"{url}: not JSON") from None


def promql_string(value: str) -> str:
    """VALUE as a PromQL double-quoted string literal (labels from alerts are data, never PromQL)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class PrometheusApi:
    """Instant queries against Prometheus's /api/v1/query."""

    def __init__(self, base_url: str, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()

    def query(self, promql: str) -> list[dict]:
        """The result vector of an instant query; UpstreamError when unreachable or on an API error."""
        body = _get_json(self.session, self.base_url + "/api/v1/query", {"query": promql})
        if not isinstance(body, dict) or body.get("status") != "success":
            raise UpstreamError(f"prometheus query failed: {body.get('error') if isinstance(body, dict) else body}")
        result = body["data"]["result"]
        return result if isinstance(result, list) else []

    def rules(self) -> list[dict]:
        """The rule groups Prometheus evaluates (/api/v1/rules): what its alerts and recordings really are."""
        body = _get_json(self.session, self.base_url + "/api/v1/rules")
        if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
            raise UpstreamError("prometheus rules: not a successful answer")
        groups = body["data"].get("groups")
        return groups if isinstance(groups, list) else []

    def ready(self) -> bool:
        try:
            return self.session.get(self.base_url + "/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False


def _matches(matcher: dict, labels: Mapping[str, str]) -> bool:
    value = labels.get(matcher.get("name", ""), "")
    pattern = matcher.get("value", "")
    if matcher.get("isRegex"):
        hit = re.fullmatch(pattern, value) is not None
    else:
        hit = value == pattern
    return hit == matcher.get("isEqual", True)


class AlertmanagerApi:
    """Alertmanager's v2 API across the instances of a cluster: reads from one that answers, posts to all."""

    def __init__(self, base_urls: str | list[str], session: requests.Session | None = None):
        urls = base_urls.split(",") if isinstance(base_urls, str) else list(base_urls)
        self.base_urls = [u.strip().rstrip("/") for u in urls if u.strip()]
        self.session = session or requests.Session()

    @property
    def base_url(self) -> str:
        return self.base_urls[0]

    def _read(self, path: str, params: Mapping | None = None) -> object:
        # Silences and alerts are gossiped across the cluster: any instance that answers will do.
        problems = []
        for base in self.base_urls:
            try:
                return _get_json(self.session, base + path, params)
            except UpstreamError as exc:
                problems.append(str(exc))
        raise UpstreamError("; ".join(problems))

    def agent_alerts(self, agent: str) -> list[dict]:
        """Every alert Alertmanager holds for AGENT, silenced and inhibited ones included."""
        params = {"filter": f"agent={promql_string(agent)}", "active": "true", "silenced": "true",
                  "inhibited": "true", "unprocessed": "true"}
        body = self._read("/api/v2/alerts", params)
        return body if isinstance(body, list) else []

    def silenced(self, labels: Mapping[str, str]) -> list[str]:
        """Ids of active silences whose matchers all match LABELS."""
        body = self._read("/api/v2/silences")
        hits = []
        for silence in body if isinstance(body, list) else []:
            if silence.get("status", {}).get("state") != "active":
                continue
            if all(_matches(m, labels) for m in silence.get("matchers", [])):
                hits.append(silence.get("id", "?"))
        return hits

    def post_alerts(self, alerts: list[dict]) -> None:
        """Post to every instance (alerts are not gossiped); UpstreamError names the ones that failed."""
        problems = []
        for base in self.base_urls:
            try:
                reply = self.session.post(base + "/api/v2/alerts", json=alerts, timeout=TIMEOUT_SECONDS)
                if reply.status_code != 200:
                    problems.append(f"{base}/api/v2/alerts: HTTP {reply.status_code}")
            except requests.RequestException as exc:
                problems.append(f"{base}/api/v2/alerts: {type(exc).__name__}")
        if problems:
            raise UpstreamError("; ".join(problems))

    def ready(self) -> bool:
        for base in self.base_urls:
            try:
                if self.session.get(base + "/-/ready", timeout=2).status_code == 200:
                    return True
            except requests.RequestException:
                continue
        return False
