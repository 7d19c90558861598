"""The conditions that opened an incident, re-checked now: the alert rules' own expressions, as Prometheus
evaluates them (read from its rules API, so they cannot drift from what fired)."""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from autonomy.vocabulary import Source

from .upstreams import PrometheusApi, UpstreamError, promql_alternatives, promql_string

CATALOG_TTL_SECONDS = 60.0  # rules change on a reload; an unknown alert name refreshes sooner
_MAX_INLINING = 8  # recording rules built on recording rules, this deep at most
NOT_IN_PROMETHEUS = "Prometheus has no alerting rule of that name"
GRAFANAS_RULE = ("Grafana's rule (Prometheus has no alerting rule of that name): its condition cannot be "
                 "re-evaluated on fresh samples")


def missing_rule(source: str) -> str:
    """Why an alert name Prometheus has no rule of cannot be re-checked, for an incident from SOURCE."""
    return GRAFANAS_RULE if source == Source.GRAFANA else NOT_IN_PROMETHEUS


@dataclass(frozen=True)
class AlertRule:
    """An alerting rule: its expression over raw samples (recording rules inlined), its static labels, and
    why it cannot be re-checked on fresh samples, if it cannot."""

    name: str
    expr: str
    labels: Mapping[str, str]
    problem: str | None = None

    def agent_of(self, row_labels: Mapping[str, str]) -> str | None:
        """Whose alert a result row is: a static `agent` label overrides the row's, as in Prometheus."""
        return self.labels.get("agent", row_labels.get("agent"))


def _uses(name: str, expr: str) -> list[re.Match]:
    return list(re.finditer(rf"(?<![A-Za-z0-9_:]){re.escape(name)}(?![A-Za-z0-9_:])", expr))


def inline_recordings(expr: str, recordings: Mapping[str, list[dict]]) -> tuple[str, str | None]:
    """EXPR with every recording rule it reads replaced by that rule's own expression, so that it reads only
    scraped samples, whose freshness the caller checks; (expr, problem) where it cannot be done safely."""
    for _ in range(_MAX_INLINING):
        used = [name for name in recordings if _uses(name, expr)]
        if not used:
            return expr, None
        for name in used:
            rules = recordings[name]
            if len(rules) != 1 or rules[0].get("labels"):
                return expr, f"it reads the recording rule {name}, which has several definitions or static labels"
            for match in reversed(_uses(name, expr)):
                after = expr[match.end():].lstrip()
                if after.startswith(("{", "[")) or re.match(r"(offset|@)\b", after) or after.startswith("@"):
                    return expr, f"it reads the recording rule {name} with matchers, a range or an offset"
                expr = expr[:match.start()] + f"({rules[0].get('query', '')})" + expr[match.end():]
    return expr, "its recording rules nest too deeply"


def catalog_from_groups(groups: Iterable[dict]) -> dict[str, AlertRule]:
    """Alerting rules by name, from the groups of /api/v1/rules."""
    recordings: dict[str, list[dict]] = {}
    alerts: dict[str, list[dict]] = {}
    for group in groups:
        for rule in group.get("rules") or []:
            if not isinstance(rule, dict) or not isinstance(rule.get("name"), str):
                continue
            (alerts if rule.get("type") == "alerting" else recordings).setdefault(rule["name"], []).append(rule)
    catalog = {}
    for name, rules in alerts.items():
        if len(rules) != 1:
            catalog[name] = AlertRule(name, "", {}, f"Prometheus has {len(rules)} alerting rules named {name}")
            continue
        expr, problem = inline_recordings(str(rules[0].get("query", "")), recordings)
        labels = {k: v for k, v in (rules[0].get("labels") or {}).items() if isinstance(v, str)}
        catalog[name] = AlertRule(name, expr, labels, problem)
    return catalog


