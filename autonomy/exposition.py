"""The Prometheus text exposition (format 0.0.4) as the layer writes it by hand, shared by the exporter and the
receiver: the same escaping prometheus_client applies."""
from __future__ import annotations


def label_value(value: str) -> str:
    """A label value as the text format writes it between its quotes."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
