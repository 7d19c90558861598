"""Running a playbook step: a configured HTTP call to an agent, with a timeout, retries and a recorded result."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Mapping

import requests

from .playbooks import PlaybookSet, Step
from .retry_policy import RetryPolicy

RESERVED_NAMES = frozenset(("fleet", "autonomy-layer"))  # as the signal schema reserves them
from .templating import TemplateError, UnsafeTarget, action_url, render_args


@dataclass(frozen=True)
class StepResult:
    """What one step did: where it went, how it answered, how long it took."""

    action: str
    target: str
    ok: bool
    status: int | None
    attempts: int
    duration_s: float
    error: str | None = None
    url: str | None = None
    skipped: bool = False
    body: object = None  # the rendered request body, as sent (values from templates; secrets only by name)

    def as_dict(self) -> dict:
        return asdict(self)


class ActionRunner:
    """Executes steps against the agents' action endpoints described in playbooks.yaml."""

    def __init__(self, playbooks: PlaybookSet, session: requests.Session | None = None,
                 rng: random.Random | None = None):
        self.playbooks = playbooks
        self.session = session or requests.Session()
        self.rng = rng or random.Random()

    def prepare(self, step: Step, agent: str, variables: Mapping[str, object]) -> tuple[str, str, dict]:
        """(target agent, URL, JSON body) of a step; TemplateError or UnsafeTarget if it cannot be built."""
        body = render_args(step.args_dict(), variables)
        target = body.get("agent", agent) if isinstance(body, dict) else agent
        if not isinstance(target, str):
            raise UnsafeTarget(f"step {step.action}: target agent is not a name")
        if target in RESERVED_NAMES:
            raise UnsafeTarget(f"step {step.action}: {target!r} is the layer's own name, not an agent; a step "
                               "for a fleet-wide incident must name the agent it acts on")
        primitive = self.playbooks.primitives[step.action]
        return target, action_url(self.playbooks.base_url_for(target), primitive.path, target), body

    def run(self, step: Step, agent: str, variables: Mapping[str, object],
            stop: threading.Event | None = None) -> StepResult:
        """Run STEP for AGENT; retries 5xx and transport errors with backoff; never raises."""
        stop = stop or threading.Event()
        started = time.monotonic()
        try:
            target, url, body = self.prepare(step, agent, variables)
        except TemplateError as exc:
            # The data this step needs is absent (e.g. no directive to split): nothing to do here;
            # verification still judges whether the playbook worked.
            return StepResult(step.action, agent, True, None, 0, 0.0, f"skipped: {exc}", skipped=True)
        except (UnsafeTarget, KeyError) as exc:
            return StepResult(step.action, agent, False, None, 0, 0.0, f"{type(exc).__name__}: {exc}")
        method = self.playbooks.primitives[step.action].method
        policy: RetryPolicy = self.playbooks.retry
        attempts, status, error = 0, None, None
        while True:
            attempts += 1
            try:
                reply = self.session.request(method, url, json=body, timeout=self.playbooks.timeout_seconds)
                status, error = reply.status_code, None
                if 200 <= status < 300:
                    return StepResult(step.action, target, True, status, attempts,
                                      round(time.monotonic() - started, 3), None, url, body=body)
                error = f"HTTP {status}"
                if status < 500 and status != 429:
                    break  # the agent refused the request itself; repeating it cannot help
            except requests.Timeout:
                status, error = None, f"timed out after {self.playbooks.timeout_seconds:g}s"
            except requests.RequestException as exc:
                status, error = None, f"unreachable: {type(exc).__name__}"
            policy = policy.increment()
            if policy.exhausted or stop.wait(policy.backoff(self.rng)):
                break
        return StepResult(step.action, target, False, status, attempts, round(time.monotonic() - started, 3),
                          error, url, body=body)
