"""A signal's `extensions`: an agent's own fields, bounded, kept with its latest signal, never exported as metrics."""
from __future__ import annotations

import json
import re
from typing import Any

EXTENSIONS = "extensions"
MAX_KEYS = 32  # the schema's maxProperties (a test holds the two equal)
MAX_BYTES = 4096  # as compact JSON in UTF-8: what a lineage line and an incident may carry per agent
KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # the schema's propertyNames: a name, as agents' are


def serialized_size(value: Any) -> int:
    """VALUE's size as compact JSON in UTF-8, the measure MAX_BYTES bounds."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


def size_errors(doc: Any, prefix: str = "") -> list[str]:
    """The one check the schema cannot make: DOC's extensions within MAX_BYTES (a `path: reason` line if not)."""
    value = doc.get(EXTENSIONS) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        return []  # absent, or the schema has said what is wrong with it
    where = f"{prefix}.{EXTENSIONS}" if prefix else EXTENSIONS
    try:
        size = serialized_size(value)
    except (RecursionError, ValueError):
        return [f"{where}: cannot be serialized as JSON"]
    return [f"{where}: {size} bytes as compact JSON, more than {MAX_BYTES}"] if size > MAX_BYTES else []


def extensions_ok(value: Any) -> bool:
    """The schema's checks of an extensions object and its size, by hand (the signal's hot path)."""
    if type(value) is not dict or len(value) > MAX_KEYS:
        return False
    for key in value:
        if type(key) is not str or KEY.fullmatch(key) is None:
            return False
    try:
        return serialized_size(value) <= MAX_BYTES
    except (RecursionError, ValueError):
        return False


def extensions_of(signal: Any) -> dict:
    """The extensions a signal was sent with ({} for none, and for a signal rebuilt from Prometheus's series)."""
    document = getattr(signal, "document", None) or {}
    value = document.get(EXTENSIONS)
    return dict(value) if isinstance(value, dict) else {}
