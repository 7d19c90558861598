"""Validation of a parsed playbooks document into a PlaybookSet: every problem at once, each naming where."""
from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping, Sequence

from autonomy.settings import Secret, read_secret
from autonomy.vocabulary import AGENT_NAME, AGENT_NAME_RULE, IncidentClass

from ..criteria import CRITERIA
from ..retry_policy import RetryPolicy
from ..templating import base_url_problem, check_templates, path_template_problems
from .model import AgentEntry, Playbook, PlaybookError, PlaybookSet, Primitive, RecommendedOption, Step

API_VERSION = "autonomy-layer/v1"
KIND = "PlaybookSet"
CLASSIFICATIONS = tuple(c.value for c in IncidentClass)  # plain strings: they are written back into YAML
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


def _join(where: str, key: Any) -> str:
    if isinstance(key, str) and _LABEL.fullmatch(key):
        return f"{where}.{key}" if where else key
    return f"{where}[{key!r}]"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__)


class _Checker:
    def __init__(self, env: Mapping[str, str] | None) -> None:
        self.errors: list[str] = []
        self.env = env  # None: the token secrets are checked by name only (nothing will be sent)

    def err(self, where: str, message: str) -> None:
        self.errors.append(f"{where or '(root)'}: {message}")

    def mapping(self, value: Any, where: str, required: Sequence[str] = (), optional: Sequence[str] = (),
                any_keys: bool = False) -> dict:
        if not isinstance(value, dict):
            self.err(where, f"must be a mapping, got {_kind(value)}")
            return {}
        for key in value:
            if not any_keys and key not in required and key not in optional:
                self.err(where, f"unknown key {key!r}")
        for key in required:
            if key not in value:
                self.err(_join(where, key), "is required")
        return value

    def name(self, value: Any, where: str, what: str) -> bool:
        if isinstance(value, str) and AGENT_NAME.fullmatch(value):
            return True
        self.err(where, f"{value!r} is not a valid {what} ({AGENT_NAME_RULE})")
        return False

    def number(self, value: Any, where: str, low: float, high: float | None = None, above: bool = False) -> bool:
        if _is_number(value) and (value > low if above else value >= low) and (high is None or value <= high):
            return True
        rule = f"from {low:g} to {high:g}" if high is not None else f"{'above' if above else 'of at least'} {low:g}"
        self.err(where, f"must be a number {rule}, got {value!r}")
        return False

    def flag(self, value: Any, where: str) -> bool:
        """True if VALUE is a boolean (whichever)."""
        if isinstance(value, bool):
            return True
        self.err(where, f"must be true or false, got {value!r}")
        return False

    def optional_flag(self, m: dict, key: str, where: str) -> bool:
        return key in m and self.flag(m[key], _join(where, key)) and m[key]

    def base_url(self, value: Any, where: str) -> str | None:
        problem = base_url_problem(value)
        if problem:
            self.err(where, problem)
            return None
        return value.rstrip("/")

    def token(self, m: dict, where: str) -> Secret | None:
        """The secret M's `tokenSecret` names, read from the environment (NAME, or the file NAME_FILE names)."""
        if "tokenSecret" not in m:
            return None
        name, where = m["tokenSecret"], f"{where}.tokenSecret"
        if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
            self.err(where, f"{name!r} is not an environment variable name (A-Z, 0-9, _)")
            return None
        if self.env is None:
            return None
        try:
            secret = read_secret(name, self.env)
        except ValueError as exc:
            self.err(where, f"{name}: {exc}")
            return None
        if secret is None:
            self.err(where, f"{name} is not set (nor {name}_FILE): the agents expect this token with every action")
        return secret

    def agents(self, value: Any) -> dict[str, AgentEntry]:
        out = {}
        for agent, entry in self.mapping(value, "agents", any_keys=True).items():
            where = _join("agents", agent)
            self.name(agent, where, "agent name")
            entry = self.mapping(entry, where, required=("domain",), optional=("baseUrl", "tokenSecret"))
            if "domain" in entry:
                self.name(entry["domain"], f"{where}.domain", "domain name")
            base = self.base_url(entry["baseUrl"], f"{where}.baseUrl") if "baseUrl" in entry else None
            out[agent] = AgentEntry(entry.get("domain"), base, self.token(entry, where))
        return out

    def actions(self, value: Any, override: str | None) -> tuple[dict[str, Primitive] | None, str, float, RetryPolicy]:
        a = self.mapping(value, "actions", required=("primitives",),
                         optional=("baseUrl", "timeoutSeconds", "retry", "tokenSecret"))
        base = self.base_url(a["baseUrl"], "actions.baseUrl") if "baseUrl" in a else None
        if override:
            base = self.base_url(override, "AUTOREM_ACTIONS_BASE_URL")
        elif "baseUrl" not in a and isinstance(value, dict):
            self.err("actions.baseUrl", "is required (or set AUTOREM_ACTIONS_BASE_URL)")
        timeout = a.get("timeoutSeconds", 5.0)
        self.number(timeout, "actions.timeoutSeconds", 0, above=True)
        retry = RetryPolicy()
        if "retry" in a:
            keys = {"attempts": "attempts", "backoffSeconds": "backoff_seconds",
                    "maxBackoffSeconds": "max_backoff_seconds", "jitter": "jitter"}
            r = self.mapping(a["retry"], "actions.retry", optional=tuple(keys))
            try:
                retry = RetryPolicy(**{keys[k]: v for k, v in r.items() if k in keys})
            except ValueError as exc:
                self.err("actions.retry", str(exc))
        if "primitives" not in a:
            return None, base, timeout, retry
        primitives = {}
        for name, spec in self.mapping(a["primitives"], "actions.primitives", any_keys=True).items():
            where = _join("actions.primitives", name)
            if not isinstance(name, str) or not _LABEL.fullmatch(name):
                self.err(where, f"{name!r} is not a valid action name")
            spec = self.mapping(spec, where, required=("method", "path"))
            if "method" in spec and spec["method"] not in METHODS:
                self.err(f"{where}.method", f"{spec['method']!r} is not one of {', '.join(METHODS)}")
            for problem in path_template_problems(spec["path"]) if "path" in spec else ():
                self.err(f"{where}.path", problem)
            primitives[name] = Primitive(name, spec.get("method"), spec.get("path"))
        if not primitives and isinstance(a["primitives"], dict):
            self.err("actions.primitives", "must declare at least one action")
        return primitives, base, timeout, retry

    def escalation(self, value: Any) -> tuple[str, tuple[RecommendedOption, ...]]:
        e = self.mapping(value, "escalation", required=("to",), optional=("recommendedOptions",))
        if "to" in e:
            self.name(e["to"], "escalation.to", "agent name")
        options = []
        raw = e.get("recommendedOptions", [])
        if not isinstance(raw, list):
            self.err("escalation.recommendedOptions", f"must be a list, got {_kind(raw)}")
            raw = []
        for i, option in enumerate(raw):
            where = f"escalation.recommendedOptions[{i}]"
            option = self.mapping(option, where, required=("name", "why"))
            for key in ("name", "why"):
                if key in option and not (isinstance(option[key], str) and option[key].strip()):
                    self.err(f"{where}.{key}", "must be a non-empty string")
            options.append(RecommendedOption(option.get("name"), option.get("why")))
        return e.get("to", "CEO"), tuple(options)

    def step(self, value: Any, where: str, primitives: Mapping[str, Primitive] | None) -> Step:
        s = self.mapping(value, where, required=("do",), optional=("args", "highRisk"))
        action = s.get("do")
        if "do" in s and not isinstance(action, str):
            self.err(f"{where}.do", f"must be an action name, got {_kind(action)}")
        elif primitives is not None and "do" in s and action not in primitives:
            self.err(f"{where}.do", f"unknown action {action!r}")
        args = s.get("args") if s.get("args") is not None else {}
        if not isinstance(args, dict):
            self.err(f"{where}.args", f"must be a mapping, got {_kind(args)}")
            args = {}
        template_errors = check_templates(args, f"{where}.args")
        self.errors.extend(template_errors)
        agent = args.get("agent")
        if "agent" in args and not template_errors and not (isinstance(agent, str) and "{{" in agent):
            self.name(agent, f"{where}.args.agent", "agent name or template")
        high_risk = self.optional_flag(s, "highRisk", where)
        return Step(action if isinstance(action, str) else "", args if not template_errors else {}, high_risk)

    def criteria(self, value: Any, where: str) -> tuple[tuple[str, Any], ...]:
        c = self.mapping(value, where, any_keys=True)
        if isinstance(value, dict) and not value:
            self.err(where, "must name at least one criterion")
        out = []
        for key, expected in c.items():
            if key not in CRITERIA:
                self.err(_join(where, key), f"unknown criterion {key!r}")
                continue
            criterion = CRITERIA[key]
            kind, low, high = criterion.kind, criterion.low, criterion.high
            if kind == "bool" and self.flag(expected, _join(where, key)) \
                    or kind == "number" and self.number(expected, _join(where, key), low, high):
                out.append((key, expected))
        return tuple(out)

    def playbooks(self, value: Any, primitives: Mapping[str, Primitive] | None) -> list[Playbook]:
        if not isinstance(value, list):
            self.err("playbooks", f"must be a list of playbooks, got {_kind(value)}")
            return []
        out: list[Playbook] = []
        names: dict[str, int] = {}
        routes: list[tuple[int, str, str, frozenset]] = []  # index, name, class, label matchers
        for i, raw in enumerate(value):
            where = f"playbooks[{i}]"
            p = self.mapping(raw, where, required=("name", "match", "steps", "successCriteria"),
                             optional=("increasesSpend",))
            name = p.get("name")
            if "name" in p and self.name(name, f"{where}.name", "playbook name"):
                if name in names:
                    self.err(f"{where}.name", f"duplicate name {name!r} (also playbooks[{names[name]}])")
                names.setdefault(name, i)
            m = self.mapping(p["match"], f"{where}.match", required=("classification",),
                             optional=("labels",)) if "match" in p else {}
            cls = m.get("classification")
            if "classification" in m and cls not in CLASSIFICATIONS:
                self.err(f"{where}.match.classification",
                         f"unknown class {cls!r} (one of {', '.join(CLASSIFICATIONS)})")
            labels, labels_ok = {}, True
            if "labels" in m:
                labels = self.mapping(m["labels"], f"{where}.match.labels", any_keys=True)
                for key, val in labels.items():
                    if not (isinstance(key, str) and _LABEL.fullmatch(key)):
                        self.err(f"{where}.match.labels", f"{key!r} is not a valid label name")
                        labels_ok = False
                    elif not isinstance(val, str):
                        self.err(_join(f"{where}.match.labels", key), f"must be a string, got {val!r} (quote it)")
                        labels_ok = False
            if cls in CLASSIFICATIONS and labels_ok and isinstance(m.get("labels", {}), dict):
                routes.append((i, name, cls, frozenset(labels.items())))
            steps = p.get("steps")
            if "steps" in p and not isinstance(steps, list):
                self.err(f"{where}.steps", f"must be a list of steps, got {_kind(steps)}")
                steps = []
            elif steps == []:
                self.err(f"{where}.steps", "must list at least one step")
            built = tuple(self.step(s, f"{where}.steps[{j}]", primitives) for j, s in enumerate(steps or ()))
            criteria = self.criteria(p["successCriteria"], f"{where}.successCriteria") \
                if "successCriteria" in p else ()
            spend = self.optional_flag(p, "increasesSpend", where)
            out.append(Playbook(name if isinstance(name, str) else "", cls or "", tuple(sorted(labels.items())),
                                built, criteria, spend))
        for j, name, cls, labels in routes:
            for i, other, other_cls, other_labels in routes:
                if i < j and other_cls == cls and other_labels <= labels:
                    self.err(f"playbooks[{j}]", f"unreachable: playbooks[{i}] ({other}) comes first and matches "
                                                f"every {cls} incident that {name} would")
                    break
        for cls in CLASSIFICATIONS:
            if not any(c == cls and not labels for _, _, c, labels in routes):
                self.err("playbooks", f"no playbook for class {cls} without label matchers "
                                      f"(every class needs one that matches all its incidents)")
        return out


