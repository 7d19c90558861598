"""A secret value that prints only its name, and reading one from the environment (NAME, or the file NAME_FILE)."""
from __future__ import annotations

import hmac
import re
from pathlib import Path
from typing import Mapping

BEARER_TOKEN = re.compile(r"[\x21-\x7e]+")  # what an Authorization header can carry: visible ASCII, no spaces


class Secret:
    """A secret value that prints only its name."""

    __slots__ = ("name", "_value")

    def __init__(self, name: str, value: str):
        self.name = name
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"<secret {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.name == self.name and hmac.compare_digest(
            other._value.encode(), self._value.encode())

    def __hash__(self) -> int:
        return hash(self.name)

    __str__ = __repr__


def read_secret(name: str, env: Mapping[str, str]) -> Secret | None:
    """The secret NAME from ENV: its value, or the contents of the file NAME_FILE names; None if neither is set."""
    direct, path = env.get(name), env.get(f"{name}_FILE")
    if direct and path:
        raise ValueError(f"set either {name} or {name}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text("utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read {name}_FILE {path!r}: {exc.strerror}") from None
        if not value:
            raise ValueError(f"{name}_FILE {path!r} is empty")
    elif direct is not None and direct.strip():
        value = direct.strip()
    else:
        if direct is not None:
            raise ValueError("is set but empty")
        return None
    if not BEARER_TOKEN.fullmatch(value):  # a header value: a control character would break (and show) the request
        raise ValueError(f"{name}: visible ASCII characters only, no spaces (it is sent as a bearer token)")
    return Secret(name, value)
