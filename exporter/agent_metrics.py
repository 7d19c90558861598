"""The agent metric table: every series an agent's signal becomes, defined once for both renderers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from prometheus_client.utils import floatToGoString

from autonomy.signal_contract import ERROR_CODES, STATUSES, Signal

Sample = tuple[tuple[str, ...], float]


@dataclass(frozen=True)
class AgentMetric:
    """One metric family: name, Prometheus type, help, labels after `agent`, and how a signal fills it."""

    name: str
    kind: str  # "gauge" or "stateset"
    help: str
    labels: tuple[str, ...]
    samples: Callable[[Signal], Iterable[Sample]]


def _value(get: Callable[[Signal], float | int | bool | None]) -> Callable[[Signal], Iterable[Sample]]:
    def samples(signal: Signal) -> Iterable[Sample]:
        value = get(signal)
        return () if value is None else (((), float(value)),)
    return samples


def _ones(get: Callable[[Signal], Iterable[str | None]]) -> Callable[[Signal], Iterable[Sample]]:
    def samples(signal: Signal) -> Iterable[Sample]:
        return tuple(((item,), 1.0) for item in get(signal) if item is not None)
    return samples


AGENT_METRICS: tuple[AgentMetric, ...] = (
    AgentMetric("autonomy_agent_info", "gauge",
                "Always 1; carries the agent's priority domain.", ("domain",),
                lambda s: (((s.domain or "",), 1.0),)),
    AgentMetric("autonomy_agent_status", "stateset",
                "The agent's reported status: 1 for the current state.", ("autonomy_agent_status",),
                lambda s: tuple(((state,), 1.0 if s.status == state else 0.0) for state in sorted(STATUSES))),
    AgentMetric("autonomy_agent_success_ratio", "gauge",
                "Share of the agent's recent tasks that succeeded (0..1).", (),
                _value(lambda s: s.success_ratio)),
    AgentMetric("autonomy_agent_alignment_ratio", "gauge",
                "How well the agent's work aligns with its directives (0..1).", (),
                _value(lambda s: s.alignment_ratio)),
    AgentMetric("autonomy_agent_backlog_age_seconds", "gauge",
                "Age of the oldest item in the agent's backlog, in seconds.", (),
                _value(lambda s: s.backlog_age_seconds)),
    AgentMetric("autonomy_agent_queue_depth", "gauge",
                "Items waiting in the agent's queue (only when reported).", (),
                _value(lambda s: s.queue_depth)),
    AgentMetric("autonomy_agent_cost_burn_dollars_per_hour", "gauge",
                "The agent's current spend rate, in dollars per hour.", (),
                _value(lambda s: s.cost_burn_dollars_per_hour)),
    AgentMetric("autonomy_agent_last_signal_timestamp_seconds", "gauge",
                "Unix time of the agent's latest signal (its ts field).", (),
                _value(lambda s: s.timestamp)),
    AgentMetric("autonomy_agent_error_code", "gauge",
                "1 for the error code the agent reports, 0 for the others.", ("code",),
                lambda s: tuple(((code,), 1.0 if s.error_code == code else 0.0) for code in ERROR_CODES)),
    AgentMetric("autonomy_agent_dependency", "gauge",
                "1 for each agent or source this agent depends on.", ("dependency",),
                _ones(lambda s: s.dependencies)),
    AgentMetric("autonomy_agent_directive_claim", "gauge",
                "1 for the directive the agent is working on.", ("directive_id",),
                _ones(lambda s: (s.directive_id,))),
    AgentMetric("autonomy_agent_conflict", "gauge",
                "1 for the conflict the agent reports.", ("conflict_id",),
                _ones(lambda s: (s.conflict_id,))),
    AgentMetric("autonomy_agent_open_conflicts", "gauge",
                "Conflicts the agent reports as still open (only when reported).", (),
                _value(lambda s: s.open_conflicts)),
    AgentMetric("autonomy_agent_last_task_succeeded", "gauge",
                "1 if the agent's last task succeeded, 0 if not (only when reported).", (),
                _value(lambda s: s.last_task_succeeded)),
    AgentMetric("autonomy_agent_inputs_valid", "gauge",
                "1 if the agent's inputs validate, 0 if not (only when reported).", (),
                _value(lambda s: s.inputs_valid)),
    AgentMetric("autonomy_agent_config_healthy", "gauge",
                "1 if the agent's configuration and secrets are complete, 0 if not (only when reported).", (),
                _value(lambda s: s.config_healthy)),
)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def family_header(metric: AgentMetric) -> str:
    """HELP and TYPE lines, as prometheus_client writes them in text format 0.0.4."""
    help_text = metric.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {metric.name} {help_text}\n# TYPE {metric.name} gauge\n"


def render_samples(metric: AgentMetric, signal: Signal) -> str:
    """The sample lines of one agent for one metric, labels sorted by name as prometheus_client does."""
    names = ("agent",) + metric.labels
    order = sorted(range(len(names)), key=names.__getitem__)
    lines = []
    for extra, value in metric.samples(signal):
        values = (signal.agent,) + extra
        labels = ",".join(f'{names[i]}="{_escape(values[i])}"' for i in order)
        lines.append(f"{metric.name}{{{labels}}} {floatToGoString(value)}\n")
    return "".join(lines)
