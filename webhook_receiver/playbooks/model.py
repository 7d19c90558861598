"""The playbook table's model (pack section 5): frozen, read-only once loaded."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

from autonomy.settings import Secret
from autonomy.vocabulary import AGENT_NAME, AGENT_NAME_RULE

from ..retry_policy import RetryPolicy
from ..templating import UnsafeTarget, action_url, template_roots


class PlaybookError(ValueError):
    """Every problem of a playbooks file, one `where: what` line each."""

    def __init__(self, errors: Iterable[str]):
        self.errors = tuple(errors)
        super().__init__("invalid playbooks:\n  " + "\n  ".join(self.errors))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, FrozenMap):
        return FrozenMap(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, FrozenMap):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class FrozenMap(Mapping):
    """A read-only, hashable mapping; nested dicts and lists are frozen too (lists become tuples)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping | Iterable = ()):
        self._data = {k: _freeze(v) for k, v in dict(data).items()}

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


_EMPTY = FrozenMap()


@dataclass(frozen=True)
class Primitive:
    name: str
    method: str
    path: str  # "/agents/{agent}/actions/..."; {agent} is the only variable


@dataclass(frozen=True)
class Step:
    action: str
    args: Mapping[str, Any] = _EMPTY  # read-only; templates unrendered
    high_risk: bool = False  # the receiver escalates instead of running it

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", self.args if isinstance(self.args, FrozenMap) else FrozenMap(self.args))

    def args_dict(self) -> dict:
        """A fresh, mutable deep copy of the (unrendered) args."""
        return _thaw(self.args)


@dataclass(frozen=True)
class Playbook:
    name: str
    classification: str
    labels: tuple[tuple[str, str], ...] = ()  # exact-value matchers; all must hold
    steps: tuple[Step, ...] = ()
    success_criteria: tuple[tuple[str, Any], ...] = ()
    increases_spend: bool = False

    @property
    def criteria(self) -> dict[str, Any]:
        return dict(self.success_criteria)

    @property
    def high_risk(self) -> bool:
        return any(step.high_risk for step in self.steps)

    @property
    def template_roots(self) -> frozenset[str]:
        """What its steps' templates name (`slotDonorAgent`, `context`, ...): all an attempt must read for it."""
        return frozenset().union(*(template_roots(step.args) for step in self.steps))

    def matches(self, classification: str, labels: Mapping[str, str] = _EMPTY) -> bool:
        return classification == self.classification and all(labels.get(k) == v for k, v in self.labels)


@dataclass(frozen=True)
class AgentEntry:
    domain: str
    base_url: str | None = None
    token: Secret | None = None  # the bearer token its action endpoints expect (read from tokenSecret)


@dataclass(frozen=True)
class RecommendedOption:
    name: str
    why: str


def step_target(args: Mapping[str, Any], incident_agent: str) -> Any:
    """The agent a step acts on: its rendered `agent` arg if it has one, else the incident's agent."""
    return args["agent"] if "agent" in args else incident_agent


@dataclass(frozen=True)
class PlaybookSet:
    playbooks: tuple[Playbook, ...]
    primitives: Mapping[str, Primitive]
    agents: Mapping[str, AgentEntry]
    default_base_url: str
    timeout_seconds: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    escalate_to: str = "CEO"
    recommended_options: tuple[RecommendedOption, ...] = ()
    token: Secret | None = None  # actions.tokenSecret: every agent's, unless its own entry names another

    def __post_init__(self) -> None:
        object.__setattr__(self, "playbooks", tuple(self.playbooks))
        object.__setattr__(self, "primitives", FrozenMap(self.primitives))
        object.__setattr__(self, "agents", FrozenMap(self.agents))
        object.__setattr__(self, "recommended_options", tuple(self.recommended_options))

    def select(self, classification: str, labels: Mapping[str, str] = _EMPTY) -> Playbook | None:
        """The first playbook of CLASSIFICATION whose label matchers all equal LABELS' values."""
        return next((p for p in self.playbooks if p.matches(classification, labels)), None)

    def domain_of(self, agent: str, signal_domain: str | None = None) -> str | None:
        """The agent's priority domain: this file's entry wins, else the domain its signal declares."""
        entry = self.agents.get(agent)
        return entry.domain if entry is not None else signal_domain

    def priority_rank(self, agent: str, priority: Sequence[str], signal_domain: str | None = None) -> int:
        """Index of the agent's domain in PRIORITY (0 = highest); unknown domains rank after all known."""
        domain = self.domain_of(agent, signal_domain)
        return list(priority).index(domain) if domain in priority else len(priority)

    def by_priority(self, agents: Iterable[str], priority: Sequence[str],
                    signal_domains: Mapping[str, str] = _EMPTY) -> list[str]:
        """AGENTS, highest priority first, ties by name."""
        return sorted(set(agents), key=lambda a: (self.priority_rank(a, priority, signal_domains.get(a)), a))

    def base_url_for(self, agent: str) -> str:
        entry = self.agents.get(agent)
        return entry.base_url if entry is not None and entry.base_url else self.default_base_url

    def token_for(self, agent: str) -> Secret | None:
        """The bearer token sent with AGENT's actions: its own, else the shared one, else none."""
        entry = self.agents.get(agent)
        return entry.token if entry is not None and entry.token is not None else self.token

    def url_for(self, action: str, agent: str) -> str:
        """The URL of ACTION for AGENT (KeyError for an unknown action, UnsafeTarget for a bad agent)."""
        if not isinstance(agent, str) or not AGENT_NAME.fullmatch(agent):
            raise UnsafeTarget(f"{agent!r} is not a valid agent name ({AGENT_NAME_RULE})")
        return action_url(self.base_url_for(agent), self.primitives[action].path, agent)
