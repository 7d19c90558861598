"""The incident store: the Protocol the engine and the app are typed against, and its SQLite backend."""
from .contract import (
                       Claim,
                       IncidentClosed,
                       IncidentStore,
                       IngestResult,
                       KillSwitch,
                       LeaseLost,
                       StoredNotification,
                       StoreError,
)
from .sqlite_store import SqliteIncidentStore

__all__ = ["Claim", "IncidentClosed", "IncidentStore", "IngestResult", "KillSwitch", "LeaseLost",
           "SqliteIncidentStore", "StoreError", "StoredNotification"]
