"""Decision lineage: one JSON line per attempt, refusal and escalation, written whole and flushed to disk."""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator

from autonomy.signal_contract import too_deep

LINEAGE_FILE = "decision_lineage.jsonl"
ACTOR = "ChiefOfStaff"
PACK_FIELDS = ("ts", "actor", "event", "agent", "classification", "playbook", "attempt", "ok", "before", "after")


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


BLOCK_BYTES = 64 * 1024
MAX_ENTRY_DEPTH = 64  # a valid line nested deeper than this is unreadable here, as the signal contract has it


@dataclass(frozen=True)
class LineageRead:
    """Entries read back, and how many torn or unreadable lines were skipped (with their line numbers)."""

    entries: list[dict]
    skipped_lines: tuple[int, ...]


@dataclass(frozen=True)
class LineagePage:
    """One page of entries, newest first; `next_cursor` continues with older ones (None: the start of the file);
    `skipped_offsets` are the byte offsets of torn or unreadable lines met on the way."""

    entries: list[dict]
    next_cursor: int | None
    skipped_offsets: tuple[int, ...]


def _entry(raw: bytes) -> dict | None:
    """A line as an entry, or None: not JSON, not an object, or nested beyond MAX_ENTRY_DEPTH."""
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(entry, dict) or too_deep(entry, MAX_ENTRY_DEPTH):
        return None
    return entry


def _minute_before(ts: str) -> str:
    moment = datetime.fromisoformat(ts.replace("Z", "+00:00")) - timedelta(minutes=1)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _matches(entry: dict, agent: str | None, incident_id: str | None) -> bool:
    return (not agent or entry.get("agent") == agent) and (not incident_id or entry.get("incident_id") == incident_id)


def _lines_backwards(f, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of every line that ends before END, last first; each read is one block, so a page costs
    what it reads, however long the file."""
    pos, pending = end, b""
    while pos > 0:
        size = min(BLOCK_BYTES, pos)
        pos -= size
        f.seek(pos)
        data = f.read(size) + pending
        stop = len(data)
        while True:
            newline = data.rfind(b"\n", 0, stop)
            if newline < 0:
                break
            yield pos + newline + 1, data[newline + 1:stop]
            stop = newline
        pending = data[:stop]
    if pending:
        yield 0, pending


class LineageLog:
    """Append-only JSONL; each entry has the pack's section 8 fields first, then the layer's own."""

    def __init__(self, path: Path, secrets: Iterable = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Defence in depth: should a configured secret's value ever reach an entry, only its name is written.
        self._secrets = [(s.reveal(), f"<secret {s.name}>") for s in secrets
                         if s is not None and len(s.reveal()) >= 8]
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        # A crash mid-write can leave a last line without its newline; end it so the next entry starts
        # on a line of its own (readers skip and report the torn one).
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    with open(self.path, "ab") as out:
                        out.write(b"\n")
                        out.flush()
                        os.fsync(out.fileno())

    def append(self, entry: dict) -> dict:
        """Write one entry as one line and fsync it before returning; returns the entry as written."""
        ordered = {key: entry.get(key) for key in PACK_FIELDS}
        ordered["ts"] = ordered["ts"] or utc_now_iso()
        ordered["actor"] = ordered["actor"] or ACTOR
        ordered.update({k: v for k, v in entry.items() if k not in PACK_FIELDS})
        text = json.dumps(ordered, separators=(",", ":"), default=str)
        if any(json.dumps(value)[1:-1] in text for value, _ in self._secrets):
            ordered = self._scrub(json.loads(text))
            text = json.dumps(ordered, separators=(",", ":"))
        line = (text + "\n").encode("utf-8")
        with self._lock:
            self._repair_torn_tail()  # a write cut short earlier (disk full) must not swallow this one
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        return ordered

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

    def page(self, limit: int, cursor: int | None = None, agent: str | None = None, since: str | None = None,
             incident_id: str | None = None) -> LineagePage:
        """Up to LIMIT entries, newest first, from before byte offset CURSOR (the file's end when None)."""
        if not self.path.exists():
            return LineagePage([], None, ())
        entries: list[dict] = []
        skipped: list[int] = []
        stop_before = _minute_before(since) if since else ""
        with open(self.path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            end = size if cursor is None else min(cursor, size)
            torn_tail = False
            if end == size and size:
                f.seek(size - 1)
                torn_tail = f.read(1) != b"\n"  # a last line cut short by a crash: torn, not an entry
            for number, (offset, raw) in enumerate(_lines_backwards(f, end)):
                if number == 0 and torn_tail:
                    skipped.append(offset)
                    continue
                if not raw:
                    continue
                entry = _entry(raw)
                if entry is None:
                    skipped.append(offset)
                    continue
                if since and str(entry.get("ts", "")) < since:
                    if str(entry.get("ts", "")) < stop_before:
                        # Lines are appended in time order, give or take the moments between stamping an
                        # entry and writing it: a minute before SINCE, everything further back is older.
                        return LineagePage(entries, None, tuple(skipped))
                    continue
                if _matches(entry, agent, incident_id):
                    entries.append(entry)
                    if len(entries) == limit:
                        return LineagePage(entries, offset or None, tuple(skipped))
        return LineagePage(entries, None, tuple(skipped))

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
