"""The receiver's engine on fakes: a fake Prometheus (series, alert rules, ALERTS), a fake Alertmanager, and real
loopback agents whose action endpoints change the fake's state as real agents would.

The engine runs synchronously (START_ENGINE False, engine.process(incident_id)). The fake Prometheus serves
alerting rules whose queries it evaluates itself (`CONDITIONS`, one predicate per alert of the repo's rules):
the receiver reads them through the rules API exactly as it reads the real ones, and the integration tests
run the real expressions on the real Prometheus.
"""
from __future__ import annotations

import copy
import json
import re
import threading
import time
from datetime import datetime, timezone

import yaml
from flask import Flask, jsonify, request
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from autonomy.settings import Secret, Settings
from autonomy.signal_contract import Signal
from devstack.checkout import PLAYBOOKS_FILE as DEFAULT_PATH
from devstack.local_stack import ServedApp, free_port
from exporter.agent_metrics import AGENT_METRICS
from tests.receivers import build_receiver
from webhook_receiver.agent_view import FLEET_SPEND
from webhook_receiver.app import shutdown
from webhook_receiver.engine import Upstreams
from webhook_receiver.fleet_ranking import Tier
from webhook_receiver.playbooks import parse_playbooks
from webhook_receiver.upstreams import UpstreamError

WEBHOOK_TOKEN = "whk-SECRET-9f1c2b7e"
ESCALATION_TOKEN = "esc-SECRET-4d8a6e31"
PUBLIC_URL = "http://receiver.test"
BUDGET_CAP = 25.0
# The alert a class's notification carries in these tests (the repo's rule for that kind of fault).
ALERT_OF_CLASS = {"TRANSIENT": "AgentTransientError", "CONFIG": "AgentConfigError", "DATA_DEP": "AgentDataInputError",
                  "CAPACITY": "AgentBacklogAgeAboveSLO", "CONFLICT": "AgentConflictReported"}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def healthy_doc(agent: str, domain: str) -> dict:
    return {"agent": agent, "domain": domain, "status": "healthy", "lastReport": "ok",
            "metrics": {"successRate": 0.99, "alignment": 0.99, "backlogAgeMinutes": 1, "costBurnRatePerHour": 0.1},
            "context": {}, "checks": {"lastTaskSucceeded": True, "inputsValid": True, "configHealthy": True}}


def _claimants(fake: "FakePrometheus", signal: Signal) -> int:
    return sum(1 for a in fake.docs if signal.directive_id and fake.signal(a).directive_id == signal.directive_id)


# The repo's alert rules, as predicates on an agent's signal (the fake's stand-in for PromQL).
CONDITIONS = {
    "AgentSuccessRatioBelowSLO": lambda f, s: s.success_ratio < 0.94,
    "AgentAlignmentBelowSLO": lambda f, s: s.alignment_ratio < 0.95,
    "AgentBacklogAgeAboveSLO": lambda f, s: s.backlog_age_seconds > 900,
    "AgentQueueDepthHigh": lambda f, s: (s.queue_depth or 0) > 5,
    "AgentTransientError": lambda f, s: s.error_code in ("TIMEOUT", "RATE_LIMIT", "TEMP_NETWORK"),
    "AgentDataInputError": lambda f, s: s.error_code in ("INPUT_MISSING", "STALE_DATA"),
    "AgentConfigError": lambda f, s: s.error_code in ("CONFIG_MISSING", "AUTH_FAILED"),
    "AgentStatusError": lambda f, s: s.status == "error",
    "AgentDegraded": lambda f, s: s.status == "degraded",
    "AgentConflictReported": lambda f, s: s.conflict_id is not None,
    "DirectiveClaimedByMultipleAgents": lambda f, s: _claimants(f, s) >= 2,
    "AgentDependencyFailing": lambda f, s: any(d in f.docs and f.signal(d).status == "error" for d in s.dependencies),
    "AgentSilent": lambda f, s: False,
}
CLASS_OF_ALERT = {"AgentSuccessRatioBelowSLO": "CAPACITY", "AgentAlignmentBelowSLO": "CAPACITY",
                  "AgentBacklogAgeAboveSLO": "CAPACITY", "AgentQueueDepthHigh": "CAPACITY", "AgentDegraded": "CAPACITY",
                  "AgentTransientError": "TRANSIENT", "AgentStatusError": "TRANSIENT", "AgentSilent": "TRANSIENT",
                  "AgentDataInputError": "DATA_DEP", "AgentDependencyFailing": "DATA_DEP", "AgentConfigError": "CONFIG",
                  "AgentConflictReported": "CONFLICT", "DirectiveClaimedByMultipleAgents": "CONFLICT"}


