"""`autonomy store migrate`: one receiver's SQLite ledger copied into an empty PostgreSQL ledger in one transaction
(all or nothing), a page at a time, its counts checked before the commit and again after it.

The operator console's events are not copied: they are a live feed, not history (a console reconnecting to the new
store starts from its events). Nor do they count against an empty target: a receiver that ran on it may have left
some."""
from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from psycopg import Connection, Error, conninfo, errors

from ..data_dir import DataDirError, DataDirLock
from . import sqlite_schema
from .contract import StoreError
from .opening import LEDGER_FILE, POSTGRES_SCHEMES
from .postgres_schema import migrate, open_pool, redacted

PAGE_ROWS = 1000
LOCK_TIMEOUT = "10s"  # a receiver still writing the target: refused, not waited for
# What is copied, in the order the target's references need: (table, its columns, the key its pages follow).
# Notifications and lineage keep their ids: a webhook's answer named its notification's id, and lineage is read in
# id order. Leases are not copied: the receiver is stopped, and a lease without it means nothing.
TABLES = (
    ("incidents", ("id", "agent", "state", "doc", "opened_at", "conflict_key", "retry_at"), ("id",)),
    ("incident_agents", ("agent", "incident_id"), ("agent", "incident_id")),
    ("flags", ("name", "value"), ("name",)),
    ("notifications", ("id", "received_at", "source", "body"), ("id",)),
    ("lineage", ("id", "ts", "agent", "incident_id", "event", "entry"), ("id",)),
)
WORDS = {"incidents": "incidents", "incident_agents": "conflict claimants", "flags": "flags",
         "notifications": "notifications", "lineage": "lineage entries"}
IDENTITIES = ("notifications", "lineage")  # their id sequences continue past the copied ids
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


class CopyUnverified(StoreError):
    """The copy was committed, but the target's counts read back differ from the source's."""


@dataclass(frozen=True)
class CopyReport:
    """What was copied (rows per table, checked on the target after the commit), from where to where."""

    source: Path
    target: str  # without its password
    counts: dict[str, int]
    open_incidents: int

    def summary(self) -> str:
        c = self.counts
        return (f"copied {c['incidents']} incidents ({self.open_incidents} open), {c['notifications']} "
                f"notifications, {c['flags']} flags and {c['lineage']} lineage entries from sqlite {self.source} "
                f"to postgresql {self.target}; the target's counts match")


def _scheme(text: str) -> str:
    head = text.split(":", 1)[0] if ":" in text else ""
    return repr(head) if _SCHEME.fullmatch(head) else "none"


def ledger_path(spec: str) -> Path:
    """The SQLite ledger `sqlite:PATH` or `sqlite:///abs/path` names (a directory: its incidents.sqlite3)."""
    if not spec.startswith("sqlite:"):
        raise StoreError(f"the source must be sqlite:PATH (a receiver's SQLite ledger), not scheme {_scheme(spec)}")
    text = spec[len("sqlite:"):]
    if text.startswith("//"):
        if not text.startswith("///"):
            raise StoreError(f"{spec}: sqlite:// takes an absolute path (sqlite:///var/lib/autonomy/"
                             f"{LEDGER_FILE}); or write sqlite:PATH")
        text = text[2:]
    if not text:
        raise StoreError("the source sqlite: names no file; write sqlite:PATH")
    path = Path(text).expanduser()
    return path / LEDGER_FILE if path.is_dir() else path


def target_url(url: str) -> str:
    """URL if it is a PostgreSQL URL libpq can parse; the message never shows the URL (it may hold a password)."""
    text = url.strip()
    if not text.startswith(POSTGRES_SCHEMES):
        raise StoreError(f"the target must be postgresql://user@host:port/db, not scheme {_scheme(text)}")
    try:
        conninfo.conninfo_to_dict(text)
    except Error:
        # libpq's message quotes the whole URL, password included: not shown.
        raise StoreError("the target postgresql:// URL cannot be parsed (check its brackets, spaces and "
                         "percent-encoding: postgresql://user@host:port/db)") from None
    return text


def _said(exc: Exception, url: str) -> str:
    """The driver's message in one line, at most 300 characters, never the password."""
    password = conninfo.conninfo_to_dict(url).get("password")
    text = " ".join(str(exc).split()) or type(exc).__name__
    return (text.replace(password, "***") if password else text)[:300]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise StoreError(f"{path}: no such file (name the receiver's {LEDGER_FILE}, or its data directory)")
    if not path.is_file():
        raise StoreError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise StoreError(f"{path}: empty, not an SQLite ledger")


def _open_source(path: Path) -> sqlite3.Connection:
    """The ledger through the SQLite store's own checks (integrity; an older schema migrated, a newer refused)."""
    if _has_no_incidents(path):
        raise StoreError(f"{path}: an SQLite file but not a receiver's ledger (it has no incidents table)")
    db = sqlite_schema.connect(path)
    sqlite_schema.migrate(db, path)
    return db


def _has_no_incidents(path: Path) -> bool:
    """True for an SQLite file without the ledger's table, looked at read-only (a foreign file is left as it is);
    False too when it cannot be read: connect() then says why."""
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        return probe.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'incidents'"
                             ).fetchone() is None
    except sqlite3.Error:
        return False
    finally:
        probe.close()


