"""The staged rollout (pack section 11): which agents and which classes the layer remediates, and its transitions.

Pure: a change is computed here from the current value and the request; the engine stores it, writes its line
and resumes what a widening admits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from autonomy.vocabulary import AGENT_NAME, AGENT_NAME_RULE, IncidentClass

EVERY = "*"
CLASSES: tuple[str, ...] = tuple(str(c) for c in IncidentClass)
RESERVED = ("fleet", "autonomy-layer")  # as the signal contract reserves them; the fleet follows the classes only
FLEET = "fleet"
MAX_REASON = 500


@dataclass(frozen=True)
class Rollout:
    """The agents remediated (None: every agent) and the classifications enabled; who changed it why, when."""

    agents: tuple[str, ...] | None = None
    classes: tuple[str, ...] = CLASSES
    reason: str | None = None
    changed_at: float | None = None

    def outside(self, agents: Iterable[str]) -> list[str]:
        """The AGENTS the rollout does not admit (the fleet's own incidents are admitted by their class)."""
        return [a for a in agents if self.agents is not None and a != FLEET and a not in self.agents]

    def admits(self, agents: Iterable[str], classification: str | None) -> bool:
        return not self.outside(agents) and (classification is None or classification in self.classes)

    def as_dict(self) -> dict:
        """As the API answers and the store keeps it: every agent is ["*"]."""
        return {"agents": list(self.agents) if self.agents is not None else [EVERY], "classes": list(self.classes),
                "reason": self.reason, "changed_at": self.changed_at}


def from_dict(doc: dict) -> Rollout:
    agents = doc.get("agents")
    return Rollout(None if agents in (None, [EVERY]) else tuple(agents), tuple(doc.get("classes", CLASSES)),
                   doc.get("reason"), doc.get("changed_at"))


def initial(canary_agents: Sequence[str]) -> Rollout:
    """The value before anyone set one: AUTOREM_CANARY_AGENTS (empty: every agent), every class."""
    return Rollout(tuple(canary_agents) or None, CLASSES, None, None)


class RolloutError(ValueError):
    """A change that cannot be made; `errors` names every problem, one per field."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def _names(field: str, value: object, most: int, errors: list[str]) -> list[str] | None:
    """VALUE as a list of strings, or None after naming what is wrong with it."""
    if value is None:
        errors.append(f"{field}: is required, a list of names ([\"*\"]: every one)")
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        errors.append(f"{field}: must be a list of strings")
        return None
    if len(value) > most:
        errors.append(f"{field}: {len(value)} names is over {most}" + (
            "; use [\"*\"] for every agent" if field == "agents" else ""))
        return None
    twice = sorted({n for n in value if value.count(n) > 1})
    if twice:
        errors.append(f"{field}: lists {', '.join(twice)} twice")
    if EVERY in value and len(value) > 1:
        errors.append(f"{field}: \"*\" stands alone: [\"*\"] is every one")
    return list(value)


def _agents(value: object, max_agents: int, errors: list[str]) -> tuple[str, ...] | None:
    names = _names("agents", value, max_agents, errors)
    if names is None or names == [EVERY]:
        return None
    for name in names:
        if name in RESERVED:
            errors.append(f"agents: {name!r} is reserved for the layer's own alerts (the fleet's incidents "
                          "follow the classes)")
        elif name != EVERY and not AGENT_NAME.fullmatch(name):
            errors.append(f"agents: {name!r} is not an agent name ({AGENT_NAME_RULE})")
    return tuple(names)


def _classes(value: object, errors: list[str]) -> tuple[str, ...]:
    names = _names("classes", value, len(CLASSES), errors)
    if names is None or names == [EVERY]:
        return CLASSES
    errors += [f"classes: {n!r} is not a class ({', '.join(CLASSES)}, or [\"*\"] for all)"
               for n in names if n not in CLASSES and n != EVERY]
    return tuple(c for c in CLASSES if c in names)  # the vocabulary's order, whatever the request's


def _reason(reason: object, errors: list[str]) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not isinstance(reason, str):
        errors.append("reason: is required, a string: say why the rollout changes")
    elif not text:
        errors.append("reason: must not be empty: say why the rollout changes")
    elif len(text) > MAX_REASON:
        errors.append(f"reason: {len(text)} characters is over {MAX_REASON}")
    return text


def set_rollout(current: Rollout, agents: object, classes: object, reason: object, now: float,
                max_agents: int = 10_000) -> Rollout:
    """The rollout replaced by AGENTS (["*"]: every agent) and CLASSES (["*"]: all); RolloutError names every
    problem (at least one agent and one class: stopping everything is the kill switch's job)."""
    errors: list[str] = []
    if agents in ([], ()):
        errors.append("agents: list at least one agent, or [\"*\"] for every agent (the kill switch stops all)")
    if classes in ([], ()):
        errors.append("classes: list at least one class, or [\"*\"] for all (the kill switch stops all)")
    new_agents = _agents(agents, max_agents, errors)
    new_classes = _classes(classes, errors)
    text = _reason(reason, errors)
    if errors:
        raise RolloutError(errors)
    return Rollout(new_agents, new_classes, text, now)


def expand(current: Rollout, agents: object = (), classes: object = (), reason: object = "",
           now: float = 0.0, max_agents: int = 10_000) -> Rollout:
    """CURRENT with AGENTS (["*"]: every agent) and CLASSES (["*"]: all) added; it never narrows."""
    errors: list[str] = []
    if agents in ([], ()) and classes in ([], ()):
        errors.append("agents, classes: nothing to add: give agents, classes or both")
    added = _agents(agents, max_agents, errors)
    wanted = set(_classes(classes, errors))
    text = _reason(reason, errors)
    if added is None or current.agents is None:
        new_agents = None
    else:
        new_agents = current.agents + tuple(a for a in dict.fromkeys(added) if a not in current.agents)
        if len(new_agents) > max_agents:
            errors.append(f"agents: the rollout would list {len(new_agents)} agents, over AUTOREM_MAX_AGENTS "
                          f"({max_agents}); use [\"*\"] for every agent")
    if errors:
        raise RolloutError(errors)
    return Rollout(new_agents, tuple(c for c in CLASSES if c in wanted or c in current.classes), text, now)


def widens(old: Rollout, new: Rollout) -> bool:
    """Whether NEW admits something OLD did not (held incidents may then be resumed)."""
    more_agents = old.agents is not None and (new.agents is None or not set(new.agents) <= set(old.agents))
    return more_agents or not set(new.classes) <= set(old.classes)
