"""`autonomy lineage export --out FILE`: every stored entry, oldest first, paged, written whole through a temporary
file (never a half file under FILE's name); with receivers sharing a PostgreSQL store, one merged file of them all.
`autonomy lineage` without a subcommand still prints this receiver's file."""
import json

import pytest

import webhook_receiver.lineage as lineage_module
from autonomy_cli import main
from webhook_receiver.lineage import LINEAGE_FILE, LineageLog
from webhook_receiver.store import LEDGER_FILE, SqliteIncidentStore, StoreError
from webhook_receiver.store.postgres_store import PostgresIncidentStore


@pytest.fixture(autouse=True)
def no_store_url(monkeypatch):
    for name in ("AUTOREM_STORE_URL", "AUTOREM_STORE_URL_FILE", "AUTOREM_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def entry(n, agent="CMO"):
    return {"ts": f"2025-08-18T15:00:{n:02d}.000Z", "event": "auto_remediation", "agent": agent, "attempt": n,
            "note": "<b>\"quoted\"</b> caf\u00e9"}


@pytest.fixture
def data_dir(tmp_path):
    """A data directory as a receiver leaves it: a ledger with five entries, and its lineage file."""
    directory = tmp_path / "data"
    store = SqliteIncidentStore(directory / LEDGER_FILE)
    log = LineageLog(directory / LINEAGE_FILE, store=store)
    for n in range(5):
        log.append(entry(n, agent="CMO" if n % 2 else "CRO"))
    store.close()
    return directory


def test_export_writes_every_stored_line_oldest_first_exactly_as_the_receiver_wrote_its_file(data_dir, tmp_path,
                                                                                              capsys, monkeypatch):
    monkeypatch.setattr(lineage_module, "EXPORT_PAGE", 2)  # several pages, one of them short
    out = tmp_path / "merged.jsonl"
    assert main(["lineage", "export", "--out", str(out), "--data-dir", str(data_dir)]) == 0
    assert out.read_bytes() == (data_dir / LINEAGE_FILE).read_bytes()
    assert "exported 5 lineage entries" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".merged")] == []  # no temporary left


def test_export_takes_the_data_directory_from_the_environment_and_replaces_an_older_export(data_dir, tmp_path,
                                                                                            monkeypatch):
    out = tmp_path / "merged.jsonl"
    out.write_text("an older export\n")
    monkeypatch.setenv("AUTOREM_DATA_DIR", str(data_dir))
    assert main(["lineage", "export", "--out", str(out)]) == 0
    assert [json.loads(line)["attempt"] for line in out.read_text().splitlines()] == [0, 1, 2, 3, 4]


def test_an_export_that_fails_midway_leaves_no_half_file_and_the_old_one_untouched(data_dir, tmp_path, monkeypatch,
                                                                                  capsys):
    out = tmp_path / "merged.jsonl"
    out.write_text("an older export\n")
    real = SqliteIncidentStore.lineage_after
    calls = []

    def failing_after(self, after=0, limit=1000):
        calls.append(after)
        if len(calls) == 2:
            raise StoreError(f"{self.path}: cannot read the lineage (disk I/O error)")
        return real(self, after, limit)

    monkeypatch.setattr(lineage_module, "EXPORT_PAGE", 2)
    monkeypatch.setattr(SqliteIncidentStore, "lineage_after", failing_after)
    assert main(["lineage", "export", "--out", str(out), "--data-dir", str(data_dir)]) == 1
    assert "cannot read the lineage (disk I/O error)" in capsys.readouterr().err
    assert out.read_text() == "an older export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "merged.jsonl"]


def test_export_names_a_missing_ledger_or_an_unwritable_place(tmp_path, data_dir, capsys):
    assert main(["lineage", "export", "--out", str(tmp_path / "x.jsonl"), "--data-dir", str(tmp_path / "none")]) == 2
    assert f"no ledger at {tmp_path / 'none' / LEDGER_FILE}" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()  # nothing created where nothing was
    missing = tmp_path / "no-such-dir" / "x.jsonl"
    assert main(["lineage", "export", "--out", str(missing), "--data-dir", str(data_dir)]) == 1
    assert f"{missing}: cannot write" in capsys.readouterr().err


def test_lineage_without_a_subcommand_still_prints_this_receivers_file(data_dir, capsys):
    assert main(["lineage", "--agent", "CMO", "--data-dir", str(data_dir)]) == 0
    assert [json.loads(line)["attempt"] for line in capsys.readouterr().out.splitlines()] == [1, 3]


def test_receivers_sharing_a_postgresql_store_export_one_merged_file(postgres_server, tmp_path, monkeypatch, capsys):
    url = postgres_server.create_database()
    stores = [PostgresIncidentStore(url, pool_size=2) for _ in range(2)]
    try:
        logs = [LineageLog(tmp_path / f"receiver-{n}" / LINEAGE_FILE, store=s) for n, s in enumerate(stores)]
        for n in range(6):
            logs[n % 2].append(entry(n, agent=f"agent-{n % 2}"))
        monkeypatch.setenv("AUTOREM_STORE_URL", url)
        out = tmp_path / "merged.jsonl"
        assert main(["lineage", "export", "--out", str(out), "--data-dir", str(tmp_path / "unused")]) == 0
        assert "exported 6 lineage entries from postgresql" in capsys.readouterr().out
        merged = out.read_text().splitlines()
        assert [json.loads(line)["attempt"] for line in merged] == list(range(6))
        own = [line for log in logs for line in log.path.read_text().splitlines()]
        assert sorted(merged) == sorted(own)  # each receiver's file is its part of the merged one
    finally:
        for store in stores:
            store.close()
        postgres_server.drop_database(url)
