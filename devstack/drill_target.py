"""The running layer a nightly drill exercises: a YAML or JSON file, checked whole, every problem named at once."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml

from autonomy.settings import Secret, Settings

from .drills import DRILLS

URL_FIELDS = ("receiver_url", "exporter_url", "prometheus_url", "fleet_url")
# A token is named (its environment variable) or pointed at (its file), never written in the target file.
TOKENS = {"receiver_token": "the receiver's AUTOREM_WEBHOOK_TOKEN",
          "read_token": "the receiver's AUTOREM_READ_TOKEN, if it sets one"}
REQUIRED_TOKENS = ("receiver_token",)
OTHER_FIELDS = ("alertmanager_url", "alertmanager_urls", "max_attempts", "slo_backlog_min", "time_factor", "drills")
KNOWN = (*URL_FIELDS, *OTHER_FIELDS, *(f"{t}_{how}" for t in TOKENS for how in ("env", "file")))
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TargetConfigError(ValueError):
    """Every problem of a drill target file, one per line, each naming its field."""

    def __init__(self, source: str, errors: list[str]):
        self.errors = tuple(errors)
        super().__init__(f"{source}: not a usable drill target:\n  " + "\n  ".join(errors))


@dataclass(frozen=True)
class DrillTarget:
    """Where the layer's parts answer, the tokens (by name only in any output) and the deployed settings."""

    receiver_url: str
    exporter_url: str
    prometheus_url: str
    alertmanager_urls: tuple[str, ...]
    fleet_url: str
    receiver_token: Secret
    read_token: Secret | None = None
    max_attempts: int = 2
    slo_backlog_min: float = 15.0
    time_factor: float = 1.0
    drills: tuple[str, ...] = ()

    def endpoints(self) -> list[tuple[str, str]]:
        """(field, URL) of every part, in the order they are checked."""
        many = len(self.alertmanager_urls) > 1
        return [("receiver_url", self.receiver_url), ("exporter_url", self.exporter_url),
                ("prometheus_url", self.prometheus_url),
                *((f"alertmanager_urls[{n}]" if many else "alertmanager_url", url)
                  for n, url in enumerate(self.alertmanager_urls)),
                ("fleet_url", self.fleet_url)]


def check_url(name: str, value: Any, errors: list[str]) -> str | None:
    """VALUE as an http(s) URL with a host (no trailing slash), or None after naming the problem."""
    if not isinstance(value, str) or not value.strip():
        errors.append(f"{name}: required, an http(s) URL" if value is None else f"{name}: must be an http(s) URL")
        return None
    parts = urlsplit(value.strip())
    if "@" in parts.netloc:  # the URL itself is not printed: it carries credentials
        errors.append(f"{name}: must not carry credentials (user:password@); give tokens by _env or _file")
        return None
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number
    except ValueError:
        errors.append(f"{name}: {value!r} has a port that is not a number")
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(f"{name}: {value!r} is not an http(s) URL with a host")
        return None
    return value.strip().rstrip("/")


def read_token(name: str, doc: Mapping[str, Any], environ: Mapping[str, str], errors: list[str]) -> Secret | None:
    """The token NAME from the environment variable or the file the document gives; problems name the field."""
    env, file = doc.get(f"{name}_env"), doc.get(f"{name}_file")
    if env is not None and file is not None:
        errors.append(f"{name}_env, {name}_file: give one of them, not both")
        return None
    if env is None and file is None:
        if name in REQUIRED_TOKENS:
            errors.append(f"{name}_env or {name}_file: required ({TOKENS[name]})")
        return None
    if env is not None:
        if not isinstance(env, str) or not ENV_NAME.fullmatch(env):
            errors.append(f"{name}_env: must be the name of an environment variable")
            return None
        value = environ.get(env, "").strip()
        if not value:
            errors.append(f"{name}_env: {env} is not set in the environment")
            return None
        return Secret(env, value)
    if not isinstance(file, str) or not file.strip():
        errors.append(f"{name}_file: must be a file path")
        return None
    try:
        value = Path(file).read_text().strip()
    except OSError as exc:
        errors.append(f"{name}_file: {file}: cannot read ({exc.strerror or type(exc).__name__})")
        return None
    except UnicodeDecodeError:
        errors.append(f"{name}_file: {file}: not text")
        return None
    if not value:
        errors.append(f"{name}_file: {file} is empty")
        return None
    return Secret(file, value)


