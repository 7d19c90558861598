"""Reading playbooks.yaml: strict YAML (duplicate keys refused), then validated into a PlaybookSet."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import yaml

from .model import PlaybookError, PlaybookSet
from .validation import parse_playbooks


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable; construct_mapping reports it
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_playbooks(path: Path, actions_base_url: str | None = None, env: Mapping[str, str] | None = None,
                   read_tokens: bool = True) -> PlaybookSet:
    """Read, parse and validate a playbooks file; ACTIONS_BASE_URL (the setting) overrides actions.baseUrl; token
    secrets are read from ENV (the process environment by default)."""
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError([f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"]) from None
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "?"
        hint = " (quote values that contain '{' or '}')" if "unhashable" in str(exc.problem) \
            or "'{'" in str(exc.problem) else ""
        raise PlaybookError([f"(yaml): syntax error at {where}: {exc.problem}{hint}"]) from None
    except yaml.YAMLError as exc:
        raise PlaybookError([f"(yaml): {exc}"]) from None
    return parse_playbooks(doc, actions_base_url, env, read_tokens)
