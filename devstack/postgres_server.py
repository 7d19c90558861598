"""A real PostgreSQL server for tests: Debian's `postgresql` package (initdb and pg_ctl) on a temporary directory and
a free port, trust authentication on loopback only, run as the unprivileged `postgres` user when we are root
(PostgreSQL refuses to run as root). One server per test session; one database per test."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from devstack.local_stack import MissingBinary, free_port

USER = "autonomy"
INSTALL_HINT = "apt-get install -y postgresql (or run scripts/ensure-binaries.sh as root)"


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: AUTOREM_PG_BINDIR, `pg_config --bindir`, /usr/lib/postgresql/*/bin."""
    candidates = [os.environ.get("AUTOREM_PG_BINDIR", "")]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=30)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)  # the newest first
    for directory in filter(None, candidates):
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "pg_ctl").is_file():
            return Path(directory)
    raise MissingBinary(f"PostgreSQL's initdb and pg_ctl not found; install them: {INSTALL_HINT}")


class PostgresServer:
    """initdb + pg_ctl start on a fresh directory; stop() stops it for sure and removes the directory."""

    def __init__(self, bindir: Path | None = None):
        self.bindir = bindir or find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="autonomy-pg-"))
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        self.port = 0
        self.as_user: str | None = None
        if os.geteuid() == 0:
            try:
                self.as_user = pwd.getpwnam("postgres").pw_name
            except KeyError:
                raise MissingBinary("running as root needs the unprivileged `postgres` user (the postgresql "
                                    f"package creates it): {INSTALL_HINT}") from None
            shutil.chown(self.root, self.as_user)
            os.chmod(self.root, 0o755)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def start(self, durable: bool = False) -> "PostgresServer":
        """Tests run without fsync (faster, nothing to keep); DURABLE keeps PostgreSQL's defaults, as deployed."""
        done = self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8")
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        for _ in range(5):  # the free port may be taken by the time the server binds it: try another
            self.port = free_port()
            options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
                       + ("" if durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"))
            done = self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")
            if done.returncode == 0:
                return self
        log = self.log.read_text()[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip() or done.stdout.strip()}\n{log}")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
