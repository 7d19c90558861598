"""Configs for a local stack, generated from the repo's own prometheus/ and alertmanager/ files."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIG = REPO_ROOT / "prometheus" / "prometheus.yml"


def prometheus_config(targets: Mapping[str, Sequence[str]], interval: str = "1s",
                      base: Path = PROMETHEUS_CONFIG) -> str:
    """The repo's Prometheus config with the given job targets and one scrape/evaluation interval."""
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
    return yaml.safe_dump(config, sort_keys=False)
