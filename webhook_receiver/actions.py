"""Running a playbook step: a configured HTTP call to an agent, with a timeout, retries and a recorded result."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Mapping

import requests

from autonomy.primitives import AUTHORIZATION_HEADER, IDEMPOTENCY_HEADER, meaning

from .playbooks import PlaybookSet, Step
from .retry_policy import RetryPolicy
from .templating import TemplateError, UnsafeTarget, action_url, render_args

RESERVED_NAMES = frozenset(("fleet", "autonomy-layer"))  # as the signal schema reserves them
NOT_IMPLEMENTED = 501  # the agent serves no such primitive: escalated at once, retrying cannot help
# A Retry-After longer than this is cut to it: a step holds a worker while it waits.
RETRY_AFTER_CAP_SECONDS = 30.0


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
    idempotency_key: str | None = None  # the same for every retry of this step
    meaning: str | None = None  # who was called and what was asked (autonomy.primitives)
    accepted: bool = False  # 202: the agent is still working on it; verification judges the outcome

    @property
    def not_implemented(self) -> bool:
        return self.status == NOT_IMPLEMENTED

    def as_dict(self) -> dict:
        return asdict(self)


def retry_after(reply: requests.Response) -> float | None:
    """The seconds an agent's Retry-After asks for (delta-seconds or an HTTP date), None if absent or unreadable."""
    value = reply.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


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

    def headers(self, target: str, key: str | None) -> dict[str, str]:
        """The token the target expects (if one is configured) and the step's idempotency key."""
        headers = {IDEMPOTENCY_HEADER: key} if key else {}
        token = self.playbooks.token_for(target)
        if token is not None:
            headers[AUTHORIZATION_HEADER] = f"Bearer {token.reveal()}"
        return headers

    def run(self, step: Step, agent: str, variables: Mapping[str, object],
            stop: threading.Event | None = None, key: str | None = None) -> StepResult:
        """Run STEP for AGENT under idempotency KEY; retries 429, 5xx (but 501) and transport errors with
        backoff, honouring Retry-After; never raises."""
        stop = stop or threading.Event()
        started = time.monotonic()
        said = meaning(step.action)
        try:
            target, url, body = self.prepare(step, agent, variables)
        except TemplateError as exc:
            # The data this step needs is absent (e.g. no directive to split): nothing to do here;
            # verification still judges whether the playbook worked.
            return StepResult(step.action, agent, True, None, 0, 0.0, f"skipped: {exc}", skipped=True, meaning=said)
        except (UnsafeTarget, KeyError) as exc:
            return StepResult(step.action, agent, False, None, 0, 0.0, f"{type(exc).__name__}: {exc}", meaning=said)
        method = self.playbooks.primitives[step.action].method
        headers = self.headers(target, key)
        policy: RetryPolicy = self.playbooks.retry
        attempts, status, error = 0, None, None
        while True:
            attempts += 1
            asked = None
            try:
                # Never followed: a redirect would carry the body (and, to the same host, the token) elsewhere.
                reply = self.session.request(method, url, json=body, headers=headers,
                                             timeout=self.playbooks.timeout_seconds, allow_redirects=False)
                status, error = reply.status_code, None
                if 200 <= status < 300:
                    return StepResult(step.action, target, True, status, attempts,
                                      round(time.monotonic() - started, 3), None, url, body=body,
                                      idempotency_key=key, meaning=said, accepted=status == 202)
                if status == NOT_IMPLEMENTED:
                    error = f"agent does not implement {step.action}"
                    break
                if 300 <= status < 400:
                    error = f"HTTP {status}: the agent redirected the action; redirects are not followed"
                    break
                error = f"HTTP {status}"
                if status < 500 and status != 429:
                    break  # the agent refused the request itself; repeating it cannot help
                asked = retry_after(reply)
            except requests.Timeout:
                status, error = None, f"timed out after {self.playbooks.timeout_seconds:g}s"
            except requests.RequestException as exc:
                status, error = None, f"unreachable: {type(exc).__name__}"
            policy = policy.increment()
            if policy.exhausted:
                break
            wait = policy.backoff(self.rng)
            if asked is not None:
                wait = max(wait, min(asked, RETRY_AFTER_CAP_SECONDS))
            if stop.wait(wait):
                break
        return StepResult(step.action, target, False, status, attempts, round(time.monotonic() - started, 3),
                          error, url, body=body, idempotency_key=key, meaning=said)
