"""Which store a receiver (or a command) uses: the PostgreSQL ledger AUTOREM_STORE_URL names, else SQLite in the
data directory."""
from __future__ import annotations

from pathlib import Path

from autonomy.secret import Secret

from .contract import IncidentStore, StoreError
from .sqlite_store import SqliteIncidentStore

LEDGER_FILE = "incidents.sqlite3"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def describe(url: Secret | str | None, data_dir: Path) -> str:
    """The store in words, without a password: for /readyz, logs and messages."""
    if not url:
        return f"sqlite {Path(data_dir) / LEDGER_FILE}"
    from .postgres_schema import redacted

    return f"postgresql {redacted(_text(url))}"


def _text(url: Secret | str) -> str:
    return url.reveal() if isinstance(url, Secret) else str(url)


def open_store(url: Secret | str | None, data_dir: Path, reopen_grace_seconds: float,
               **postgres_options: object) -> IncidentStore:
    """The store URL names (postgresql://...), or SQLite's ledger file in DATA_DIR when URL is empty; StoreError
    naming the problem otherwise."""
    if not url:
        return SqliteIncidentStore(Path(data_dir) / LEDGER_FILE, reopen_grace_seconds)
    text = _text(url).strip()
    if not text.startswith(POSTGRES_SCHEMES):
        scheme = text.split(":", 1)[0] if ":" in text else "none"
        raise StoreError(f"AUTOREM_STORE_URL: scheme {scheme!r} is not supported; use postgresql://user@host:port/db "
                         "(or leave it unset for SQLite in the data directory)")
    from .postgres_store import PostgresIncidentStore  # psycopg is loaded only by receivers that use it

    return PostgresIncidentStore(text, reopen_grace_seconds, **postgres_options)
