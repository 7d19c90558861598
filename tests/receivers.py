"""The one way the tests build a receiver app: create_app on a temporary data directory, no worker threads unless
asked, Prometheus and Alertmanager on closed ports unless the test brings fakes (tests/engine_harness.py)."""
from __future__ import annotations

from pathlib import Path

from flask import Flask

from autonomy.settings import Secret, Settings
from devstack.checkout import PLAYBOOKS_FILE
from devstack.local_stack import free_port
from webhook_receiver.app import create_app

WEBHOOK_TOKEN = "whk-test-token-5b7d1e"


def closed_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def receiver_env(**extra: str) -> dict[str, str]:
    """The settings a test receiver runs with, before the test's own."""
    env = {"AUTOREM_PROMETHEUS_URL": closed_url(), "AUTOREM_ALERTMANAGER_URL": closed_url(),
           "AUTOREM_PLAYBOOKS_FILE": str(PLAYBOOKS_FILE), "AUTOREM_VERIFY_TIMEOUT_SECONDS": "0.5",
           "AUTOREM_VERIFY_INTERVAL_SECONDS": "0.05", "AUTO_REMEDIATE": "true"}
    env.update(extra)
    return env


def build_receiver(data_dir: Path, env: dict | None = None, settings: Settings | None = None,
                   token_from_settings: bool = False, **config) -> Flask:
    """A receiver app on DATA_DIR. ENV adds to receiver_env() (or SETTINGS replaces it); CONFIG adds to the app's
    config (PLAYBOOKS, UPSTREAMS, SPAN_EXPORTER, START_ENGINE, ...). The webhook token is WEBHOOK_TOKEN unless
    the config names another, or TOKEN_FROM_SETTINGS leaves it to the settings."""
    test_config = {"SETTINGS": settings or Settings.from_env(receiver_env(**(env or {}))), "DATA_DIR": data_dir,
                   "START_ENGINE": False}
    if not token_from_settings:
        test_config["WEBHOOK_TOKEN"] = Secret("AUTOREM_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
    test_config.update(config)
    return create_app(test_config)
