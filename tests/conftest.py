"""Fixtures: a fresh exporter app per test; the receiver family (make_receiver, app, web, receiver_store, and h:
one on fake upstreams); the real binaries for integration tests."""
import os

import pytest

from autonomy.settings import Secret, Settings
from devstack.local_stack import MissingBinary, require_binary
from exporter.app import create_app

TOKEN = "test-push-token"
# playbooks.yaml names the agents' action token by this setting; a receiver built in a test sends this value.
os.environ.setdefault("AUTOREM_AGENT_TOKEN", "test-agent-token")


@pytest.fixture
def settings():
    return Settings.from_env({})


@pytest.fixture
def exporter_app(settings):
    return create_app({"SETTINGS": settings, "EXPORTER_TOKEN": Secret("AUTOREM_EXPORTER_TOKEN", TOKEN)})


@pytest.fixture
def client(exporter_app):
    return exporter_app.test_client()


@pytest.fixture
def auth():
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def make_receiver(tmp_path):
    """Build receiver apps (tests/receivers.py) on tmp_path; every app built is shut down at teardown."""
    from tests.receivers import build_receiver
    from webhook_receiver.app import shutdown

    live = []

    def make(env=None, data_dir=None, **config):
        app = build_receiver(data_dir or tmp_path, env, **config)
        live.append(app)
        return app

    make.close = lambda app: (live.remove(app), shutdown(app))
    yield make
    for app in live:
        shutdown(app)


@pytest.fixture
def app(make_receiver):
    """A receiver app with the default test settings."""
    return make_receiver()


@pytest.fixture
def web(app):
    return app.test_client()


@pytest.fixture
def receiver_store(app):
    return app.extensions["autonomy_receiver"].store


@pytest.fixture(scope="module")
def agents():
    """The loopback agents the engine's actions reach (tests/engine_harness.py), one server per module."""
    from tests.engine_harness import Agents

    served = Agents()
    yield served
    served.stop()


@pytest.fixture
def h(tmp_path, agents):
    """A receiver on fakes for one test: CRO and Content healthy; build() it with the settings the test needs."""
    from tests.engine_harness import Harness

    harness = Harness(tmp_path, agents)
    harness.prom.add("CRO", "Revenue")
    harness.prom.add("Content", "Content")
    yield harness
    harness.close()


def real_binary(kind: str) -> str:
    """Path of a real binary; in CI a missing one fails the test, elsewhere it skips."""
    try:
        return require_binary(kind)
    except MissingBinary as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI needs the real {kind}: {exc}")
        pytest.skip(str(exc))


def real_browser() -> tuple[str, str]:
    """Paths of Debian's chromium and chromedriver (devstack/browser.py); in CI missing ones fail, elsewhere skip."""
    from devstack.browser import MissingBrowser, chromium_paths

    try:
        return chromium_paths()
    except MissingBrowser as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI needs the real Chromium: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium WebDriver (devstack/browser.py) showing pages at 1280x900, one start per module."""
    real_browser()
    from devstack.browser import headless_chromium

    with headless_chromium() as driver:
        yield driver


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (devstack/postgres_server.py); in CI a missing one fails, elsewhere
    the tests that need it skip."""
    from devstack.postgres_server import PostgresServer, find_bindir

    try:
        bindir = find_bindir()
        server = PostgresServer(bindir)
    except MissingBinary as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI needs a real PostgreSQL server: {exc}")
        pytest.skip(str(exc))
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()
