"""Step-argument templates (`{{ context.dependencies[0] }}`) and safe action URLs. No eval, no Jinja.

A template path names KEYS: dict keys and list indexes, looked up from one of TEMPLATE_ROOTS. Values are
never inspected to decide what is a template, and rendered values are never rendered again, so whatever
an alert label or a signal carries stays inert data.
"""
from __future__ import annotations

import copy
import math
import re
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

from autonomy.vocabulary import AGENT_NAME, AGENT_NAME_RULE

TEMPLATE_ROOTS = frozenset({
    "agent", "context", "metrics", "checks", "labels", "priority", "losingAgent", "winningAgent",
    "lowestPriorityAgent", "slotDonorAgent", "failingDependency", "incident",
})

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = re.compile(rf"{_IDENT}(?:\[\d+\])*(?:\.{_IDENT}(?:\[\d+\])*)*")
_SEGMENT = re.compile(rf"({_IDENT})|\[(\d+)\]")
_PATH_CHARS = re.compile(r"[A-Za-z0-9._~/-]*")
_JSON_SCALARS = (str, int, float, bool, type(None))


class TemplateError(ValueError):
    """A template that cannot be parsed, or a path with no value; `path` names it when known."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(message)


class UnsafeTarget(ValueError):
    """An action URL that would leave the configured base URL (bad agent name, base URL or path)."""


def _placeholders(text: str) -> list[tuple[int, int, str]]:
    """(start, end, path) of every `{{ path }}` in TEXT; TemplateError on the first syntax problem."""
    found, pos = [], 0
    while True:
        start = text.find("{{", pos)
        literal = text[pos:] if start < 0 else text[pos:start]
        if "}}" in literal:
            raise TemplateError(f"unbalanced braces: '}}}}' without '{{{{' in {text!r}")
        if start < 0:
            return found
        end = text.find("}}", start + 2)
        if end < 0 or "{{" in text[start + 2:end]:
            raise TemplateError(f"unbalanced braces: '{{{{' without '}}}}' in {text!r}")
        path = text[start + 2:end].strip()
        if not _PATH.fullmatch(path):
            raise TemplateError(f"bad template path {path!r} (expected names joined by '.', "
                                f"with optional [N] indexes)", path)
        root = _SEGMENT.match(path).group(1)
        if root not in TEMPLATE_ROOTS:
            raise TemplateError(f"unknown template root {root!r} in {{{{ {path} }}}}", path)
        found.append((start, end + 2, path))
        pos = end + 2


def template_roots(value: Any) -> frozenset[str]:
    """The TEMPLATE_ROOTS the templates in VALUE (dicts, lists, strings; already checked) name."""
    if isinstance(value, Mapping):
        return frozenset().union(*(template_roots(v) for v in value.values()))
    if isinstance(value, (list, tuple)):
        return frozenset().union(*(template_roots(v) for v in value))
    if isinstance(value, str):
        return frozenset(_SEGMENT.match(path).group(1) for _, _, path in _placeholders(value))
    return frozenset()


def check_templates(value: Any, where: str) -> list[str]:
    """Every template problem in VALUE (dicts, lists, strings), as `where: reason` lines.

    Also rejects what could not go into a JSON body (YAML dates, ...), non-string keys and keys that
    look like templates (only values are rendered)."""
    errors: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append(f"{where}: key {key!r} is not a string")
                continue
            if "{{" in key or "}}" in key:
                errors.append(f"{where}: key {key!r}: templates are only allowed in values")
            errors.extend(check_templates(item, f"{where}.{key}"))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            errors.extend(check_templates(item, f"{where}[{index}]"))
    elif isinstance(value, str):
        try:
            _placeholders(value)
        except TemplateError as exc:
            errors.append(f"{where}: {exc}")
    elif not isinstance(value, _JSON_SCALARS):
        errors.append(f"{where}: a {type(value).__name__} cannot go into a JSON body (quote it)")
    elif isinstance(value, float) and not math.isfinite(value):
        errors.append(f"{where}: {value!r} cannot go into a JSON body")
    return errors


def resolve(path: str, variables: Mapping[str, Any]) -> Any:
    """The value at PATH: each name must be a KEY of a mapping, each [N] an index of a list."""
    if not _PATH.fullmatch(path):
        raise TemplateError(f"bad template path {path!r}", path)
    current: Any = variables
    walked = ""
    for name, index in _SEGMENT.findall(path):
        if name:
            if not walked and name not in TEMPLATE_ROOTS:
                raise TemplateError(f"unknown template root {name!r} in {path!r}", path)
            if not isinstance(current, Mapping) or name not in current:
                raise TemplateError(f"template path {path!r} has no value: no key {name!r}"
                                    f"{f' in {walked}' if walked else ''}", path)
            current = current[name]
            walked += f".{name}" if walked else name
        else:
            i = int(index)
            if not isinstance(current, (list, tuple)) or i >= len(current):
                raise TemplateError(f"template path {path!r} has no value: no index [{i}] in {walked}", path)
            current = current[i]
            walked += f"[{i}]"
    return current


def _render_string(text: str, variables: Mapping[str, Any]) -> Any:
    spots = _placeholders(text)
    if len(spots) == 1 and spots[0][:2] == (0, len(text)):
        return copy.deepcopy(resolve(spots[0][2], variables))
    out, pos = [], 0
    for start, end, path in spots:
        out.append(text[pos:start])
        out.append(str(resolve(path, variables)))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def render_args(args: Any, variables: Mapping[str, Any]) -> Any:
    """A deep copy of ARGS with every template filled from VARIABLES (one pass; results are not re-read).

    A string that is exactly one placeholder becomes the raw value (list, number, ...); placeholders
    inside other text are interpolated with str(). A path without a value raises TemplateError."""
    if isinstance(args, Mapping):
        return {key: render_args(item, variables) for key, item in args.items()}
    if isinstance(args, (list, tuple)):
        return [render_args(item, variables) for item in args]
    if isinstance(args, str):
        return _render_string(args, variables)
    return copy.deepcopy(args)


def base_url_problem(url: Any) -> str | None:
    """Why URL cannot be an actions base URL (http(s), a host, no credentials, query or fragment)."""
    if not isinstance(url, str) or not url or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return f"{url!r} is not an http(s) URL"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url!r} is not an http(s) URL"
    if not parts.hostname:
        return f"{url!r} has no host"
    if "@" in parts.netloc:
        return f"{url!r} must not carry credentials"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return f"{url!r} must not have a query or fragment"
    try:
        parts.port
    except ValueError:
        return f"{url!r} has an invalid port"
    return None


def path_template_problems(path: Any) -> list[str]:
    """Why PATH cannot be a primitive's path: '/'-rooted, plain segments, `{agent}` the only variable."""
    if not isinstance(path, str) or not path.startswith("/"):
        return [f"{path!r} must start with '/'"]
    problems = [f"unknown variable {{{name}}} in {path!r} (only {{agent}} is allowed)"
                for name in re.findall(r"\{([^{}]*)\}", path) if name != "agent"]
    plain = path.replace("{agent}", "agent")
    if problems:
        return problems
    if "{" in plain or "}" in plain:
        return [f"unbalanced braces in {path!r}"]
    if not _PATH_CHARS.fullmatch(plain):
        return [f"{path!r} may only contain letters, digits, '/', '.', '_', '~', '-' and {{agent}}"]
    if any(seg in ("", ".", "..") for seg in plain[1:].split("/")):
        return [f"{path!r} has an empty, '.' or '..' segment"]
    return []


def action_url(base_url: str, path_template: str, agent: str) -> str:
    """BASE_URL + PATH_TEMPLATE with `{agent}` percent-encoded; UnsafeTarget unless it stays under BASE_URL."""
    if not isinstance(agent, str) or not AGENT_NAME.fullmatch(agent):
        raise UnsafeTarget(f"{agent!r} is not a valid agent name ({AGENT_NAME_RULE})")
    problem = base_url_problem(base_url) or next(iter(path_template_problems(path_template)), None)
    if problem:
        raise UnsafeTarget(problem)
    base = base_url.rstrip("/")
    url = base + path_template.replace("{agent}", quote(agent, safe=""))
    b, u = urlsplit(base), urlsplit(url)
    added = u.path[len(b.path):].split("/")[1:]  # the segments after the base URL's path
    if ((u.scheme, u.netloc) != (b.scheme, b.netloc) or u.query or u.fragment
            or not u.path.startswith(b.path + "/") or len(added) != path_template.count("/")
            or any(seg in ("", ".", "..") for seg in added) or {".", ".."} & set(u.path.split("/"))):
        raise UnsafeTarget(f"agent {agent!r} would move the action URL away from {base_url!r}")
    return url