def unescape(alternatives: str) -> list[str]:
    """The names in a PromQL regex of escaped alternatives (`A|B\\-1`)."""
    return [re.sub(r"\\(.)", r"\1", name) for name in alternatives.replace("\\\\", "\\").split("|")]


SCOPED = re.compile(r'\((?P<expr>.*)\) and on \(agent\) \((?P<agents>label_replace\(vector\(1\), "agent", .*)\)', re.S)
SCOPE_AGENT = re.compile(r'label_replace\(vector\(1\), "agent", "((?:[^"\\]|\\.)*)", "", ""\)')


def unscoped(promql: str) -> tuple[str, set[str] | None]:
    """alert_conditions.scoped undone: the rule's expression and the agents it answers for (None: all)."""
    m = SCOPED.fullmatch(promql)
    if not m:
        return promql, None
    agents = {re.sub(r"\\(.)", r"\1", a).replace("$$", "$") for a in SCOPE_AGENT.findall(m["agents"])}
    return m["expr"], agents


class FakePrometheus:
    """Each agent's current signal document, exposed as the exporter's series, plus the alert rules.

    The agents keep reporting (heartbeat): every sample is stamped with the time of the query, so a sample is
    fresh as soon as the action is over, unless the agent is in `frozen` (its last signal stays as it was and
    its own ts does not move). Queries it does not know answer [] and are kept in `unanswered`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.docs: dict[str, dict] = {}
        self.frozen: dict[str, float] = {}  # agent -> the ts its last signal keeps
        self.down = False
        self.queries: list[str] = []
        self.unanswered: list[str] = []
        self.firing_alerts: set[str] = set()  # agents with a firing ALERTS series (the sweeper's question)
        self.pending: dict[str, set[str]] = {}  # agent -> alert names pending or firing now (ALERTS)
        self.active_at: dict[tuple[str, str], float] = {}  # (agent, alertname) -> ALERTS_FOR_STATE value
        self.missing_rules: set[str] = set()  # alert names the rules API does not list
        self.rule_reads = 0
        self.on_query: list = []  # callables(promql) run before each query: what changes while the engine reads

    # state
    def add(self, agent: str, domain: str, status="healthy", errorCode=None, directiveId=None, **changes):
        with self.lock:
            self.docs[agent] = healthy_doc(agent, domain)
        self.set(agent, status=status, errorCode=errorCode, directiveId=directiveId, **changes)

    def set(self, agent: str, **changes):
        """status, errorCode / directiveId / conflictId (None clears), metrics keys, checks keys (None drops),
        `plain=True` drops every check (an agent that sends only the pack's section 2 fields)."""
        with self.lock:
            doc = self.docs[agent]
            for key, value in changes.items():
                if key == "status":
                    doc["status"] = value
                elif key == "plain":
                    doc.pop("checks", None)
                elif key in ("errorCode", "directiveId", "conflictId", "queueDepth"):
                    doc["context"].pop(key, None) if value is None else doc["context"].update({key: value})
                elif key == "dependencies":
                    doc["context"]["dependencies"] = list(value)
                elif key in doc["metrics"]:
                    doc["metrics"][key] = value
                elif value is None:
                    doc.get("checks", {}).pop(key, None)
                else:
                    doc.setdefault("checks", {})[key] = value

    def signal(self, agent: str) -> Signal:
        with self.lock:
            doc = copy.deepcopy(self.docs[agent])
            ts = self.frozen.get(agent, time.time())
        return Signal.from_document({**doc, "ts": iso(ts)})

    def _rows(self, now: float) -> list[dict]:
        rows = []
        for agent in sorted(self.docs):
            sig = self.signal(agent)
            for metric in AGENT_METRICS:
                for extra, value in metric.samples(sig):
                    labels = {"__name__": metric.name, "agent": agent, **dict(zip(metric.labels, extra))}
                    rows.append({"metric": labels, "value": [now, repr(value)]})
        return rows

    def _select(self, name=None, agent=None, where=lambda v: True, now=None, **labels):
        return [r for r in self._rows(now or time.time())
                if (name is None or r["metric"]["__name__"] == name) and (agent is None or r["metric"]["agent"] == agent)
                and all(r["metric"].get(k) == v for k, v in labels.items()) and where(float(r["value"][1]))]

    @staticmethod
    def _strip(rows):  # comparison results of PromQL drop the metric name
        return [{"metric": {k: v for k, v in r["metric"].items() if k != "__name__"}, "value": r["value"]}
                for r in rows]

    def spend(self) -> float:
        return sum(self.signal(a).cost_burn_dollars_per_hour for a in self.docs) * 24

    def _holding(self, agent: str) -> set[str]:
        signal = self.signal(agent)
        return {n for n, holds in CONDITIONS.items() if holds(self, signal)} | self.pending.get(agent, set())

    def _alert_labels(self, agent: str, name: str) -> dict:
        labels = {"__name__": "ALERTS", "alertname": name, "agent": agent,
                  "autonomy_class": CLASS_OF_ALERT.get(name, "TRANSIENT")}
        signal = self.signal(agent)
        if name == "DirectiveClaimedByMultipleAgents":
            labels["directive_id"] = signal.directive_id
        if name == "AgentConflictReported":
            labels["conflict_id"] = signal.conflict_id
        return labels

    # the API the engine uses
    def rules(self) -> list[dict]:
        if self.down:
            raise UpstreamError("http://127.0.0.1:9/api/v1/rules: ConnectionError")
        self.rule_reads += 1
        alerting = [{"type": "alerting", "name": name, "query": f'fake_condition{{alertname="{name}"}}',
                     "labels": {"severity": "warning"}} for name in CONDITIONS if name not in self.missing_rules]
        if "FleetBudgetProjectedOverCap" not in self.missing_rules:
            alerting.append({"type": "alerting", "name": "FleetBudgetProjectedOverCap",
                             "query": f"fleet:autonomy_cost_projected_daily_dollars:sum > {BUDGET_CAP:g}",
                             "labels": {"agent": "fleet", "severity": "critical"}})
        recording = [{"type": "recording", "name": "fleet:autonomy_cost_projected_daily_dollars:sum",
                      "query": FLEET_SPEND}]
        return [{"name": "autonomy-agents", "rules": alerting}, {"name": "autonomy-budget", "rules": recording}]

    def query(self, promql: str) -> list[dict]:
        expr, agents = unscoped(promql)
        self.queries.append(expr)
        for hook in list(self.on_query):
            hook(expr)
        if self.down:
            raise UpstreamError("http://127.0.0.1:9/api/v1/query: ConnectionError")
        rows = self._answer(expr)
        return rows if agents is None else [r for r in rows if r.get("metric", {}).get("agent") in agents]

    def _answer(self, promql: str) -> list[dict]:
        now = time.time()
        one = lambda v: v == 1.0  # noqa: E731
        if promql == 'ALERTS{alertstate="firing", autonomy_class=~"CONFLICT|CONFIG|DATA_DEP|TRANSIENT|CAPACITY"}':
            return [{"metric": {"__name__": "ALERTS", "alertstate": "firing", "agent": agent,
                                "autonomy_class": "TRANSIENT"}, "value": [now, "1"]}
                    for agent in sorted(self.firing_alerts)]
        m = re.fullmatch(r'fake_condition\{alertname="([A-Za-z]+)"\}', promql)
        if m:
            return [{"metric": {"agent": a}, "value": [now, "1"]} for a in sorted(self.docs)
                    if CONDITIONS[m[1]](self, self.signal(a))]
        m = re.fullmatch(r'\(' + re.escape(FLEET_SPEND) + r'\) > ([0-9.]+)', promql)
        if m:
            return [{"metric": {}, "value": [now, repr(self.spend())]}] if self.spend() > float(m[1]) else []
        m = re.fullmatch(r'ALERTS\{agent=~"([^"]+)"\}\[1s\] @ ([0-9.]+)', promql)
        if m:  # the first evaluation that found each condition, within the second ALERTS_FOR_STATE gives
            agents = set(m[1].split("|"))
            return [{"metric": {"__name__": "ALERTS", "alertname": n, "agent": a}, "values": [[t, "1"]]}
                    for (a, n), t in sorted(self.active_at.items()) if a in agents and t <= float(m[2])]
        m = re.fullmatch(r'(ALERTS|ALERTS_FOR_STATE)\{agent=~"([^"]+)"(, autonomy_class=~"[A-Z_|]+")?\}', promql)
        if m:
            agents = set(m[2].split("|"))
            if m[1] == "ALERTS":  # pending or firing: every rule whose condition holds now, as Prometheus has it
                return [{"metric": self._alert_labels(a, n), "value": [now, "1"]}
                        for a in sorted(agents & set(self.docs)) for n in sorted(self._holding(a))]
            return [{"metric": {"__name__": "ALERTS_FOR_STATE", "alertname": n, "agent": a},
                     "value": [now, repr(float(int(t)))]}  # Prometheus keeps it in whole seconds
                    for (a, n), t in sorted(self.active_at.items()) if a in agents]
        m = re.fullmatch(r'(?:autonomy_agent_last_signal_timestamp_seconds\{agent=~"([^"]+)"\} > ([0-9.]+) and )?'
                         r'timestamp\(autonomy_agent_last_signal_timestamp_seconds\{agent=~"([^"]+)"\}\) > ([0-9.]+)',
                         promql)
        if m:
            own_since = float(m[2]) if m[2] else None
            return [{"metric": {"agent": a}, "value": [now, "1"]} for a in m[3].split("|") if a in self.docs
                    and now > float(m[4]) and (own_since is None or self.signal(a).timestamp > own_since)]
        m = re.fullmatch(r'max by \(agent\) \(autonomy_agent_(directive_claim|conflict)\{(directive_id|conflict_id)='
                         r'"([^"]+)"\} == 1\)', promql)
        if m:
            field = "directive_id" if m[1] == "directive_claim" else "conflict_id"
            return [{"metric": {"agent": a}, "value": [now, "1"]} for a in sorted(self.docs)
                    if getattr(self.signal(a), field) == m[3]]
        m = re.fullmatch(r'\{__name__=~"autonomy_agent_\.\+", agent="([^"]+)"\}', promql)
        if m:
            return self._select(agent=m[1], now=now)
        # The verifier's reads, one query for every agent under verification:
        m = re.fullmatch(r'\{__name__=~"autonomy_agent_\.\+", agent=~"([^"]+)"\}', promql)
        if m:
            return [r for a in unescape(m[1]) for r in self._select(agent=a, now=now)]
        m = re.fullmatch(r'(timestamp\()?autonomy_agent_last_signal_timestamp_seconds\{agent=~"([^"]+)"\}\)?', promql)
        if m:  # the signal's own time, or (timestamp()) the scrape's: now, every fake agent is scraped all along
            return [{"metric": {"agent": a}, "value": [now, repr(now if m[1] else self.signal(a).timestamp)]}
                    for a in unescape(m[2]) if a in self.docs]
        m = re.fullmatch(r'count by \(directive_id\) \(max by \(agent, directive_id\) \(autonomy_agent_directive_claim'
                         r'\{directive_id=~"([^"]+)"\} == 1\)\)', promql)
        if m:
            counts = {d: len(self._select("autonomy_agent_directive_claim", directive_id=d, where=one, now=now))
                      for d in unescape(m[1])}
            return [{"metric": {"directive_id": d}, "value": [now, str(c)]} for d, c in counts.items() if c]
        m = re.fullmatch(r'autonomy_agent_status\{agent=~"([^"]+)",autonomy_agent_status="error"\} == 1', promql)
        if m:
            wanted = set(re.sub(r"\\(.)", r"\1", m[1]).split("|"))
            return [r for r in self._strip(self._select("autonomy_agent_status", where=one, now=now,
                                                        autonomy_agent_status="error")) if r["metric"]["agent"] in wanted]
        m = re.fullmatch(r'time\(\) - autonomy_agent_last_signal_timestamp_seconds\{agent=~"([^"]+)"\} > ([0-9.]+)', promql)
        if m:
            return []  # every fake agent keeps reporting
        m = re.fullmatch(r'count\(max by \(agent\) \(autonomy_agent_directive_claim\{directive_id="([^"]+)"\} == 1\)\)',
                         promql)
        if m:
            count = len(self._select("autonomy_agent_directive_claim", directive_id=m[1], where=one, now=now))
            return [{"metric": {}, "value": [now, str(count)]}] if count else []
        if promql == FLEET_SPEND:
            return [{"metric": {}, "value": [now, repr(self.spend())]}]
        m = re.fullmatch(r'(autonomy_agent_info|autonomy_agent_status|autonomy_agent_directive_claim|max by \(agent\) '
                         r'\(autonomy_agent_cost_burn_dollars_per_hour)\{agent=~"([^"]+)"\}(.*)', promql)
        if m:  # the members query for some agents only: the fleet's answer, filtered as the selector would
            wanted = set(re.sub(r"\\\\(.)", r"\1", m[2]).split("|"))
            return [r for r in self._answer(m[1] + m[3]) if r["metric"].get("agent") in wanted]
        if promql.lstrip("(").startswith("max by (agent) (autonomy_agent_info"):
            return self._candidates(promql, now)
        if promql == "autonomy_agent_info":
            return self._select("autonomy_agent_info", now=now)
        if promql == "autonomy_agent_status == 1":
            return self._strip(self._select("autonomy_agent_status", where=one, now=now))
        if promql == "max by (agent) (autonomy_agent_cost_burn_dollars_per_hour)":
            return self._strip(self._select("autonomy_agent_cost_burn_dollars_per_hour", now=now))
        if promql == "autonomy_agent_directive_claim == 1":
            return self._strip(self._select("autonomy_agent_directive_claim", where=one, now=now))
        self.unanswered.append(promql)
        return []

    def _candidates(self, promql: str, now: float) -> list[dict]:
        """fleet_ranking.candidates_query, answered by Tier.holds over the fake's signals (the PromQL itself is
        checked against the real Prometheus in tests/integration/test_fleet_ranking_on_real_prometheus.py)."""
        domain = re.search(r'autonomy_agent_info\{domain(=~|!~)"([^"]*)"\}', promql)
        unless = re.search(r'unless on \(agent\) autonomy_agent_info\{agent=~"([^"]+)"\}', promql)
        listed = re.search(r'or max by \(agent\) \(autonomy_agent_info\{agent=~"([^"]+)"\}\)', promql)
        values = set(unescape(domain[2])) if domain else set()
        unranked = domain is None or domain[1] == "!~"
        tier = Tier(frozenset() if unranked else frozenset(values), unranked, frozenset(values if unranked else ()),
                    frozenset(unescape(listed[1])) if listed else frozenset(),
                    frozenset(unescape(unless[1])) if unless else frozenset())
        donor = promql.endswith('!="healthy"} == 1)')
        return [{"metric": {"agent": a}, "value": [now, "1"]} for a in sorted(self.docs)
                if tier.holds(a, self.signal(a).domain)
                and (self.signal(a).status == "healthy" if donor else self.signal(a).cost_burn_dollars_per_hour > 0)]

    def ready(self) -> bool:
        return not self.down


class FakeAlertmanager:
    """The alerts Alertmanager holds per agent, its silences, and the alerts posted to it."""

    def __init__(self):
        self.alerts: dict[str, list[dict]] = {}
        self.silences: list[dict] = []
        self.posted: list[dict] = []
        self.requests = 0  # post requests (each may carry many alerts)
        self.probes: list[dict] = []
        self.down = False

    def fire(self, agent: str, cls: str, silenced_by=(), **labels):
        self.alerts.setdefault(agent, []).append({
            "labels": {"alertname": ALERT_OF_CLASS.get(cls, "AgentAlert"), "agent": agent, "autonomy_class": cls,
                       **labels},
            "status": {"state": "suppressed" if silenced_by else "active", "silencedBy": list(silenced_by),
                       "inhibitedBy": []},
            "fingerprint": f"{agent}-{cls}"})

    def agent_alerts(self, agent: str) -> list[dict]:
        return copy.deepcopy(self.alerts.get(agent, []))

    def verdict(self, labels) -> tuple[list[str], list[str]]:
        """Alertmanager's verdict on a probe alert, from equality matchers only (the real one is tested live)."""
        self.probes.append(dict(labels))
        return [s["id"] for s in self.silences if all(labels.get(k) == v for k, v in s["matchers"].items())], []

    def post_alerts(self, alerts: list[dict]) -> None:
        if self.down:
            raise UpstreamError("connection refused")
        self.requests += 1
        self.posted.extend(copy.deepcopy(alerts))

    def ready(self) -> bool:
        return True


class Agents:
    """Action endpoints that change the fake Prometheus state as real agents would, plus an escalation sink."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset(FakePrometheus())
        app = Flask("agents")

        @app.post("/agents/<agent>/actions/<action>")
        def act(agent, action):
            body = request.get_json(silent=True) or {}
            with self.lock:
                self.calls.append((agent, action, body))
                self.call_times.append(time.time())
                self.headers.append({k: request.headers.get(k) for k in ("Authorization", "Idempotency-Key")})
            handler = self.handlers.get(action)
            status = handler(agent, body) if handler else self.fix(agent, action, body)
            return jsonify({"done": (status or 200) < 300}), status or 200

        @app.post("/escalations")
        def escalation():
            with self.lock:
                self.escalations.append((request.headers.get("Authorization"), request.get_json()))
            return jsonify({"received": True})

        self.served = ServedApp(app).start()
        self.url = self.served.url

    def reset(self, prom: FakePrometheus) -> None:
        """A clean slate for the next test (the server itself is shared by the module)."""
        self.prom = prom
        self.calls: list[tuple[str, str, dict]] = []
        self.call_times: list[float] = []
        self.headers: list[dict] = []  # each action's Authorization and Idempotency-Key headers, in call order
        self.escalations: list[tuple[str | None, dict]] = []
        self.handlers: dict[str, object] = {}  # action -> fn(agent, body) -> HTTP status (None: 200)
        self.unfixable: set[str] = set()
        self.release = threading.Event()  # set at the end of a test: frees a hanging handler

    def fix(self, agent: str, action: str, body: dict | None = None) -> None:
        if agent in self.unfixable or agent not in self.prom.docs:
            return None
        if action == "restartAgent":
            self.prom.set(agent, status="healthy", errorCode=None)
        elif action == "retryLastTask":
            self.prom.set(agent, lastTaskSucceeded=True, successRate=0.98)
        elif action == "checkSecrets":
            self.prom.set(agent, status="healthy", errorCode=None, configHealthy=True)
        elif action == "reallocateSlots":  # the backlog drains, and with it the degraded status
            self.prom.set(agent, backlogAgeMinutes=5, status="healthy")
        elif action == "reassignOverlaps":
            winner, directive = (body or {}).get("winner"), (body or {}).get("directiveId")
            for other in list(self.prom.docs):
                if other != winner and self.prom.signal(other).directive_id == directive:
                    self.prom.set(other, directiveId=f"D-{other}-own", alignment=0.99, status="healthy")
            if winner in self.prom.docs:
                self.prom.set(winner, alignment=0.99)
        return None

    def actions(self) -> list[str]:
        with self.lock:
            return [action for _, action, _ in self.calls]

    def stop(self):
        self.release.set()
        self.served.stop()


class Harness:
    def __init__(self, tmp_path, agents: Agents):
        self.tmp_path = tmp_path
        self.prom = FakePrometheus()
        self.am = FakeAlertmanager()
        self.agents = agents
        agents.reset(self.prom)
        self.spans = InMemorySpanExporter()
        self.app = None

    def build(self, env: dict | None = None, playbooks=lambda doc: None, data_dir=None):
        settings = Settings.from_env({
            "AUTOREM_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
            "AUTOREM_ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}",
            "AUTOREM_ESCALATION_URL": self.agents.url + "/escalations",
            "AUTOREM_ESCALATION_TOKEN": ESCALATION_TOKEN,
            "AUTOREM_VERIFY_TIMEOUT_SECONDS": "0.5", "AUTOREM_VERIFY_INTERVAL_SECONDS": "0.05",
            "AUTO_REMEDIATE": "true", "AUTOREM_ATTEMPT_BACKOFF_SECONDS": "0",
            **(env or {})})
        doc = yaml.safe_load(DEFAULT_PATH.read_text())
        doc["actions"].update(baseUrl=self.agents.url, timeoutSeconds=2,
                              retry={"attempts": 3, "backoffSeconds": 0.01, "maxBackoffSeconds": 0.02, "jitter": 0})
        playbooks(doc)
        self.app = build_receiver(data_dir or self.tmp_path / "data", settings=settings,
                                  WEBHOOK_TOKEN=Secret("AUTOREM_WEBHOOK_TOKEN", WEBHOOK_TOKEN),
                                  PLAYBOOKS=parse_playbooks(doc), SPAN_EXPORTER=self.spans, PUBLIC_URL=PUBLIC_URL,
                                  UPSTREAMS=self.upstreams)
        self.state = self.app.extensions["autonomy_receiver"]
        self.engine = self.state.engine
        self.store = self.state.store
        self.web = self.app.test_client()
        return self

    def upstreams(self, settings, signals) -> Upstreams:
        """The fakes in place of Prometheus and Alertmanager (create_app's UPSTREAMS)."""
        return Upstreams(prometheus=self.prom, alertmanager=self.am, latest_signal=signals.latest,
                         all_signals=lambda: [e.signal for e in signals.snapshot()])

    def notify(self, agent="CMO", cls="TRANSIENT", status="firing", alertname=None, starts_at=None,
               **labels) -> dict:
        alert = {"status": status, "labels": {"alertname": alertname or ALERT_OF_CLASS.get(cls, "AgentAlert"),
                                              "agent": agent, "autonomy_class": cls, "severity": "warning", **labels},
                 "annotations": {}, "startsAt": iso(starts_at or time.time()), "endsAt": "0001-01-01T00:00:00Z",
                 "fingerprint": f"{agent}-{cls}"}
        return self.post_alerts([alert], status)

    def post_alerts(self, alerts: list[dict], status: str = "firing") -> dict:
        reply = self.web.post("/api/v1/alerts", data=json.dumps({"version": "4", "status": status, "alerts": alerts}),
                              content_type="application/json",
                              headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
        assert reply.status_code == 200, reply.get_json()
        self.engine.outbox.drain()  # what the outbox's thread posts right after the request
        return reply.get_json()

    def fire(self, agent="CMO", cls="TRANSIENT", **labels) -> str:
        """Alertmanager holds an active alert for AGENT and notifies the receiver; the incident's id."""
        self.am.fire(agent, cls, **{k: v for k, v in labels.items() if k in ("directive_id", "conflict_id")})
        body = self.notify(agent, cls, **labels)
        return (body["opened"] or body["queued"] or body["duplicates"])[0]

    def post_signal(self, doc: dict) -> dict:
        reply = self.web.post("/api/v1/signals", data=json.dumps(doc), content_type="application/json",
                              headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
        assert reply.status_code == 200, reply.get_json()
        self.engine.outbox.drain()
        return reply.get_json()

    def run(self, incident_id: str):
        """Claim INCIDENT_ID and run it here; the incident afterwards."""
        self.engine.process(incident_id)
        self.engine.outbox.drain()
        return self.store.get(incident_id)

    def work(self) -> str | None:
        """Do what a worker does: claim the next claimable incident and run it; the incident id it held."""
        incident_id = self.engine.work_once()
        self.engine.outbox.drain()
        return incident_id

    def lineage(self, event=None) -> list[dict]:
        entries = self.state.lineage.read().entries
        return [e for e in entries if event is None or e["event"] == event]

    def metrics_text(self) -> str:
        return self.web.get("/metrics").get_data(as_text=True)

    def metric(self, name: str, **labels) -> float:
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return s.value
        raise KeyError((name, labels))

    def samples(self, name: str) -> dict[tuple, float]:
        """Every sample of NAME: sorted label items -> value."""
        return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(
            self.metrics_text()) for s in family.samples if s.name == name}

    def spans_by_name(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for span in self.spans.get_finished_spans():
            out.setdefault(span.name, []).append(span)
        return out

    def close(self):
        self.agents.release.set()
        if self.app is not None:
            shutdown(self.app)