def _source_counts(db: sqlite3.Connection, path: Path, now: float) -> tuple[dict[str, int], int]:
    leases = db.execute("SELECT COUNT(*) FROM leases WHERE expires_at > ?", (now,)).fetchone()[0]
    if leases:
        raise StoreError(f"{path}: {leases} live lease{'s' if leases != 1 else ''} (a receiver is remediating "
                         "from this ledger): stop the receiver first, then migrate")
    orphans = db.execute("SELECT COUNT(*) FROM incident_agents WHERE incident_id NOT IN "
                         "(SELECT id FROM incidents)").fetchone()[0]
    if orphans:
        raise StoreError(f"{path}: {orphans} incident_agents rows name no incident; the ledger is inconsistent, "
                         "nothing was copied")
    counts = {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table, _, _ in TABLES}
    opened = db.execute("SELECT COUNT(*) FROM incidents WHERE state != 'closed'").fetchone()[0]
    return counts, opened


def _pages(db: sqlite3.Connection, table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> Iterator[list]:
    """TABLE's rows in KEY order, PAGE_ROWS at a time (keyset paging: each page is one indexed range read)."""
    select, keys = f"SELECT {', '.join(columns)} FROM {table}", ", ".join(key)
    order = f" ORDER BY {keys} LIMIT {PAGE_ROWS}"
    after = f" WHERE ({keys}) > ({', '.join('?' * len(key))})"
    rows = db.execute(select + order).fetchall()
    while rows:
        yield rows
        if len(rows) < PAGE_ROWS:
            return
        rows = db.execute(select + after + order, [rows[-1][columns.index(k)] for k in key]).fetchall()


def _target_counts(db: Connection) -> dict[str, int]:
    query = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {table})" for table, _, _ in TABLES)
    return dict(zip((table for table, _, _ in TABLES), db.execute(query).fetchone()))


def _in_words(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {WORDS[table]}" for table, n in counts.items())


def _fill(target: Connection, source: sqlite3.Connection, expected: dict[str, int], where: str) -> None:
    with target.transaction():
        target.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        target.execute("LOCK TABLE " + ", ".join(table for table, _, _ in TABLES) + " IN EXCLUSIVE MODE")
        held = _target_counts(target)
        if any(held.values()):
            raise StoreError(f"{where}: the target ledger is not empty ({_in_words(held)}); migrate only fills "
                             "an empty ledger: name a new database")
        with target.cursor() as cur:
            for table, columns, key in TABLES:
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for page in _pages(source, table, columns, key):
                        for row in page:
                            copy.write_row(row)
        for table in IDENTITIES:
            target.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), top) FROM "
                           f"(SELECT max(id) AS top FROM {table}) AS copied WHERE top IS NOT NULL")
        copied = _target_counts(target)
        if copied != expected:
            raise StoreError(f"{where}: the copy holds {_in_words(copied)}, the source {_in_words(expected)}; "
                             "rolled back, nothing was written")


def copy_ledger(source: Path, url: str, now: float | None = None) -> CopyReport:
    """Copy the SQLite ledger SOURCE into the empty PostgreSQL ledger URL; StoreError (nothing written) if it
    cannot be done, saying why and never showing the password; CopyUnverified if the counts differ after it."""
    url = target_url(url)
    where = redacted(url)
    source = Path(source)
    _check_file(source)
    try:
        lock = DataDirLock(source.parent).acquire()  # no receiver starts on the ledger meanwhile
    except DataDirError as exc:
        raise StoreError(f"{exc}: stop the receiver first, then migrate") from None
    try:
        db = _open_source(source)
        try:
            db.execute("BEGIN")  # one snapshot of the source for the whole copy
            expected, opened = _source_counts(db, source, time.time() if now is None else now)
            return CopyReport(source, where, _copy(db, url, where, expected), opened)
        finally:
            db.close()
    finally:
        lock.release()


def _copy(source: sqlite3.Connection, url: str, where: str, expected: dict[str, int]) -> dict[str, int]:
    pool = open_pool(url, max_size=1)
    try:
        try:
            migrate(pool, where)
        except Error as exc:
            raise StoreError(f"{where}: cannot bring the target's schema up to date ({_said(exc, url)})") from None
        try:
            with pool.connection() as target:
                _fill(target, source, expected, where)
        except errors.LockNotAvailable:
            raise StoreError(f"{where}: the target ledger is in use (its tables stayed locked for {LOCK_TIMEOUT}):"
                             " stop the receivers using it, then migrate") from None
        except Error as exc:
            raise StoreError(f"{where}: the copy failed and nothing was written ({_said(exc, url)})") from None
        try:
            with pool.connection() as target:
                found = _target_counts(target)
        except Error as exc:
            raise CopyUnverified(f"{where}: committed, but its counts could not be read back ({_said(exc, url)})"
                                 ) from None
    finally:
        pool.close()
    if found != expected:
        raise CopyUnverified(f"{where}: committed, but the target now holds {_in_words(found)} and the source "
                             f"{_in_words(expected)}: is a receiver already writing to it?")
    return found