class RuleCatalog:
    """Prometheus's alerting rules, read through its API and kept for a while; unknown names re-read it."""

    def __init__(self, prom: PrometheusApi, ttl: float = CATALOG_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.prom, self.ttl, self.clock = prom, ttl, clock
        self._lock = threading.Lock()
        self._rules: dict[str, AlertRule] = {}
        self._read_at: float | None = None

    def _refresh(self) -> None:
        self._rules = catalog_from_groups(self.prom.rules())
        self._read_at = self.clock()

    def rules(self, names: Iterable[str]) -> dict[str, AlertRule | None]:
        """The rule of each name (None: Prometheus has no such alerting rule); UpstreamError if unreachable."""
        names = set(names)
        with self._lock:
            now = self.clock()
            stale = self._read_at is None or now - self._read_at > self.ttl
            # An unknown name may be a rule added since the last read; re-read at most once a second for it.
            unknown = not names <= set(self._rules) and (self._read_at is None or now - self._read_at > 1.0)
            if stale or unknown:
                self._refresh()
            return {name: self._rules.get(name) for name in names}


# One agent series compared with a number (most per-agent alerts): its agents can be selected in the selector.
_ONE_SERIES = re.compile(r"\s*(autonomy_agent_[a-zA-Z0-9_:]*)(?:\{([^{}\"]*(?:\"(?:[^\"\\]|\\.)*\"[^{}\"]*)*)\})?"
                         r"\s*(==|!=|<=|>=|<|>)\s*(-?[0-9][0-9.eE+-]*)\s*")


def scoped(rule: AlertRule, agents: Iterable[str]) -> str:
    """RULE's expression answering only for AGENTS. A comparison of one agent series selects them (Prometheus
    reads only their series); any other expression is evaluated whole and filtered, so the answer does not grow
    with the fleet. A rule naming its agent in a static label (a fleet-wide one) is left whole."""
    agents = sorted(set(agents))
    if "agent" in rule.labels or not agents:
        return rule.expr
    one = _ONE_SERIES.fullmatch(rule.expr)
    if one and not re.search(r"(^|[,\s])agent\s*[=!]", one[2] or ""):
        matchers = ", ".join(m for m in ((one[2] or "").strip(), f"agent=~{promql_alternatives(agents)}") if m)
        return f"{one[1]}{{{matchers}}} {one[3]} {one[4]}"
    # A constant series per agent: the filter is exact, whatever series the agent has (an expired one none).
    wanted = " or ".join(f'label_replace(vector(1), "agent", {promql_string(a.replace("$", "$$"))}, "", "")'
                         for a in agents)
    return f"({rule.expr}) and on (agent) ({wanted})"


def still_true(prom: PrometheusApi, catalog: RuleCatalog, alertnames: Mapping[str, Iterable[str]],
               scope: Iterable[str] | None = None, missing: str = NOT_IN_PROMETHEUS) -> tuple[list[str], list[str]]:
    """Which of the alerts (agent -> alert names) still evaluate true now, and which cannot be re-checked.

    Each alert's expression is evaluated once, answering for the agents of SCOPE (default: those of
    ALERTNAMES; a poll of many incidents passes all of theirs, so that one query serves them all); an alert is
    still true for an agent when a result row belongs to that agent. Both lists name the alert, with the agent
    when there are several. MISSING says why a name Prometheus has no alerting rule of cannot be re-checked.
    """
    scope = sorted(set(alertnames) if scope is None else set(scope) | set(alertnames))
    by_name: dict[str, set[str]] = {}
    for agent, names in alertnames.items():
        for name in names:
            by_name.setdefault(name, set()).add(agent)
    several = len(alertnames) > 1
    label = (lambda name, agent: f"{name} ({agent})") if several else (lambda name, agent: name)
    true, unknown = [], []
    try:
        rules = catalog.rules(by_name)
    except UpstreamError as exc:
        return [], [f"{label(n, a)}: prometheus rules unreachable ({exc})" for n in sorted(by_name)
                    for a in sorted(by_name[n])]
    for name in sorted(by_name):
        rule, agents = rules[name], by_name[name]
        if rule is None or rule.problem:
            why = rule.problem if rule is not None else missing
            unknown += [f"{label(name, a)}: {why}" for a in sorted(agents)]
            continue
        rows = prom.query(scoped(rule, scope))
        holding = {rule.agent_of(row.get("metric", {})) for row in rows}
        true += [label(name, a) for a in sorted(agents & holding)]
    return true, unknown