def parse_playbooks(doc: Any, actions_base_url: str | None = None, env: Mapping[str, str] | None = None,
                    read_tokens: bool = True) -> PlaybookSet:
    """Validate an already-parsed document (its token secrets read from ENV, the process's by default; not read
    at all without READ_TOKENS, for tools that send no action); PlaybookError lists every problem."""
    c = _Checker((os.environ if env is None else env) if read_tokens else None)
    root = c.mapping(doc, "", required=("apiVersion", "kind", "actions", "escalation", "playbooks"),
                     optional=("agents",))
    if not isinstance(doc, dict):
        raise PlaybookError(c.errors)
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if key in root and root[key] != expected:
            c.err(key, f"must be {expected!r}, got {root[key]!r}")
    agents = c.agents(root.get("agents", {}))
    primitives, base, timeout, retry = c.actions(root["actions"], actions_base_url) if "actions" in root \
        else (None, None, 5.0, RetryPolicy())
    token = c.token(root["actions"], "actions") if isinstance(root.get("actions"), dict) else None
    escalate_to, options = c.escalation(root["escalation"]) if "escalation" in root else ("CEO", ())
    playbooks = c.playbooks(root["playbooks"], primitives) if "playbooks" in root else []
    if c.errors:
        raise PlaybookError(c.errors)
    return PlaybookSet(tuple(playbooks), primitives, agents, base, float(timeout), retry, escalate_to, options,
                       token)