def number(name: str, doc: Mapping[str, Any], default: float, errors: list[str], *, integer: bool = False,
           low: float = 0.0, low_open: bool = False, high: float | None = None) -> Any:
    """DOC's NAME as a number in range (DEFAULT when absent), or DEFAULT after naming the problem."""
    value = doc.get(name, default)
    kinds = (int,) if integer else (int, float)
    in_range = isinstance(value, kinds) and not isinstance(value, bool) and (value > low if low_open else value >= low) \
        and (high is None or value <= high)
    if not in_range:
        bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        errors.append(f"{name}: must be {'an integer' if integer else 'a number'} {bounds}, not {value!r}")
        return default
    return value


def alertmanagers(doc: Mapping[str, Any], errors: list[str]) -> tuple[str, ...]:
    """alertmanager_url (one) or alertmanager_urls (a list: every instance of a cluster)."""
    one, many = doc.get("alertmanager_url"), doc.get("alertmanager_urls")
    if one is not None and many is not None:
        errors.append("alertmanager_url, alertmanager_urls: give one of them, not both")
        return ()
    if many is None:
        url = check_url("alertmanager_url", one, errors)
        return (url,) if url else ()
    if not isinstance(many, list) or not many:
        errors.append("alertmanager_urls: must be a non-empty list of http(s) URLs")
        return ()
    urls = [check_url(f"alertmanager_urls[{n}]", u, errors) for n, u in enumerate(many)]
    return tuple(u for u in urls if u)


def drill_names(doc: Mapping[str, Any], errors: list[str]) -> tuple[str, ...]:
    names = doc.get("drills", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        errors.append("drills: must be a list of drill names")
        return ()
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        errors.append(f"drills: unknown drill(s) {', '.join(unknown)}; choose from {', '.join(DRILLS)}")
    return tuple(n for n in names if n in DRILLS)


def parse_target(doc: Any, source: str, environ: Mapping[str, str] | None = None) -> DrillTarget:
    """A DrillTarget from a parsed document, or TargetConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    if not isinstance(doc, dict):
        raise TargetConfigError(source, ["the file must hold a mapping of fields (receiver_url: ..., ...)"])
    errors: list[str] = []
    for literal in (t for t in TOKENS if t in doc):  # its value is never echoed
        errors.append(f"{literal}: a token is not written in the target file; name its environment variable "
                      f"({literal}_env) or its file ({literal}_file)")
    unknown = sorted(str(k) for k in doc if k not in KNOWN and k not in TOKENS)
    if unknown:
        errors.append(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    urls = {name: check_url(name, doc.get(name), errors) for name in URL_FIELDS}
    managers = alertmanagers(doc, errors)
    tokens = {name: read_token(name, doc, environ, errors) for name in TOKENS}
    defaults = Settings.from_env({})
    max_attempts = number("max_attempts", doc, defaults.max_attempts, errors, integer=True, low=1)
    backlog = number("slo_backlog_min", doc, defaults.slo_backlog_min, errors)
    time_factor = number("time_factor", doc, 1.0, errors, low=0.0, low_open=True, high=1.0)
    drills = drill_names(doc, errors)
    if errors:
        raise TargetConfigError(source, errors)
    return DrillTarget(urls["receiver_url"], urls["exporter_url"], urls["prometheus_url"], managers,
                       urls["fleet_url"], tokens["receiver_token"], tokens["read_token"], int(max_attempts),
                       float(backlog), float(time_factor), drills)


def load_target(path: str | Path, environ: Mapping[str, str] | None = None) -> DrillTarget:
    """Read and check the target file at PATH (YAML, or JSON, which is YAML too)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TargetConfigError(str(path), [f"cannot read ({exc.strerror or type(exc).__name__})"]) from None
    except UnicodeDecodeError:
        raise TargetConfigError(str(path), ["not a text file"]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        # The line itself is not quoted: it might hold a token someone pasted in.
        raise TargetConfigError(str(path), [f"not YAML or JSON{where}: {problem}"]) from None
    return parse_target(doc, str(path), environ)
