"""The soak's week of faults: a pure function of the seed (the same seed, the same schedule)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .fleet import DEMO_PRIORITY

DAY = 86_400.0
HOUR = 3_600.0
DEFAULT_AGENTS = ("CEO", "CRO", "CMO", "COO", "Content", "MarketIntel")
CANARY = ("Content", "CMO")  # pack section 11: the first stage's agents
EPISODES_PER_DAY = 12  # with one to three incidents each, a default week is on the order of 100-200 incidents
# What each shape of episode exercises; the weights give the mix of a week after the first of each.
SHAPES = {
    "single": 30, "unfixable": 10, "two_agents": 8, "two_faults_one_agent": 6, "during_remediation": 8,
    "flapping": 5, "self_clearing": 5, "silent": 5, "dependency": 6, "budget": 4, "silence": 4,
    "kill_switch": 3, "receiver_restart": 2,
}
FIXABLE_KINDS = ("timeout", "overlap", "missing-secret", "backlog")  # one agent's own fault, any agent
UNFIXABLE_KINDS = ("timeout", "missing-secret", "overlap")  # the layer's playbook cannot clear these (sim)


@dataclass(frozen=True)
class AgentRole:
    """An agent of the soak's fleet: its domain, directive, spend and the agents it depends on."""

    name: str
    domain: str
    directive: str | None
    cost: float
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fault:
    """A fault AT simulated seconds into its episode. CLEARS_AFTER: it heals by itself that long after it
    began; RETURNS_AFTER: it comes back that long after it first ended (a flap)."""

    at: float
    agent: str
    kind: str
    fixable: bool = True
    clears_after: float | None = None
    returns_after: float | None = None


@dataclass(frozen=True)
class Operation:
    """What a person does AT simulated seconds into an episode, for LASTS seconds: `silence` (AGENT),
    `kill_switch` (remediation off), `receiver_restart`."""

    at: float
    kind: str
    agent: str | None = None
    lasts: float = 0.0


@dataclass(frozen=True)
class Episode:
    """Faults close together in time, starting STARTS simulated seconds into the week."""

    number: int
    starts: float
    shape: str
    faults: tuple[Fault, ...]
    operations: tuple[Operation, ...] = ()

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.agent for f in self.faults))


@dataclass(frozen=True)
class Stage:
    """A rollout stage from AT simulated seconds: the agents remediated (None: all) and the enabled classes."""

    at: float
    name: str
    agents: tuple[str, ...] | None
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Schedule:
    seed: int
    days: float
    roles: tuple[AgentRole, ...]
    episodes: tuple[Episode, ...]
    stages: tuple[Stage, ...] = field(default=())

    @property
    def span(self) -> float:
        return self.days * DAY


def roster(agents: int = 6) -> tuple[AgentRole, ...]:
    """The demo's six agents, then AGENTS - 6 more across the domains, in dependency chains (a Data source, a
    Content agent reading it, a Marketing agent reading that); extra agents spend little, so the fleet stays
    under the budget cap until a spike."""
    roles = [AgentRole("CEO", "Executive", "D-EXEC-1", 0.1), AgentRole("CRO", "Revenue", "D-REV-1", 0.1),
             AgentRole("CMO", "Marketing", "D-MKT-1", 0.1), AgentRole("COO", "Operations", "D-OPS-1", 0.1),
             AgentRole("Content", "Content", "D-CNT-1", 0.1, ("MarketIntel",)),
             AgentRole("MarketIntel", "Data", None, 0.0)]
    domains = ("Data", "Content", "Marketing", "Revenue", "Operations")
    for n in range(len(roles), agents):
        domain, chain = domains[n % len(domains)], n // len(domains)
        depends = {"Content": (f"Data{chain:02d}",), "Marketing": (f"Content{chain:02d}",)}.get(domain, ())
        roles.append(AgentRole(f"{domain}{chain:02d}", domain, None if domain == "Data" else f"D-{domain[:3].upper()}-{n}",
                               0.002, tuple(d for d in depends if any(r.name == d for r in roles))))
    return tuple(roles[:agents])


def _sources(roles) -> list[str]:
    return [r.name for r in roles if any(r.name in o.dependencies for o in roles)]


def _leaves(roles) -> list[str]:
    """Agents nobody depends on (a source's faults are the dependency episodes')."""
    sources = set(_sources(roles))
    return [r.name for r in roles if r.name not in sources]


def _lowest_spenders(roles) -> list[str]:
    """The agents of the lowest-priority domain (DEMO_PRIORITY) that spend: whom a budget breach throttles."""
    order = DEMO_PRIORITY.split(",")
    spending = [r for r in roles if r.cost > 0]
    domain = max((r.domain for r in spending), key=order.index)
    return [r.name for r in spending if r.domain == domain]


