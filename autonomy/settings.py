"""Settings from the environment: the pack's AUTO_REMEDIATE / AUTOREM_* names, parsed once, all problems at once."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .secret import Secret, read_secret

__all__ = ["Secret", "Settings", "SettingsError", "read_secret"]


class SettingsError(ValueError):
    """Every problem found in the environment, one per line."""

    def __init__(self, errors: list[str]):
        self.errors = tuple(errors)
        super().__init__("invalid settings:\n  " + "\n  ".join(errors))


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true or false)")


def _exactly_true(text: str) -> bool:
    # The pack's loop runs only when AUTO_REMEDIATE is exactly "true"; anything else is a mistake worth naming.
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError(f"{text!r} is neither true nor false (remediation runs only when it is exactly true)")


def _number(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{text!r} is not a finite number")
        if low is not None and value < low:
            raise ValueError(f"{text!r} is below the minimum of {low:g}")
        if high is not None and value > high:
            raise ValueError(f"{text!r} is above the maximum of {high:g}")
        return value
    return parse


def _integer(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if value < low:
            raise ValueError(f"{text!r} is below the minimum of {low}")
        return value
    return parse


def _name_list(allow_empty: bool) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(part.strip() for part in text.split(",") if part.strip())
        if not items and not allow_empty:
            raise ValueError("must list at least one name")
        if len(set(items)) != len(items):
            raise ValueError(f"{text!r} lists a name twice")
        return items
    return parse


def _url(text: str) -> str:
    value = text.strip().rstrip("/")
    if not value.startswith(("http://", "https://")) or "\n" in value:
        raise ValueError(f"{text!r} is not an http(s) URL")
    if "@" in value.split("://", 1)[1].split("/", 1)[0]:
        raise ValueError("must not carry credentials (user:password@); use the *_TOKEN settings")
    return value


def _url_list(text: str) -> str:
    urls = [part.strip() for part in text.split(",") if part.strip()]
    return ",".join(_url(u) for u in urls)


def _optional_url(text: str) -> str:
    return _url(text) if text.strip() else ""


def setting(env: str, default: str, parse: Callable[[str], Any], doc: str) -> Any:
    """Declare one setting: its environment name, default (as written in the env), parser and meaning."""
    return field(default=parse(default), metadata={"env": env, "default": default, "parse": parse, "doc": doc})


def secret_setting(env: str, doc: str) -> Any:
    """Declare a secret read from ENV or from the file named by ENV_FILE."""
    return field(default=None, metadata={"env": env, "default": "", "secret": True, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every setting of the layer; the pack's names are kept exactly."""

    auto_remediate: bool = setting(
        "AUTO_REMEDIATE", "false", _exactly_true,
        "Feature flag: remediation runs only when this is exactly true; otherwise the receiver observes and "
        "records, and the kill switch cannot turn it on.")
    max_attempts: int = setting(
        "AUTOREM_MAX_ATTEMPTS", "2", _integer(1),
        "Remediation attempts per incident before escalating to a human.")
    attempt_backoff_seconds: float = setting(
        "AUTOREM_ATTEMPT_BACKOFF_SECONDS", "30", _number(0),
        "Wait before attempt 2 (doubling for later attempts, capped at 4x), so the agent settles and is "
        "re-read before the layer acts again.")
    slo_success: float = setting(
        "AUTOREM_SLO_SUCCESS", "0.94", _number(0, 1),
        "Success ratio below which an agent breaches its SLO.")
    slo_align: float = setting(
        "AUTOREM_SLO_ALIGN", "0.95", _number(0, 1),
        "Alignment ratio below which an agent breaches its SLO.")
    slo_backlog_min: float = setting(
        "AUTOREM_SLO_BACKLOG_MIN", "15", _number(0),
        "Backlog age, in minutes, above which an agent breaches its SLO.")
    priority: tuple[str, ...] = setting(
        "AUTOREM_PRIORITY", "Revenue,Marketing,Content", _name_list(False),
        "Priority domains, highest first, for conflict arbitration and capacity moves.")
    budget_cap_daily_usd: float = setting(
        "AUTOREM_BUDGET_CAP_DAILY_USD", "25", _number(0),
        "Fleet spend cap per day, in dollars, against the projected spend.")
    queue_depth_max: float = setting(
        "AUTOREM_QUEUE_DEPTH_MAX", "5", _number(0),
        "Queue depth above which an agent is short of capacity (the pack's queueDepth > 5).")
    agent_silent_seconds: float = setting(
        "AUTOREM_AGENT_SILENT_SECONDS", "120", _number(1),
        "An agent (or a dependency) whose last signal is older than this is silent.")
    remediation_off_alert_seconds: float = setting(
        "AUTOREM_REMEDIATION_OFF_ALERT_SECONDS", "1800", _number(1),
        "Alert when remediation has been disabled (kill switch) for longer than this.")
    runbook_base_url: str = setting(
        "AUTOREM_RUNBOOK_BASE_URL", "http://localhost:9818/runbooks", _url,
        "Where alert runbook_url annotations point: BASE/ALERTNAME.md (the receiver serves its runbooks there).")
    max_agents: int = setting(
        "AUTOREM_MAX_AGENTS", "10000", _integer(1),
        "Agents the exporter and the receiver hold at most; beyond, a new agent is refused (429), so one token "
        "cannot grow the exposition or the ledger without bound.")
    max_clock_skew_seconds: float = setting(
        "AUTOREM_MAX_CLOCK_SKEW_SECONDS", "300", _number(0),
        "A signal dated more than this in the future is refused (422): a clock far ahead would mask the agent.")
    agent_expiry_seconds: float = setting(
        "AUTOREM_AGENT_EXPIRY_SECONDS", "3600", _number(1),
        "The exporter drops an agent from its exposition after this long without a signal.")
    prometheus_url: str = setting(
        "AUTOREM_PROMETHEUS_URL", "http://localhost:9090", _url,
        "Prometheus the receiver queries to classify and to verify recovery.")
    alertmanager_url: str = setting(
        "AUTOREM_ALERTMANAGER_URL", "http://localhost:9093", _url_list,
        "Alertmanager(s), comma-separated for an HA cluster: silences are checked on one that answers, "
        "AutonomyEscalated is posted to all (empty: none, direct path only).")
    grafana_url: str = setting(
        "AUTOREM_GRAFANA_URL", "", _optional_url,
        "Grafana whose Alertmanager API holds its own alerts' state and silences, for Grafana Alerting's incidents "
        "(with AUTOREM_GRAFANA_TOKEN); unset: those incidents are held, never acted on.")
    escalation_url: str = setting(
        "AUTOREM_ESCALATION_URL", "", _optional_url,
        "Where the escalation payload (pack section 7) is posted; unset: recorded in the lineage only.")
    actions_base_url: str = setting(
        "AUTOREM_ACTIONS_BASE_URL", "", _optional_url,
        "Overrides actions.baseUrl of playbooks.yaml: where the agents' action endpoints are.")
    exporter_url: str = setting(
        "AUTOREM_EXPORTER_URL", "", _url_list,
        "The exporter(s), comma-separated when sharded, the receiver reads the agents' signal extensions from on "
        "the Prometheus path (with AUTOREM_EXPORTER_TOKEN), for the lineage's before/after; unset: not read "
        "(Prometheus never has them).")
    playbooks_file: str = setting(
        "AUTOREM_PLAYBOOKS_FILE", "playbooks.yaml", str,
        "The playbook table, validated at start-up.")
    data_dir: str = setting(
        "AUTOREM_DATA_DIR", "data", str,
        "The receiver's incident ledger (SQLite) and lineage file (decision_lineage.jsonl).")
    canary_agents: tuple[str, ...] = setting(
        "AUTOREM_CANARY_AGENTS", "", _name_list(True),
        "The staged rollout's initial agents (the store's value wins once set through the API): if set, only these "
        "agents are remediated; the others are observed and recorded.")
    dry_run: bool = setting(
        "AUTOREM_DRY_RUN", "false", _bool,
        "Record what would run, run nothing.")
    verify_timeout_seconds: float = setting(
        "AUTOREM_VERIFY_TIMEOUT_SECONDS", "120", _number(0.1),
        "How long verification waits for fresh samples that meet the success criteria.")
    verify_interval_seconds: float = setting(
        "AUTOREM_VERIFY_INTERVAL_SECONDS", "5", _number(0.05),
        "How often verification polls Prometheus.")
    gate_timeout_seconds: float | None = setting(
        "AUTOREM_GATE_TIMEOUT_SECONDS", "", lambda text: _number(0.1)(text) if text.strip() else None,
        "How long the reads before an attempt (the agent's view, and the gates' questions to Alertmanager and "
        "Grafana) may take altogether; an Alertmanager (or Grafana) only slow to answer is asked again within it, "
        "waited for twice as long each time (5, 10, 20, then 40 s). "
        "Past it, the attempt is held with the gate that could not be asked; unset: twice "
        "AUTOREM_VERIFY_TIMEOUT_SECONDS.")
    workers: int = setting(
        "AUTOREM_WORKERS", "4", _integer(1),
        "Remediations run at once (never two for one agent).")
    queue_size: int = setting(
        "AUTOREM_QUEUE_SIZE", "1000", _integer(1),
        "Incidents waiting for a worker; when full the webhook answers 503 and Alertmanager retries.")
    reopen_grace_seconds: float = setting(
        "AUTOREM_REOPEN_GRACE_SECONDS", "300", _number(0),
        "After a verified recovery, firing notifications this soon are the alert catching up, not a relapse.")
    late_notification_seconds: float = setting(
        "AUTOREM_LATE_NOTIFICATION_SECONDS", "60", _number(0),
        "A first notification of alerts firing longer than this arrived late (a silence or an inhibition ended, "
        "Alertmanager was down): the layer acts only on samples newer than its arrival.")
    sweep_seconds: float = setting(
        "AUTOREM_SWEEP_SECONDS", "30", _number(0.1),
        "How often the receiver re-checks escalated, recovered and skipped incidents against Prometheus.")
    lease_seconds: float = setting(
        "AUTOREM_LEASE_SECONDS", "30", _number(0.5),
        "A worker's claim on an incident, renewed every third of it; a dead worker's is taken over after it.")
    retention_days: float = setting(
        "AUTOREM_RETENTION_DAYS", "90", _number(1),
        "History older than this many days is deleted in the background: closed incidents (by when they closed), "
        "notifications and lineage entries; never an open incident's.")
    webhook_token: Secret | None = secret_setting(
        "AUTOREM_WEBHOOK_TOKEN",
        "Bearer token for the webhook, the signals endpoint and the kill switch (or AUTOREM_WEBHOOK_TOKEN_FILE).")
    read_token: Secret | None = secret_setting(
        "AUTOREM_READ_TOKEN",
        "If set, the read endpoints (incidents, lineage) need this bearer token or ?token= (or AUTOREM_READ_TOKEN_FILE).")
    escalation_token: Secret | None = secret_setting(
        "AUTOREM_ESCALATION_TOKEN",
        "Bearer token sent with the escalation payload (or AUTOREM_ESCALATION_TOKEN_FILE).")
    exporter_token: Secret | None = secret_setting(
        "AUTOREM_EXPORTER_TOKEN",
        "Bearer token agents present to push signals to the exporter (or AUTOREM_EXPORTER_TOKEN_FILE).")
    grafana_token: Secret | None = secret_setting(
        "AUTOREM_GRAFANA_TOKEN", "Grafana Viewer token for AUTOREM_GRAFANA_URL (or AUTOREM_GRAFANA_TOKEN_FILE).")
    store_url: Secret | None = secret_setting(
        "AUTOREM_STORE_URL",
        "A shared PostgreSQL ledger, postgresql://user@host:port/db (the password in the URL, or better in "
        "AUTOREM_STORE_URL_FILE): any number of receivers share it; unset: SQLite in the data directory.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read every setting from ENV (default os.environ); raise SettingsError listing all problems."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        errors: list[str] = []
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            try:
                if f.metadata.get("secret"):
                    values[f.name] = read_secret(name, env)
                elif name in env:
                    values[f.name] = f.metadata["parse"](env[name])
            except ValueError as exc:
                errors.append(f"{name}: {exc}")
        if errors:
            raise SettingsError(errors)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def table(cls) -> list[tuple[str, str, str]]:
        """(environment name, default, meaning) for every setting, for docs and `autonomy check`."""
        return [(f.metadata["env"], f.metadata["default"], f.metadata["doc"]) for f in dataclasses.fields(cls)]


