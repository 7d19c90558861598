"""The published OpenAPI 3.1 contract of the layer's HTTP surfaces, and validators for its schemas."""
from __future__ import annotations

import copy
import json
import re
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from autonomy.signal_contract import MAX_DEPTH, SCHEMA_RESOURCE, too_deep

DOCUMENT_RESOURCE = "schemas/openapi.yaml"
# The document's base URI: its relative $ref "signal.schema.json" lands on the signal schema's own $id.
DOCUMENT_URI = "https://autonomy-layer.invalid/schemas/openapi.yaml"
MEDIA_TYPE = "application/yaml"


@cache
def shipped_text(resource: str) -> str:
    """The text of RESOURCE (a path inside the autonomy package) as shipped."""
    return resources.files("autonomy").joinpath(resource).read_text("utf-8")


def document_text() -> str:
    """The YAML text as shipped in the package (what GET /openapi.yaml serves)."""
    return shipped_text(DOCUMENT_RESOURCE)


@cache
def _document() -> dict:
    doc = yaml.safe_load(document_text())
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3.1"):
        raise ValueError(f"{DOCUMENT_RESOURCE}: not an OpenAPI 3.1 document")
    return doc


def document() -> dict:
    """The parsed document (a fresh copy each call: callers may not change the cached one)."""
    return copy.deepcopy(_document())


@cache
def _registry() -> Registry:
    signal = json.loads(shipped_text(SCHEMA_RESOURCE))
    return Registry().with_resources([
        (DOCUMENT_URI, Resource.from_contents(_document(), default_specification=DRAFT202012)),
        (signal["$id"], Resource.from_contents(signal, default_specification=DRAFT202012)),
    ])


def schema_names() -> list[str]:
    """The names under #/components/schemas, sorted."""
    return sorted(_document().get("components", {}).get("schemas", {}))


@cache
def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    """A validator of #/components/schemas/SCHEMA_NAME, its $refs resolved inside the document."""
    if schema_name not in _document().get("components", {}).get("schemas", {}):
        raise KeyError(f"no schema {schema_name!r} in {DOCUMENT_RESOURCE} (known: {', '.join(schema_names())})")
    return validator_at(f"/components/schemas/{schema_name}")


@cache
def validator_at(pointer: str) -> jsonschema.Draft202012Validator:
    """A validator of the schema at JSON pointer POINTER of the document (e.g. an inline response schema)."""
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON pointer into {DOCUMENT_RESOURCE} (it starts with '/')")
    return jsonschema.Draft202012Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=_registry())


def request_schema_name(primitive: str) -> str:
    """The name of the schema of PRIMITIVE's request body."""
    return f"{primitive}Request"


_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
               (dict, "object"), (type(None), "null"))


def _json_type(value: Any) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__)


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _path(parts: Any) -> str:
    return ".".join(str(part) for part in parts)


def _unexpected(error: jsonschema.ValidationError) -> list[str]:
    known = set(error.schema.get("properties", {}))
    patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
    return sorted(key for key in error.instance
                  if key not in known and not any(p.search(key) for p in patterns))


def _allowed(schema: dict) -> str:
    names = sorted(schema.get("properties", {}))
    if any(p == "^x-" for p in schema.get("patternProperties", {})):
        names.append("x-*")
    return ", ".join(names) or "none"


def _alternative(error: jsonschema.ValidationError) -> list[tuple[str, str]]:
    """The errors of the first alternative whose type fits (a list for a list), else that none fits."""
    branches: dict[int, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    depth = len(error.absolute_path)
    for _, subs in sorted(branches.items()):
        if not any(s.validator in ("type", "const") and len(s.absolute_path) == depth for s in subs):
            return [item for sub in subs for item in _describe(sub)]
    return [(_path(error.absolute_path), f"{_shown(error.instance)} is not one of the allowed shapes")]


def _describe(error: jsonschema.ValidationError) -> list[tuple[str, str]]:
    if error.validator in ("oneOf", "anyOf") and error.context:
        return _alternative(error)
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return [(_path(path + [name]), "is required") for name in missing]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = _allowed(error.schema)
        return [(_path(path + [key]), f"unexpected property (allowed: {allowed})") for key in _unexpected(error)]
    where = _path(path)
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [(where, f"expected {expected}, got {_json_type(error.instance)} {_shown(error.instance)}")]
    if error.validator == "enum":
        allowed = ", ".join(json.dumps(v) for v in error.validator_value)
        return [(where, f"{_shown(error.instance)} is not one of {allowed}")]
    if error.validator == "const":
        return [(where, f"expected {_shown(error.validator_value)}, got {_shown(error.instance)}")]
    if error.validator == "pattern":
        return [(where, f"{_shown(error.instance)} does not match {error.validator_value}")]
    if error.validator == "not":
        return [(where, f"{_shown(error.instance)} is not allowed here")]
    if error.validator in ("oneOf", "anyOf"):
        return [(where, f"{_shown(error.instance)} is not one of the allowed shapes")]
    return [(where, error.message)]


def body_errors(schema_name: str, value: Any) -> list[tuple[str, str]]:
    """Every violation of SCHEMA_NAME by VALUE as (field path, message), "" the root, "ratio.1" an item; sorted."""
    return _errors(validator(schema_name), value)


def body_errors_at(pointer: str, value: Any) -> list[tuple[str, str]]:
    """body_errors for the schema at JSON pointer POINTER of the document."""
    return _errors(validator_at(pointer), value)


def _errors(checker: jsonschema.Draft202012Validator, value: Any) -> list[tuple[str, str]]:
    if too_deep(value):  # describing it would exhaust the recursion limit
        return [("", f"JSON nested more than {MAX_DEPTH} levels deep")]
    return sorted({item for error in checker.iter_errors(value) for item in _describe(error)})
