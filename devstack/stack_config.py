"""Configs for a local stack, generated from the repo's own prometheus/ and alertmanager/ files."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from .checkout import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG
from .durations import format_duration, parse_duration

RECEIVER_NAME = "autonomy-receiver"
ROUTE_TIMINGS = ("group_wait", "group_interval", "repeat_interval")


def prometheus_config(targets: Mapping[str, Sequence[str]], interval: str = "1s",
                      rule_files: Sequence[str | Path] = (), alertmanagers: Sequence[str] = (),
                      base: Path = PROMETHEUS_CONFIG) -> str:
    """The repo's Prometheus config with these job targets, rule files, Alertmanagers and interval.

    Jobs not named in TARGETS are left out, and so are rules and alerting when none are given.
    """
    config = yaml.safe_load(base.read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    unknown = set(targets) - set(jobs)
    if unknown:
        raise KeyError(f"no scrape job named {sorted(unknown)} in {base}")
    for name, addresses in targets.items():
        jobs[name]["static_configs"] = [{"targets": list(addresses)}]
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] in targets]
    config["rule_files"] = [str(p) for p in rule_files]
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    else:
        config.pop("alerting", None)
    if not config["rule_files"]:
        config.pop("rule_files")
    return yaml.safe_dump(config, sort_keys=False)


def _scale_route(route: dict, time_factor: float) -> None:
    for key in ROUTE_TIMINGS:
        if key in route:
            seconds = parse_duration(route[key]) * time_factor
            route[key] = format_duration(seconds) if seconds > 0 else "0s"
    for child in route.get("routes", []):
        _scale_route(child, time_factor)


def alertmanager_config(webhook_url: str | Sequence[str], token_file: str | Path, time_factor: float = 1.0,
                        base: Path = ALERTMANAGER_CONFIG) -> str:
    """The repo's Alertmanager config with the receiver's URL (or several receivers' URLs, each sent every
    notification) and token file; timings scaled alike."""
    config = yaml.safe_load(base.read_text())
    receiver = next(r for r in config["receivers"] if r["name"] == RECEIVER_NAME)
    urls = [webhook_url] if isinstance(webhook_url, str) else list(webhook_url)
    template = receiver["webhook_configs"][0]
    receiver["webhook_configs"] = [copy.deepcopy(template) for _ in urls]
    for webhook, url in zip(receiver["webhook_configs"], urls):
        webhook["url"] = url
        webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    if time_factor != 1.0:
        _scale_route(config["route"], time_factor)
    return yaml.safe_dump(config, sort_keys=False)
