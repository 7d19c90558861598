"""Where the development stack finds the checkout it runs from: the repo's configs, rules and dashboards."""
from __future__ import annotations

from pathlib import Path

# The development stack only runs from a checkout (it is never installed into an image), so the repo's own
# folders are found next to this package. Production code finds its files as package data instead.
REPO_ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIG = REPO_ROOT / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = REPO_ROOT / "alertmanager" / "alertmanager.yml"
RULES_DIR = REPO_ROOT / "alert_rules"
DASHBOARDS_DIR = REPO_ROOT / "grafana" / "dashboards"
PLAYBOOKS_FILE = REPO_ROOT / "playbooks.yaml"
