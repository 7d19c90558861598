"""The pack's twelve action primitives: who is called, what the call asks, how its answers are read."""
from __future__ import annotations

from dataclasses import dataclass

AUTHORIZATION_HEADER = "Authorization"  # "Bearer <token>": the receiver's token for the called agent
IDEMPOTENCY_HEADER = "Idempotency-Key"  # one per step of one attempt of one incident; a retry of the step reuses it
REPLAYED_HEADER = "Idempotent-Replayed"  # "true" on an answer replayed for a key already seen
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"
ACTION_PATH = "/agents/{agent}/actions/{primitive}"


def idempotency_key(incident_id: str, attempt: int, step: int) -> str:
    """The key of step STEP (0-based) of ATTEMPT of INCIDENT_ID: the same for every retry of that step, and for
    the step run again after a restart of the receiver (the agent answers it with what it did the first time)."""
    return f"{incident_id}:{attempt}:{step}"


@dataclass(frozen=True)
class PrimitiveMeaning:
    """One primitive: who receives it (`called`) and what it asks of that agent (`asks`)."""

    name: str
    called: str
    asks: str


PRIMITIVES: tuple[PrimitiveMeaning, ...] = (
    PrimitiveMeaning("applyPriorityRules", "the incident's agent (for a conflict: the claimant whose alert opened it, "
                     "once)", "adopt `order` (domains, highest priority first) as the priority order when directives "
                     "contend"),
    PrimitiveMeaning("reassignOverlaps", "the incident's agent (for a conflict: the claimant whose alert opened it, "
                     "once)", "settle directive `directiveId` under `policy`: keep it if you are `winner`, else give it "
                     "up; a coordinator of the directive's other holders has them give it up too"),
    PrimitiveMeaning("throttleAgent", "the agent named by `agent` (the conflict's loser, or the fleet's "
                     "lowest-priority spender)", "run at most `maxConcurrent` tasks at once for `minutes`"),
    PrimitiveMeaning("restartAgent", "the incident's agent",
                     "restart your worker (`mode` soft: finish or requeue the task in hand; hard: drop it)"),
    PrimitiveMeaning("retryLastTask", "the incident's agent",
                     "run your last failed task again, up to `max` times `backoffMs` apart"),
    PrimitiveMeaning("reallocateSlots", "the incident's agent (the receiver of the slots)",
                     "take `slots` worker slots from agent `from` (the donor, which is not called) into `to` (you)"),
    PrimitiveMeaning("splitDirective", "the incident's agent",
                     "split directive `directiveId` into parts sized by `ratio` and work them in parallel"),
    PrimitiveMeaning("refreshCache", "the incident's agent", "drop your cached inputs and read them afresh"),
    PrimitiveMeaning("refetchSource", "the incident's agent (the dependent, not the source)",
                     "fetch your inputs from `source` again"),
    PrimitiveMeaning("validateInputs", "the incident's agent", "check your current inputs and report inputsValid"),
    PrimitiveMeaning("checkSecrets", "the incident's agent",
                     "reload the secrets named in `required` and report the names still missing (never values)"),
    PrimitiveMeaning("schemaMigrateIfNeeded", "the incident's agent",
                     "apply pending schema migrations of your own store, if any"),
)
BY_NAME = {p.name: p for p in PRIMITIVES}


def meaning(primitive: str) -> str:
    """One line for the lineage: who was called and what was asked."""
    p = BY_NAME.get(primitive)
    return f"called: {p.called}; asks: {p.asks}" if p else "a primitive outside the pack's twelve"
