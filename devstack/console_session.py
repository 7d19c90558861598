"""The demo's layer and simulated fleet, up for the operator console: its browser tests and its README screenshot
(`make screenshot`) drive a real Chromium against it."""
from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .demo import TIME_FACTOR, demo_playbooks, layer_env
from .drills import DrillContext
from .fleet import SimulatedFleet, fleet_heartbeat
from .layer_stack import LayerStack
from .local_stack import ServedApp
from .polling import wait_until


@dataclass
class ConsoleSession:
    """A running layer with its fleet; READ_TOKEN guards the console, the stack's webhook token switches."""

    stack: LayerStack
    fleet: SimulatedFleet
    ctx: DrillContext
    read_token: str

    @property
    def console_url(self) -> str:
        return self.stack.receiver.url + "/console"

    @property
    def write_token(self) -> str:
        return self.stack.webhook_token.reveal()


@contextmanager
def console_session(workdir: Path, say=lambda text: None) -> Iterator[ConsoleSession]:
    """Start the fleet and the layer (the demo's settings, a read token), wait until Prometheus sees the whole
    fleet healthy, and stop everything afterwards."""
    fleet = SimulatedFleet()
    read_token = secrets.token_urlsafe(18)
    with ServedApp(fleet.app) as fleet_server:
        env = {**layer_env(fleet_server.url, fleet), "AUTOREM_PLAYBOOKS_FILE": str(demo_playbooks(workdir)),
               "AUTOREM_READ_TOKEN": read_token}
        with LayerStack(workdir, fleet_server.url, env=env, time_factor=TIME_FACTOR) as stack:
            beat = fleet_heartbeat(fleet, stack.push_url, stack.push_token, interval=0.5).start()
            try:
                ctx = DrillContext(stack, fleet, say)
                wait_until(lambda: stack.prometheus.query(f"count(autonomy_agent_info) >= {len(fleet.agents)}"),
                           60, "Prometheus to see the whole fleet")
                ctx.settle(*fleet.agents)
                yield ConsoleSession(stack, fleet, ctx, read_token)
            finally:
                beat.stop()


def log_in(driver, session: ConsoleSession, token: str) -> None:
    """Log in on the console's form with TOKEN, as an operator types it."""
    from selenium.webdriver.common.by import By

    driver.get(session.stack.receiver.url + "/console/login?next=/console")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    field.submit()
    wait_until(lambda: driver.find_elements(By.ID, "tiles"), 30, "the console after logging in")


def take_screenshot(out: Path, say=print) -> Path:
    """The console while the demo's drills run: a TIMEOUT being auto-resolved, a missing secret escalated."""
    from selenium.webdriver.common.by import By

    from .browser import headless_chromium

    with tempfile.TemporaryDirectory(prefix="autonomy-console-") as tmp, console_session(Path(tmp), say) as session, \
            headless_chromium(width=1280, height=1000) as driver:
        log_in(driver, session, session.read_token)
        wait_until(lambda: "Live" in driver.find_element(By.ID, "live").text, 30, "the live feed")
        session.fleet.inject("Content", "missing-secret", fixable=False)
        session.ctx.await_incident("Content", 0, lambda i: i["state"] == "escalated", "Content to be escalated")
        session.fleet.inject("CMO", "timeout")
        wait_until(lambda: _tile_text(driver, "CMO", ".badge") == "Recovering", 60, "CMO's tile to be Recovering")
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        say(f"wrote {out}")
        session.ctx.await_incident("CMO", 0, lambda i: i["outcome"] == "auto_resolved", "CMO to be auto-resolved")
        session.fleet.clear("Content")
    return out


def _tile_text(driver, agent: str, selector: str) -> str | None:
    from selenium.webdriver.common.by import By

    for tile in driver.find_elements(By.CSS_SELECTOR, "li.tile"):
        if tile.get_attribute("data-agent") == agent:
            return tile.find_element(By.CSS_SELECTOR, selector).text
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot the operator console during the demo's drills.")
    parser.add_argument("--out", type=Path, default=Path("docs/console.png"))
    args = parser.parse_args(argv)
    take_screenshot(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
