"""The incident store: the Protocol the engine and the app are typed against, and the backends (SQLite, PostgreSQL)."""
from .contract import (
                       Claim,
                       IncidentClosed,
                       IncidentStore,
                       IngestResult,
                       KillSwitch,
                       LeaseLost,
                       StoredEvent,
                       StoredNotification,
                       StoreError,
)
from .opening import LEDGER_FILE, describe, open_store
from .sqlite_store import SqliteIncidentStore

__all__ = ["Claim", "IncidentClosed", "IncidentStore", "IngestResult", "KillSwitch", "LEDGER_FILE", "LeaseLost",
           "SqliteIncidentStore", "StoreError", "StoredEvent", "StoredNotification", "describe", "open_store"]
