"""GET /api/v1/lineage and the /lineage page, paged through the store: newest first, `limit`, an id cursor, the
filters kept on the "Older entries" link, every value escaped; the torn-lines gauge counts the file's torn tails."""
import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from webhook_receiver.lineage import LINEAGE_FILE
from webhook_receiver.receiver_state import receiver


def lineage_of(app):
    with app.app_context():
        return receiver().lineage


def fill(app, n=7):
    log = lineage_of(app)
    for i in range(n):
        log.append({"ts": f"2025-08-18T15:00:{i:02d}.000Z", "event": "auto_remediation",
                    "agent": "CMO" if i % 2 else "CRO", "attempt": i, "incident_id": f"i-{i % 3}", "ok": True})


def every_page(web, **params):
    seen, cursor, pages = [], None, 0
    while True:
        body = web.get("/api/v1/lineage", query_string={**params, **({"cursor": cursor} if cursor else {})}).get_json()
        seen += [e["attempt"] for e in body["entries"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, pages
        assert isinstance(cursor, str) and cursor.isdigit()


def test_the_api_pages_through_the_store_newest_first_with_each_filter(app):
    fill(app)
    web = app.test_client()
    assert every_page(web, limit=3) == ([6, 5, 4, 3, 2, 1, 0], 3)
    assert every_page(web, limit=2, agent="CMO") == ([5, 3, 1], 2)  # no empty last page: the cursor says it ends
    assert every_page(web, limit=1, incident="i-0") == ([6, 3, 0], 3)
    assert every_page(web, limit=2, since="2025-08-18T15:00:04Z") == ([6, 5, 4], 2)
    assert every_page(web, agent="CMO", since="2025-08-18T17:00:03+02:00") == ([5, 3], 1)


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "12345678901234567890", "\u0663"])
def test_a_malformed_cursor_is_a_400_naming_it(app, cursor):
    for path in ("/api/v1/lineage", "/lineage"):
        reply = app.test_client().get(path, query_string={"cursor": cursor})
        assert reply.status_code == 400
    body = app.test_client().get("/api/v1/lineage", query_string={"cursor": cursor}).get_json()
    assert body["error"].startswith("cursor: ")


def test_the_pages_older_link_keeps_the_filters_and_leads_to_the_next_page(app):
    fill(app)
    web = app.test_client()
    page = web.get("/lineage", query_string={"agent": "CMO", "limit": 2, "since": "2025-08-18T15:00:00Z"})
    text = page.get_data(as_text=True)
    [href] = re.findall(r"<a href='([^']*)'>Older entries</a>", text)
    query = parse_qs(urlsplit(html.unescape(href)).query)
    assert {k: v[0] for k, v in query.items() if k != "cursor"} == {"agent": "CMO", "limit": "2",
                                                                     "since": "2025-08-18T15:00:00Z"}
    older = web.get("/lineage" + html.unescape(href)).get_data(as_text=True)
    assert ">1</td>" in older and ">5</td>" not in older
    assert "Older entries" not in older  # the last page


def test_a_hostile_agent_name_round_trips_exactly_and_is_escaped_in_the_page(app):
    hostile = "<b onmouseover='x'>\"CMO\"</b> & co"
    lineage_of(app).append({"event": "remediation_refused", "agent": hostile, "attempt": 1})
    for n in range(3):
        lineage_of(app).append({"event": "remediation_refused", "agent": hostile, "attempt": n + 2})
    web = app.test_client()
    body = web.get("/api/v1/lineage", query_string={"agent": hostile, "limit": 2}).get_json()
    assert [e["agent"] for e in body["entries"]] == [hostile, hostile] and body["next_cursor"]
    text = web.get("/lineage", query_string={"agent": hostile, "limit": 2}).get_data(as_text=True)
    assert hostile not in text and "<b " not in text
    assert html.escape(hostile) in text
    [href] = re.findall(r"<a href='([^']*)'>Older entries</a>", text)
    assert parse_qs(urlsplit(html.unescape(href)).query)["agent"] == [hostile]


def test_the_torn_lines_gauge_counts_the_lineage_files_torn_tails_at_start(make_receiver, tmp_path):
    first = make_receiver()
    lineage_of(first).append({"event": "auto_remediation", "agent": "CMO", "attempt": 1})
    make_receiver.close(first)
    with open(tmp_path / LINEAGE_FILE, "ab") as f:  # a write cut short by a crash
        f.write(b'{"ts":"2025-08-18T15:02:11Z","agent":"CR')
    again = make_receiver()
    metrics = again.test_client().get("/metrics").get_data(as_text=True)
    assert "autonomy_lineage_torn_lines 1.0" in metrics
    body = again.test_client().get("/api/v1/lineage").get_json()
    assert [e["attempt"] for e in body["entries"]] == [1] and body["skipped_ids"] == []


def test_a_store_that_cannot_be_read_is_a_503_naming_it(app):
    lineage_of(app).store.close()  # as a database gone away would
    reply = app.test_client().get("/api/v1/lineage")
    error = reply.get_json()["error"]
    assert reply.status_code == 503 and "the lineage cannot be read now" in error and "incidents.sqlite3" in error
