"""Real Prometheus, Alertmanager and receiver processes and in-process WSGI apps, on loopback and free ports."""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import requests

from autonomy.http_edge import BackgroundServer

from .checkout import REPO_ROOT
from .polling import StopWaiting, wait_until

MIN_VERSIONS = {"prometheus": (2, 42, 0), "alertmanager": (0, 25, 0)}
BINARY_NAMES = {
    "prometheus": ("prometheus",),
    "promtool": ("promtool",),
    "alertmanager": ("alertmanager", "prometheus-alertmanager"),
    "amtool": ("amtool",),
}
INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"


class MissingBinary(RuntimeError):
    """A required binary is absent or too old."""


def find_binary(kind: str) -> str | None:
    """Path of the binary for KIND (prometheus, promtool, alertmanager, amtool), or None."""
    override = os.environ.get(f"AUTOREM_{kind.upper()}_BIN")
    if override:
        return override if shutil.which(override) else None
    for name in BINARY_NAMES[kind]:
        path = shutil.which(name)
        if path:
            return path
    return None


def binary_version(path: str) -> tuple[int, int, int]:
    """The x.y.z version a Prometheus-project binary prints."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"version (\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    if not match:
        raise MissingBinary(f"{path}: cannot read its version")
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def require_binary(kind: str) -> str:
    """Path of a binary that is present and new enough, or MissingBinary with the install hint."""
    path = find_binary(kind)
    if path is None:
        raise MissingBinary(f"{kind} not found on PATH; install it: {INSTALL_HINT}")
    minimum = MIN_VERSIONS.get(kind)
    if minimum and binary_version(path) < minimum:
        raise MissingBinary(f"{path} is older than {'.'.join(map(str, minimum))}; install: {INSTALL_HINT}")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server child process on loopback: started on a free port (retried if it was taken), ready-checked,
    and stopped for sure."""

    kind = ""
    ready_path = "/-/ready"
    stop_signal = signal.SIGTERM

    def __init__(self, log_path: Path, extra_args: Sequence[str] = ()):
        self.log_path = Path(log_path)
        self.extra_args = list(extra_args)
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def executable(self) -> str:
        return require_binary(self.kind)

    def command(self, binary: str) -> list[str]:
        raise NotImplementedError

    def popen_options(self) -> dict:
        """More subprocess.Popen arguments (env, cwd) for the subclass's process."""
        return {}

    def start(self, timeout: float = 60.0, port: int | None = None) -> "ServerProcess":
        """Start on PORT (or a free one) and wait until ready; retried on another port if it was taken."""
        binary = self.executable()
        for _ in range(1 if port else 3):  # a free port can be taken between the probe and the bind
            self.port = port or free_port()
            with open(self.log_path, "ab") as log:
                log.write(f"--- starting {self.kind} on port {self.port}\n".encode())
                log.flush()
                self.process = subprocess.Popen(self.command(binary) + self.extra_args, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                **self.popen_options())
            try:
                wait_until(self._ready, timeout, f"{self.kind} on {self.url} to be ready")
                return self
            except ProcessExited:
                self.stop()
                if "address already in use" not in self.log_tail().lower():
                    raise
            except BaseException:
                self.stop()
                raise
        where = f"port {port}" if port else "a free port"
        raise RuntimeError(f"{self.kind} could not bind {where}:\n{self.log_tail()}")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise ProcessExited(f"{self.kind} exited with {self.process.returncode}:\n{self.log_tail()}")
        return requests.get(self.url + self.ready_path, timeout=2).status_code == 200

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """STOP_SIGNAL, then SIGKILL if the process has not exited within 30 s."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ManagedProcess(ServerProcess):
    """A Prometheus-project binary with its configuration file in WORKDIR."""

    def __init__(self, workdir: Path, config_text: str, extra_args: Sequence[str] = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / f"{self.kind}.yml"
        self.config_path.write_text(config_text)
        super().__init__(self.workdir / f"{self.kind}.log", extra_args)

    def reload(self) -> None:
        """Ask the process to re-read its configuration (needs --web.enable-lifecycle)."""
        requests.post(self.url + "/-/reload", timeout=10).raise_for_status()


class ReceiverProcess(ServerProcess):
    """`autonomy receiver` as a child process, as deployed: its own AUTOREM_* environment and data
    directory; a restart keeps its port, SIGKILL is there for crash tests."""

    kind = "receiver"
    ready_path = "/healthz"
    stop_signal = signal.SIGINT  # as Ctrl-C: the CLI stops its workers and closes the ledger

    def __init__(self, data_dir: Path, env: dict[str, str], log_path: Path):
        super().__init__(log_path)
        self.data_dir = Path(data_dir)
        self.env = dict(env)
        if "AUTOREM_AGENT_TOKEN" not in env and "AUTOREM_AGENT_TOKEN_FILE" not in env:
            self.env["AUTOREM_AGENT_TOKEN"] = secrets.token_urlsafe(24)  # playbooks.yaml's tokenSecret; no agent checks it

    @property
    def token(self) -> str:
        return self.env["AUTOREM_WEBHOOK_TOKEN"]

    def executable(self) -> str:
        return sys.executable

    def command(self, python: str) -> list[str]:
        return [python, "-m", "autonomy_cli", "receiver", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir)]

    def popen_options(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOREM_", "AUTO_REMEDIATE", "OTEL_"))}
        env.update(self.env, PYTHONUNBUFFERED="1")
        return {"env": env, "cwd": str(REPO_ROOT)}

    def start(self, timeout: float = 60.0, port: int | None = None) -> "ReceiverProcess":
        """Start on a free port the first time, on the same one after a stop or a kill."""
        return super().start(timeout, port or self.port or None)

    def kill(self) -> int:
        """SIGKILL: no handler runs, nothing is flushed or closed by the process itself; the exit code."""
        assert self.process is not None and self.process.poll() is None, "the receiver is not running"
        self.process.send_signal(signal.SIGKILL)
        code = self.process.wait(timeout=30)
        self.process = None
        return code


class ProcessExited(StopWaiting):
    """The managed process died while starting."""


class PrometheusProcess(ManagedProcess):
    """The real `prometheus` binary with a temporary TSDB."""

    kind = "prometheus"

    def command(self, binary: str) -> list[str]:
        return [binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
                "--log.level=warn"]

    def query(self, promql: str) -> list[dict]:
        """Instant query; the result vector (raises on an API error)."""
        reply = requests.get(self.url + "/api/v1/query", params={"query": promql}, timeout=10)
        reply.raise_for_status()
        return reply.json()["data"]["result"]


class AlertmanagerProcess(ManagedProcess):
    """The real Alertmanager binary, clustering off unless peers are given in extra_args."""

    kind = "alertmanager"

    def command(self, binary: str) -> list[str]:
        cluster = [] if any(a.startswith("--cluster.") for a in self.extra_args) else ["--cluster.listen-address="]
        return [binary, f"--config.file={self.config_path}", f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn", *cluster]


class ServedApp(BackgroundServer):
    """A WSGI app served by waitress on a loopback port in a background thread."""

    def __init__(self, app, threads: int = 8):
        super().__init__(app, "127.0.0.1", 0, threads)
