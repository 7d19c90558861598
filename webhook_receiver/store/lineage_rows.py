"""Lineage entries as rows of either store: the columns they are read by, and the page query both backends run."""
from __future__ import annotations

from typing import Mapping

from autonomy.signal_contract import parse_timestamp

from .contract import StoredLineage, StoredLineagePage

# Entries are stamped, then written, within moments (the stamp-to-write delay, or clocks of receivers sharing a store,
# stay well inside this): an entry stored before one stamped this long before SINCE is older than SINCE. It bounds
# a `since` page's scan to this window's entries plus the ones it answers.
SINCE_SLACK_SECONDS = 600.0
_FLOOR = "SELECT id FROM lineage WHERE ts < {m} ORDER BY ts DESC LIMIT 1"


def epoch_seconds(ts: object) -> float:
    """The entry's `ts` (ISO-8601 with a zone, as LineageLog stamps it) as epoch seconds; ValueError naming it."""
    try:
        return parse_timestamp(ts).timestamp()  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise ValueError(f"lineage entry: ts {str(ts)[:40]!r} is not an ISO-8601 date-time with a zone") from None


def column(value: object) -> str | None:
    """A field as an indexed column: text (PostgreSQL's text holds no NUL, so neither column of either store does)."""
    return None if value is None else str(value).replace("\x00", "\ufffd")


def lineage_row(entry: Mapping[str, object], line: str) -> tuple:
    """(ts, agent, incident_id, event, entry) for the INSERT; ValueError if `ts` is not a date-time."""
    return (epoch_seconds(entry.get("ts")), column(entry.get("agent")), column(entry.get("incident_id")),
            column(entry.get("event")), line)


def floor_query(mark: str) -> str:
    """The id below which no entry can be as new as the bound `since - SINCE_SLACK_SECONDS` (one index probe)."""
    return _FLOOR.format(m=mark)


def page_query(mark: str, limit: int, before: int | None, agent: str | None, incident_id: str | None,
               since: float | None, floor: int | None, pinned: bool = False) -> tuple[str, list]:
    """The newest LIMIT + 1 matching rows, (id, entry), by id descending: the extra one says whether older ones
    exist. A filter by agent (or else by incident) reads its index, (agent, id) or (incident_id, id); none, the
    primary key.

    PINNED writes that filter as a one-value range ordered by (column, id), which only its index serves in order:
    PostgreSQL's planner may otherwise walk the primary key and drop other agents' entries, at the cost of all
    written since the agent's last ones (an agent quiet for a month: a month of history)."""
    query, args, order = "SELECT id, entry FROM lineage WHERE TRUE", [], "id DESC"
    for name, value in (("agent", agent), ("incident_id", incident_id)):
        if not value:
            continue
        if pinned and order == "id DESC":
            query += f" AND {name} >= {mark} AND {name} <= {mark}"
            args += [column(value), column(value)]
            order = f"{name} DESC, id DESC"
        else:
            query += f" AND {name} = {mark}"
            args.append(column(value))
    if before is not None:
        query += f" AND id < {mark}"
        args.append(before)
    if floor is not None:
        query += f" AND id > {mark}"
        args.append(floor)
    if since is not None:
        # Not through the time index (ts + 0): FLOOR already bounds the walk down the ids, which stops at a full
        # page; the planner, unaware that ids follow time, would rather fetch and sort the whole window.
        query += f" AND ts + 0 >= {mark}"
        args.append(since)
    query += f" ORDER BY {order} LIMIT {mark}"
    args.append(limit + 1)
    return query, args


def to_page(rows: list[tuple], limit: int) -> StoredLineagePage:
    entries = [StoredLineage(int(i), line) for i, line in rows[:limit]]
    return StoredLineagePage(entries, entries[-1].id if len(rows) > limit else None)


def after_query(mark: str) -> str:
    return f"SELECT id, entry FROM lineage WHERE id > {mark} ORDER BY id LIMIT {mark}"
