"""LineageLog: the pack's section 8 decision lineage as append-only JSON lines, each stored in the store too."""
import json
import os
import re
import threading
from datetime import datetime, timezone

import pytest

from autonomy.secret import Secret
from webhook_receiver.lineage import ACTOR, LINEAGE_FILE, PACK_FIELDS, LineageLog, LineageStoreError
from webhook_receiver.store import SqliteIncidentStore, StoreError

SECTION_8 = ["ts", "actor", "event", "agent", "classification", "playbook", "attempt", "ok", "before", "after"]
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def path(tmp_path):
    return tmp_path / LINEAGE_FILE


@pytest.fixture
def log(path):
    return LineageLog(path)


def entry(agent="CRO", ts=None, **extra) -> dict:
    out = {"event": "auto_remediation", "agent": agent, "classification": "CAPACITY",
           "playbook": "RebalanceCapacity", "attempt": 1, "ok": True,
           "before": {"successRate": 0.82, "alignment": 0.9, "backlogAgeMinutes": 41},
           "after": {"successRate": 0.95, "alignment": 0.96, "backlogAgeMinutes": 9}}
    if ts:
        out["ts"] = ts
    out.update(extra)
    return out


def raw_lines(path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_the_pack_section_8_fields_come_first_in_order_then_the_layers_own(log, path):
    # keys given out of order, extras mixed in between
    scrambled = {"incident_id": "i-1", "after": {"x": 1}, "ok": False, "trace_id": "t" * 32, "agent": "CMO",
                 "before": {"x": 0}, "attempt": 2, "playbook": "P", "classification": "TRANSIENT",
                 "event": "auto_remediation", "steps": []}
    log.append(scrambled)
    written = json.loads(raw_lines(path)[0])
    assert list(PACK_FIELDS) == SECTION_8
    assert list(written) == SECTION_8 + ["incident_id", "trace_id", "steps"]


def test_missing_fields_are_written_as_null_and_ts_and_actor_are_filled(log, path):
    returned = log.append({"event": "no_action", "agent": "CMO"})
    written = json.loads(raw_lines(path)[0])
    assert written == returned
    assert written["actor"] == ACTOR == "ChiefOfStaff"
    assert ISO_Z.match(written["ts"])
    assert written["classification"] is None and written["playbook"] is None and written["after"] is None


def test_a_given_ts_and_actor_are_kept(log):
    written = log.append(entry(ts="2025-08-18T15:02:11Z", actor="Tester"))
    assert written["ts"] == "2025-08-18T15:02:11Z" and written["actor"] == "Tester"


def test_every_line_ends_with_a_newline_and_is_one_valid_json_object(log, path):
    log.append(entry(note="line\nbreak inside a value"))
    log.append(entry(agent="CMO", weird="\u2028 and \"quotes\" and </script>"))
    log.append(entry(when=object()))  # not JSON-serialisable: written as its str()
    lines = raw_lines(path)
    assert len(lines) == 3
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert isinstance(json.loads(line), dict)
    assert [e["agent"] for e in log.read().entries] == ["CRO", "CMO", "CRO"]


def test_concurrent_appends_never_interleave(log, path):
    def writer(n):
        for i in range(50):
            log.append(entry(agent=f"A{n}", seq=i, padding="x" * 2000))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    read = log.read()
    assert read.skipped_lines == ()
    assert len(read.entries) == 400
    for n in range(8):
        assert [e["seq"] for e in read.entries if e["agent"] == f"A{n}"] == list(range(50))


def test_a_torn_last_line_is_skipped_and_reported_by_read(log, path):
    log.append(entry(agent="CMO"))
    with open(path, "ab") as f:
        f.write(b'{"ts":"2025-08-18T15:02:11Z","actor":"ChiefOfStaff","event":"auto_rem')  # crash mid-write
    read = log.read()
    assert [e["agent"] for e in read.entries] == ["CMO"]
    assert read.skipped_lines == (2,)


def test_after_a_restart_the_next_append_starts_on_its_own_line(log, path):
    log.append(entry(agent="CMO"))
    with open(path, "ab") as f:
        f.write(b'{"ts":"2025-08-18T15:02:11Z","agent":"CR')
    restarted = LineageLog(path)
    restarted.append(entry(agent="Content"))
    read = restarted.read()
    assert [e["agent"] for e in read.entries] == ["CMO", "Content"]
    assert read.skipped_lines == (2,)
    assert raw_lines(path)[-1].startswith(b'{"ts":')


def test_opening_a_file_that_ends_cleanly_changes_nothing(log, path):
    log.append(entry())
    before = path.read_bytes()
    LineageLog(path)
    assert path.read_bytes() == before


def test_an_append_after_a_torn_write_in_the_same_process_is_still_readable(log, path):
    log.append(entry(agent="CMO"))
    with open(path, "ab") as f:  # e.g. a write cut short by ENOSPC, without restarting
        f.write(b'{"ts":"2025-08-18T15:02:11Z","agent":"CR')
    log.append(entry(agent="Content"))
    assert [e["agent"] for e in log.read().entries] == ["CMO", "Content"]


def test_lines_that_are_not_json_objects_are_skipped_and_reported(log, path):
    log.append(entry(agent="CMO"))
    with open(path, "ab") as f:
        f.write(b"not json\n[1, 2]\n\xff\xfe\n")
    log.append(entry(agent="CRO"))
    read = log.read()
    assert [e["agent"] for e in read.entries] == ["CMO", "CRO"]
    assert read.skipped_lines == (2, 3, 4)


def test_read_of_a_missing_file_is_empty(tmp_path):
    log = LineageLog(tmp_path / "sub" / LINEAGE_FILE)
    assert log.read().entries == [] and log.read().skipped_lines == ()


def test_read_filters_by_agent_incident_and_since(log):
    log.append(entry(agent="CMO", ts="2025-08-18T15:00:00.000Z", incident_id="i-1"))
    log.append(entry(agent="CRO", ts="2025-08-18T15:01:00.000Z", incident_id="i-2"))
    log.append(entry(agent="CMO", ts="2025-08-18T15:02:00.000Z", incident_id="i-3"))
    assert [e["incident_id"] for e in log.read(agent="CMO").entries] == ["i-1", "i-3"]
    assert [e["incident_id"] for e in log.read(incident_id="i-2").entries] == ["i-2"]
    assert [e["incident_id"] for e in log.read(since="2025-08-18T15:01:00.000Z").entries] == ["i-2", "i-3"]
    assert [e["incident_id"] for e in log.read(agent="CMO", since="2025-08-18T15:00:30.000Z").entries] == ["i-3"]
    assert log.read(agent="Nobody").entries == []


def test_entries_are_returned_in_file_order(log):
    for n in range(5):
        log.append(entry(seq=n))
    assert [e["seq"] for e in log.read().entries] == [0, 1, 2, 3, 4]


class FailingStore:
    """A store whose lineage writes fail, as a database gone away would (a fake: only the error path)."""

    def __init__(self, real):
        self.real, self.failing = real, True

    def append_lineage(self, entry, line):
        if self.failing:
            raise StoreError("postgresql host=db dbname=autonomy: cannot store the lineage entry (connection lost)")
        return self.real.append_lineage(entry, line)


@pytest.fixture
def store(tmp_path):
    made = SqliteIncidentStore(tmp_path / "incidents.sqlite3")
    yield made
    made.close()


def test_each_entry_goes_to_the_file_and_to_the_store_as_the_same_line(path, store):
    log = LineageLog(path, store=store)
    log.append(entry(agent="CMO", incident_id="i-1", note="\u2028 </script> \"quoted\""))
    log.append(entry(agent="CRO", incident_id="i-2"))
    file_lines = [line.rstrip(b"\n").decode() for line in raw_lines(path)]
    stored = store.lineage_after(0)
    assert [row.line for row in stored] == file_lines
    assert [row.id for row in stored] == sorted(row.id for row in stored)


def test_pages_come_from_the_store_newest_first_with_a_cursor_and_filters(path, store):
    log = LineageLog(path, store=store)
    for n in range(7):
        log.append(entry(agent="CMO" if n % 2 else "CRO", attempt=n, incident_id=f"i-{n % 3}",
                         ts=f"2025-08-18T15:00:{n:02d}.000Z"))
    seen, cursor = [], None
    while True:
        page = log.page(2, cursor, agent="CMO")
        seen += [e["attempt"] for e in page.entries]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [5, 3, 1]
    assert [e["attempt"] for e in log.page(10, incident_id="i-0").entries] == [6, 3, 0]
    since = datetime(2025, 8, 18, 15, 0, 4, tzinfo=timezone.utc).timestamp()
    assert [e["attempt"] for e in log.page(10, since=since).entries] == [6, 5, 4]
    assert log.page(10).skipped_ids == ()


def test_an_entry_nested_beyond_the_depth_limit_is_stored_but_skipped_and_named_by_id_when_paged(path, store):
    log = LineageLog(path, store=store)
    log.append(entry(agent="CMO", attempt=1))
    deep: dict = {}
    for _ in range(100):
        deep = {"a": deep}
    log.append(entry(agent="CMO", attempt=2, before=deep))
    page = log.page(10)
    assert [e["attempt"] for e in page.entries] == [1]
    assert page.skipped_ids == (store.lineage_after(0)[-1].id,)


def test_a_line_the_store_refuses_is_cut_off_the_file_again_and_the_error_names_the_store(path, store):
    failing = FailingStore(store)
    log = LineageLog(path, store=failing)
    failing.failing = False
    log.append(entry(agent="CMO", attempt=1))
    before = path.read_bytes()
    failing.failing = True
    with pytest.raises(OSError) as raised:  # the callers' contract: a line that could not be written is an OSError
        log.append(entry(agent="CMO", attempt=2))
    assert isinstance(raised.value, LineageStoreError)
    assert "not stored" in str(raised.value) and "postgresql host=db" in str(raised.value)
    assert path.read_bytes() == before  # neither keeps it
    assert [json.loads(r.line)["attempt"] for r in store.lineage_after(0)] == [1]
    failing.failing = False
    log.append(entry(agent="CMO", attempt=3))
    assert [e["attempt"] for e in log.read().entries] == [1, 3]
    assert [json.loads(r.line)["attempt"] for r in store.lineage_after(0)] == [1, 3]


def test_a_line_the_file_refuses_is_not_stored_either(path, store, monkeypatch):
    log = LineageLog(path, store=store)
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        log.append(entry(agent="CMO"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert store.lineage_after(0) == []


def test_a_ts_that_is_not_a_date_time_is_refused_before_anything_is_written(path, store):
    log = LineageLog(path, store=store)
    with pytest.raises(ValueError, match="ts 'yesterday'"):
        log.append(entry(ts="yesterday"))
    assert not path.exists() or path.read_bytes() == b""
    assert store.lineage_after(0) == []


def test_a_secret_value_is_scrubbed_from_the_stored_line_as_from_the_file(path, store):
    secret = Secret("AUTOREM_ESCALATION_TOKEN", "s3cret-value-123")
    log = LineageLog(path, [secret], store=store)
    log.append(entry(agent="CMO", error=f"Authorization: Bearer {secret.reveal()}"))
    [row] = store.lineage_after(0)
    assert secret.reveal() not in row.line and "<secret AUTOREM_ESCALATION_TOKEN>" in row.line
    assert row.line == raw_lines(path)[0].rstrip(b"\n").decode()


def test_torn_lines_found_at_the_files_end_are_counted(log, path):
    log.append(entry(agent="CMO"))
    assert log.torn_lines == 0
    with open(path, "ab") as f:
        f.write(b'{"ts":"2025-08-18T15:02:11Z","agent":"CR')
    assert LineageLog(path).torn_lines == 1
