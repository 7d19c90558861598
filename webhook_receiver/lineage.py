"""Decision lineage: one JSON line per attempt, refusal and escalation, stored in the store and appended whole to the
receiver's file (flushed to disk); the store's entries exported oldest first as one merged file."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from autonomy.signal_contract import too_deep

from .store import IncidentStore, StoreError
from .store.lineage_rows import epoch_seconds

LINEAGE_FILE = "decision_lineage.jsonl"
ACTOR = "ChiefOfStaff"
PACK_FIELDS = ("ts", "actor", "event", "agent", "classification", "playbook", "attempt", "ok", "before", "after")
log = logging.getLogger(__name__)


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


MAX_ENTRY_DEPTH = 64  # a valid line nested deeper than this is unreadable here, as the signal contract has it
EXPORT_PAGE = 1000  # entries read from the store at a time by an export


class LineageStoreError(OSError):
    """The entry could not be stored (the message names the store and why); the file does not keep it either."""


@dataclass(frozen=True)
class LineageRead:
    """Entries read back, and how many torn or unreadable lines were skipped (with their line numbers)."""

    entries: list[dict]
    skipped_lines: tuple[int, ...]


@dataclass(frozen=True)
class LineagePage:
    """One page of stored entries, newest first; `next_cursor` (an id) continues with older ones, None when no
    older entry matches; `skipped_ids` are stored lines that are not readable entries (nested too deep)."""

    entries: list[dict]
    next_cursor: int | None
    skipped_ids: tuple[int, ...]


def _entry(raw: bytes | str) -> dict | None:
    """A line as an entry, or None: not JSON, not an object, or nested beyond MAX_ENTRY_DEPTH."""
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(entry, dict) or too_deep(entry, MAX_ENTRY_DEPTH):
        return None
    return entry


def _matches(entry: dict, agent: str | None, incident_id: str | None) -> bool:
    return (not agent or entry.get("agent") == agent) and (not incident_id or entry.get("incident_id") == incident_id)


class LineageLog:
    """Each entry stored in the store (what the API pages through, every receiver's together) and appended to this
    receiver's JSONL file (the design card's export), the pack's section 8 fields first, then the layer's own.
    Without a STORE (reading the file; tests of its format) only the file is written."""

    def __init__(self, path: Path, secrets: Iterable = (), store: IncidentStore | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.torn_lines = 0  # torn lines found at the file's end (a crash or a full disk mid-write), and ended
        self._lock = threading.Lock()
        # Defence in depth: should a configured secret's value ever reach an entry, only its name is written.
        self._secrets = [(s.reveal(), f"<secret {s.name}>") for s in secrets
                         if s is not None and len(s.reveal()) >= 8]
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        # A crash mid-write can leave a last line without its newline; end it so the next entry starts
        # on a line of its own (readers of the file skip and report the torn one).
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    with open(self.path, "ab") as out:
                        out.write(b"\n")
                        out.flush()
                        os.fsync(out.fileno())
                    self.torn_lines += 1

    def append(self, entry: dict) -> dict:
        """Write one entry as one line to the file (fsync'd), then to the store (durable); returns the entry as
        written. OSError if either fails, and then neither keeps it: a line the store refused is cut off the file
        again (LineageStoreError), so what a caller sees acknowledged is in both."""
        ordered = {key: entry.get(key) for key in PACK_FIELDS}
        ordered["ts"] = ordered["ts"] or utc_now_iso()
        ordered["actor"] = ordered["actor"] or ACTOR
        ordered.update({k: v for k, v in entry.items() if k not in PACK_FIELDS})
        epoch_seconds(ordered["ts"])  # a caller's ts that is no date-time is refused before anything is written
        text = json.dumps(ordered, separators=(",", ":"), default=str)
        if any(json.dumps(value)[1:-1] in text for value, _ in self._secrets):
            ordered = self._scrub(json.loads(text))
            text = json.dumps(ordered, separators=(",", ":"))
        line = (text + "\n").encode("utf-8")
        with self._lock:  # the file's order is the store's for this receiver, and a line cut off is only ours
            self._repair_torn_tail()  # a write cut short earlier (disk full) must not swallow this one
            with open(self.path, "ab") as f:
                start = f.tell()
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if self.store is not None:
                try:
                    self.store.append_lineage(ordered, text)
                except StoreError as exc:
                    self._cut_back(start)
                    raise LineageStoreError(f"the lineage entry was not stored: {exc}") from None
        return ordered

    def _cut_back(self, size: int) -> None:
        """Take the line just appended off the file again (it ended at the file's end, under the lock)."""
        try:
            with open(self.path, "r+b") as f:
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            log.exception("%s: a line the store refused could not be cut off the file again", self.path)

    def _scrub(self, value):
        if isinstance(value, str):
            for secret, name in self._secrets:
                value = value.replace(secret, name)
            return value
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub(v) for v in value]
        return value

    def page(self, limit: int, before: int | None = None, agent: str | None = None, since: float | None = None,
             incident_id: str | None = None) -> LineagePage:
        """Up to LIMIT stored entries, newest first, with an id below BEFORE (the newest when None), stamped at or
        after SINCE (epoch seconds): a few index reads, however long the history."""
        if self.store is None:
            raise RuntimeError("a LineageLog without a store has no pages: read() the file")
        stored = self.store.lineage_page(limit, before, agent=agent, incident_id=incident_id, since=since)
        entries, skipped = [], []
        for row in stored.entries:
            entry = _entry(row.line)
            if entry is None:
                skipped.append(row.id)
            else:
                entries.append(entry)
        return LineagePage(entries, stored.next_cursor, tuple(skipped))

    def read(self, agent: str | None = None, since: str | None = None, incident_id: str | None = None) -> LineageRead:
        """Entries in file order, filtered; torn or invalid lines are skipped and reported."""
        entries: list[dict] = []
        skipped: list[int] = []
        for number, entry in self._lines():
            if entry is None:
                skipped.append(number)
                continue
            if not _matches(entry, agent, incident_id):
                continue
            if since and str(entry.get("ts", "")) < since:
                continue
            entries.append(entry)
        return LineageRead(entries, tuple(skipped))

    def _lines(self) -> Iterator[tuple[int, dict | None]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                yield number, _entry(raw) if raw.endswith(b"\n") else None


def export(store: IncidentStore, out: Path) -> int:
    """Write every stored entry, oldest first, a page at a time, as the lineage file's lines to OUT: through a
    temporary file beside it, fsync'd, then renamed (never a half file under OUT's name). How many entries."""
    out = Path(out)
    fd, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    count, after = 0, 0
    try:
        os.fchmod(fd, 0o644)  # as the receiver's own file, not mkstemp's owner-only mode
        with os.fdopen(fd, "wb") as f:
            while page := store.lineage_after(after, EXPORT_PAGE):
                f.write(b"".join(row.line.encode("utf-8") + b"\n" for row in page))
                count, after = count + len(page), page[-1].id
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
    return count
