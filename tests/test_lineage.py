"""LineageLog: the pack's section 8 decision lineage as append-only JSON lines."""
import json
import re
import threading

import pytest

from webhook_receiver.lineage import ACTOR, LINEAGE_FILE, PACK_FIELDS, LineageLog

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


def test_pages_read_from_the_end_go_back_through_every_entry_once_across_block_boundaries(log, path, monkeypatch):
    import webhook_receiver.lineage as lineage_module

    monkeypatch.setattr(lineage_module, "BLOCK_BYTES", 97)  # many blocks, lines split across them
    for n in range(40):
        log.append(entry(agent="CMO" if n % 3 else "CRO", attempt=n, ts=f"2025-08-18T15:00:{n:02d}.000Z"))
    with open(path, "ab") as f:
        f.write(b'{"torn": ')  # a crash mid-write
    seen, cursor, skipped = [], None, []
    while True:
        page = log.page(4, cursor, agent="CMO")
        seen += [e["attempt"] for e in page.entries]
        skipped += page.skipped_offsets
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [n for n in range(39, -1, -1) if n % 3]
    assert skipped == [path.stat().st_size - len(b'{"torn": ')]
    newer = log.page(100, since="2025-08-18T15:00:35.000Z")
    assert [e["attempt"] for e in newer.entries] == [39, 38, 37, 36, 35]