def _episode(rng: random.Random, number: int, starts: float, shape: str, roles) -> Episode:
    leaves, sources = _leaves(roles), _sources(roles)
    a, b = rng.sample(leaves, 2)

    revenue = {r.name for r in roles if r.domain == "Revenue"}

    def one(agent, **kw) -> Fault:
        kind = kw.pop("kind", None) or rng.choice(FIXABLE_KINDS)
        if kind == "overlap" and agent in revenue:
            # The fleet's overlap takes a Revenue agent's directive: a Revenue agent taking it would be a conflict
            # within one domain, which the priority order does not decide and the layer rightly leaves to a person.
            agent = rng.choice([a for a in leaves if a not in revenue])
        return Fault(kw.pop("at", 0.0), agent, kind, **kw)
    faults: tuple[Fault, ...]
    operations: tuple[Operation, ...] = ()
    if shape == "single":
        faults = (one(a),)
    elif shape == "unfixable":
        faults = (one(a, kind=rng.choice(UNFIXABLE_KINDS), fixable=False),)
    elif shape == "two_agents":
        faults = (one(a), one(b, at=rng.uniform(0, 10)))
    elif shape == "two_faults_one_agent":
        faults = (one(a, kind="timeout"), one(a, kind="backlog", at=rng.uniform(0, 20)))
    elif shape == "during_remediation":  # lands while the first agent's attempt runs or is being verified
        faults = (one(a, kind="timeout"), one(b, at=rng.uniform(40, 70)))
    elif shape == "flapping":  # clears (fixed by the layer) and comes back within the reopen window
        faults = (one(a, kind="timeout", returns_after=rng.uniform(30, 150)),)
    elif shape == "self_clearing":  # heals by itself around the time the layer could act
        faults = (one(a, kind="timeout", clears_after=rng.uniform(35, 90)),)
    elif shape == "silent":
        faults = (one(a, kind="silent"),)
    elif shape == "dependency":
        faults = (one(rng.choice(sources), kind="source-down"),)
    elif shape == "budget":  # ThrottleForBudget throttles the lowest-priority spender: fixable only if that is it
        lowest = _lowest_spenders(roles)
        spender = rng.choice(lowest) if rng.random() < 0.7 else rng.choice([r.name for r in roles if r.name not in lowest])
        faults = (one(spender, kind="cost-spike", fixable=spender in lowest),)
    elif shape == "silence":  # an SRE silences the agent in the middle of its fault, then fixes it by hand
        faults = (one(a, kind="timeout", fixable=False),)
        operations = (Operation(rng.uniform(5, 20), "silence", a, lasts=600.0),)
    elif shape == "kill_switch":
        faults = (one(a, at=30.0), one(b, at=rng.uniform(30, 60)))
        operations = (Operation(0.0, "kill_switch", lasts=rng.uniform(300, 600)),)
    elif shape == "receiver_restart":  # the receiver restarts while the attempt runs or waits for its verdict
        faults = (one(a, kind="timeout"),)
        operations = (Operation(rng.uniform(40, 60), "receiver_restart"),)
    else:
        raise ValueError(f"unknown episode shape {shape!r}")
    return Episode(number, starts, shape, faults, operations)


def rollout_plan(days: float) -> tuple[Stage, ...]:
    """Pack section 11: the canary (Content, CMO) for the first hour without capacity and budget rules, then
    every agent, then capacity and budget rules from the second day (or the last quarter of a shorter run)."""
    others = ("TRANSIENT", "CONFLICT", "DATA_DEP", "CONFIG")
    return (Stage(0.0, "canary", CANARY, others), Stage(HOUR, "expanded", None, others),
            Stage(min(DAY, days * DAY * 0.75), "capacity", None, others + ("CAPACITY",)))


def schedule(seed: int, days: float = 7.0, agents: int = 6) -> Schedule:
    """The week's episodes: every shape once (in an order drawn from SEED), then a weighted draw, at sorted
    random moments (three in the canary's hour); the same SEED, DAYS and AGENTS give the same schedule."""
    if agents < 6:
        raise ValueError(f"--agents must be at least 6 (the demo's fleet), got {agents}")
    if days <= 0:
        raise ValueError(f"--days must be positive, got {days}")
    rng = random.Random(seed)
    roles = roster(agents)
    count = max(len(SHAPES), round(EPISODES_PER_DAY * days))
    shapes = list(SHAPES)
    rng.shuffle(shapes)
    shapes += rng.choices(list(SHAPES), weights=list(SHAPES.values()), k=count - len(shapes))
    span = days * DAY
    first = sorted(rng.uniform(0, HOUR * 0.8) for _ in range(3))
    moments = first + sorted(rng.uniform(HOUR, span - HOUR) for _ in range(count - len(first)))
    episodes = tuple(_episode(rng, n, moments[n], shape, roles) for n, shape in enumerate(shapes))
    return Schedule(seed, days, roles, episodes, rollout_plan(days))
