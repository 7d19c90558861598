"""The agent metric table: every series an agent's signal becomes, defined once for both renderers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from prometheus_client.utils import floatToGoString

from autonomy.exposition import label_value
from autonomy.signal_contract import ERROR_CODES, STATUSES, Signal

Sample = tuple[tuple[str, ...], float]


@dataclass(frozen=True)
class AgentMetric:
    """One metric family: name, Prometheus type, help, labels after `agent`, the one Signal field its samples
    depend on (besides the agent: its lines change only when that field does), and how a signal fills it."""

    name: str
    kind: str  # "gauge" or "stateset"
    help: str
    labels: tuple[str, ...]
    reads: str
    samples: Callable[[Signal], Iterable[Sample]]


def _gauge(name: str, help_text: str, reads: str) -> AgentMetric:
    """A gauge of the signal's field READS, no sample when it is not reported."""

    def samples(signal: Signal) -> Iterable[Sample]:
        value = getattr(signal, reads)
        return () if value is None else (((), float(value)),)
    return AgentMetric(name, "gauge", help_text, (), reads, samples)


def _ones(name: str, help_text: str, label: str, reads: str, many: bool = False) -> AgentMetric:
    """A gauge of 1 per item of the field READS (one item unless MANY), labelled LABEL."""

    def samples(signal: Signal) -> Iterable[Sample]:
        value = getattr(signal, reads)
        return tuple(((item,), 1.0) for item in (value if many else (value,)) if item is not None)
    return AgentMetric(name, "gauge", help_text, (label,), reads, samples)


AGENT_METRICS: tuple[AgentMetric, ...] = (
    AgentMetric("autonomy_agent_info", "gauge",
                "Always 1; carries the agent's priority domain.", ("domain",), "domain",
                lambda s: (((s.domain or "",), 1.0),)),
    AgentMetric("autonomy_agent_status", "stateset",
                "The agent's reported status: 1 for the current state.", ("autonomy_agent_status",), "status",
                lambda s: tuple(((state,), 1.0 if s.status == state else 0.0) for state in sorted(STATUSES))),
    _gauge("autonomy_agent_success_ratio",
           "Share of the agent's recent tasks that succeeded (0..1).", "success_ratio"),
    _gauge("autonomy_agent_alignment_ratio",
           "How well the agent's work aligns with its directives (0..1).", "alignment_ratio"),
    _gauge("autonomy_agent_backlog_age_seconds",
           "Age of the oldest item in the agent's backlog, in seconds.", "backlog_age_seconds"),
    _gauge("autonomy_agent_queue_depth",
           "Items waiting in the agent's queue (only when reported).", "queue_depth"),
    _gauge("autonomy_agent_cost_burn_dollars_per_hour",
           "The agent's current spend rate, in dollars per hour.", "cost_burn_dollars_per_hour"),
    _gauge("autonomy_agent_last_signal_timestamp_seconds",
           "Unix time of the agent's latest signal (its ts field).", "timestamp"),
    AgentMetric("autonomy_agent_error_code", "gauge",
                "1 for the error code the agent reports, 0 for the others.", ("code",), "error_code",
                lambda s: tuple(((code,), 1.0 if s.error_code == code else 0.0) for code in ERROR_CODES)),
    _ones("autonomy_agent_dependency",
          "1 for each agent or source this agent depends on.", "dependency", "dependencies", many=True),
    _ones("autonomy_agent_directive_claim",
          "1 for the directive the agent is working on.", "directive_id", "directive_id"),
    _ones("autonomy_agent_conflict",
          "1 for the conflict the agent reports.", "conflict_id", "conflict_id"),
    _gauge("autonomy_agent_open_conflicts",
           "Conflicts the agent reports as still open (only when reported).", "open_conflicts"),
    _gauge("autonomy_agent_last_task_succeeded",
           "1 if the agent's last task succeeded, 0 if not (only when reported).", "last_task_succeeded"),
    _gauge("autonomy_agent_inputs_valid",
           "1 if the agent's inputs validate, 0 if not (only when reported).", "inputs_valid"),
    _gauge("autonomy_agent_config_healthy",
           "1 if the agent's configuration and secrets are complete, 0 if not (only when reported).",
           "config_healthy"),
)
# Per metric: its label names with `agent` first, and the order prometheus_client writes them in (by name).
_LABELS = {m.name: (("agent",) + m.labels, sorted(range(len(m.labels) + 1), key=(("agent",) + m.labels).__getitem__))
           for m in AGENT_METRICS}


def family_header(metric: AgentMetric) -> str:
    """HELP and TYPE lines, as prometheus_client writes them in text format 0.0.4."""
    help_text = metric.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {metric.name} {help_text}\n# TYPE {metric.name} gauge\n"


def render_samples(metric: AgentMetric, signal: Signal, agent: str | None = None) -> str:
    """The sample lines of one agent for one metric, labels sorted by name as prometheus_client does (AGENT:
    the agent's name already escaped, when the caller renders several metrics of one signal)."""
    agent = label_value(signal.agent) if agent is None else agent
    if not metric.labels:  # most metrics: `agent` their only label, so one line at most
        for _, value in metric.samples(signal):
            return f'{metric.name}{{agent="{agent}"}} {floatToGoString(value)}\n'
        return ""
    names, order = _LABELS[metric.name]
    lines = []
    for extra, value in metric.samples(signal):
        values = (agent,) + tuple(label_value(v) for v in extra)
        labels = ",".join(f'{names[i]}="{values[i]}"' for i in order)
        lines.append(f"{metric.name}{{{labels}}} {floatToGoString(value)}\n")
    return "".join(lines)
