"""Prometheus durations (30s, 2m, 1500ms) read and written for the generated rules and configs."""
from __future__ import annotations

import re

DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class DurationError(ValueError):
    """A text is not a duration Prometheus accepts, or a duration is too short to write."""


def parse_duration(text: str) -> float:
    """Seconds in a simple Prometheus duration such as 30s, 2m or 1500ms."""
    match = DURATION.match(str(text).strip())
    if not match:
        raise DurationError(f"{text!r} is not a duration such as 30s, 2m or 1h")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact Prometheus duration for SECONDS (whole milliseconds)."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise DurationError(f"duration {seconds}s is too short")
    for unit, factor in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % factor == 0:
            return f"{millis // factor}{unit}"
    return f"{millis}ms"
