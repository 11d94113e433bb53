"""The dashboard's records pages and live views in Debian's chromium (issue 13): search, open
and approve a record; the CSV import's per-row report; an alarm raised behind the page's back
showing as a badge and a locker marker without a reload; tasks naming the compartment.

The world and the fixtures are test_dashboard_browser.py's (a locker, a drop-off waiting, an
approved record, an overdue pickup). Every check compares the page with the API or the
database; screenshots go to test-artifacts/.
"""

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.cloud_api.test_dashboard_browser import (  # noqa: F401 (fixtures)
    ADMIN,
    LOCKER,
    Dashboard,
    _ok,
    _raise_alarms,
    browser,
    dashboard,
    go,
    log_in,
    page,
    shot,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "records_import.csv"
# The views poll every 4 s (live.js POLL_MS); a change must show within one round and the
# fetch, with room for a loaded machine.
LIVE_TIMEOUT_MS = 9000


def _documents_received(dashboard: Dashboard, number: str, name: str, mobile: str) -> None:
    api, key = dashboard.api, dashboard.integrator
    body = {
        "application_number": number,
        "applicant_name": name,
        "mobile": mobile,
        "matter_name": "食品经营许可证",
        "status": "prereview_passed",
    }
    _ok(api.post("/api/v1/records", json=body, headers=key), 201)
    _ok(
        api.post(
            f"/api/v1/records/{number}/transitions",
            json={"status": "documents_received"},
            headers=key,
        )
    )


def _mark_page(page: Page) -> None:
    """A flag that a reload (or a navigation) would lose."""
    page.evaluate("window.__sameDocument = true")


def _same_page(page: Page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def test_search_open_and_approve_a_record(page, dashboard):
    _documents_received(dashboard, "XA-B-9", "赵敏", "+8613911112222")
    _documents_received(dashboard, "XA-B-10", "赵敏", "+8613933334444")
    log_in(page, dashboard)
    go(page, "records")
    page.fill("#records-search", "赵敏")
    page.fill("#records-mobile", "2222")
    page.click("#records-results >> xpath=.. >> button[type=submit]")
    rows = page.locator("tr[data-record]")
    expect(rows).to_have_count(1)
    expect(page.locator("#records-range")).to_have_attribute("data-total", "1")
    shot(page, "records-search")

    rows.locator("a.open-record").click()
    expect(page.locator("#record-title")).to_contain_text("XA-B-9")
    expect(page.locator("#record-status")).to_have_attribute("data-status", "documents_received")
    moves = page.locator("#record-actions button[data-move]")
    expect(moves).to_have_count(3)  # approved, rejected, withdrawn: what the API allows
    assert sorted(moves.evaluate_all("bs => bs.map(b => b.dataset.move)")) == [
        "approved",
        "rejected",
        "withdrawn",
    ]
    # Rejecting needs a reason: nothing is sent without one.
    page.click('button[data-move="rejected"]')
    expect(page.locator("#toast")).to_contain_text("reason is required")
    page.click('button[data-move="approved"]')
    expect(page.locator("#record-status")).to_have_attribute("data-status", "approved")
    expect(page.locator('#record-audit tr[data-action="record.status"]')).to_have_count(2)
    shot(page, "record-approved")

    detail = _ok(dashboard.api.get("/api/v1/staff/records/XA-B-9"))
    assert detail["record"]["status"] == "approved"
    moved = [e for e in detail["audit"] if e["action"] == "record.status"]
    assert (moved[0]["actor"], moved[0]["detail"]) == (
        f"staff:{ADMIN}",
        {"from": "documents_received", "to": "approved"},
    )
    # The other 赵敏 was not touched.
    other = _ok(dashboard.api.get("/api/v1/staff/records/XA-B-10"))
    assert other["record"]["status"] == "documents_received"


def test_a_record_page_follows_changes_without_losing_what_is_typed(page, dashboard):
    """The record page polls: changes made elsewhere show without a reload, and a change that
    leaves the record's status and moves as they were does not redraw the actions, so a
    half-typed reason stays."""
    _documents_received(dashboard, "XA-B-11", "孙丽", "+8613955556666")
    log_in(page, dashboard)
    page.goto(f"{dashboard.url}/dashboard/#/records/XA-B-11")
    expect(page.locator("#record-status")).to_have_attribute("data-status", "documents_received")
    _mark_page(page)
    page.fill("#move-reason", "材料待补 half typed")
    page.evaluate("document.querySelector('#move-reason').dataset.mine = 'yes'")
    # Something else on the page changes (the approval system corrects the matter): the
    # page shows it, and the actions area (status and moves unchanged) is left as it was.
    _ok(
        dashboard.api.put(
            "/api/v1/records/XA-B-11",
            json={
                "applicant_name": "孙丽",
                "mobile": "+8613955556666",
                "matter_name": "食品经营许可证（延续）",
            },
            headers=dashboard.integrator,
        )
    )
    expect(page.locator("#record-facts")).to_contain_text("延续", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator('#record-audit tr[data-action="record.updated"]')).to_have_count(1)
    assert page.evaluate("document.querySelector('#move-reason').dataset.mine") == "yes"
    assert page.input_value("#move-reason") == "材料待补 half typed"

    _ok(
        dashboard.api.post(
            "/api/v1/records/XA-B-11/transitions",
            json={"status": "rejected", "reason": "approval system"},
            headers=dashboard.integrator,
        )
    )
    expect(page.locator("#record-status")).to_have_attribute(
        "data-status", "rejected", timeout=LIVE_TIMEOUT_MS
    )
    expect(page.locator("#record-actions button[data-move]")).to_have_count(0)
    assert _same_page(page)


def test_csv_upload_shows_the_per_row_report(page, dashboard, tmp_path):
    log_in(page, dashboard)
    go(page, "records")
    page.set_input_files("#import-file", str(EXAMPLE))
    page.click("#import-submit")
    rows = page.locator("#import-result tr[data-outcome]")
    expect(rows).to_have_count(5)
    expect(page.locator('#import-result tr[data-outcome="created"]')).to_have_count(5)
    expect(page.locator('#import-result [data-outcome="created"][data-count]')).to_have_attribute(
        "data-count", "5"
    )
    shot(page, "records-import")
    found = _ok(dashboard.api.get("/api/v1/staff/records", params={"q": "XA-2026-12"}))
    assert found["total"] == 5 and {r["status"] for r in found["items"]} == {"approved"}
    # The list behind the report shows them, without a reload.
    expect(page.locator('tr[data-record="XA-2026-1201"]')).to_be_visible()

    # Again: every row unchanged.
    page.set_input_files("#import-file", str(EXAMPLE))
    page.click("#import-submit")
    expect(page.locator('#import-result tr[data-outcome="unchanged"]')).to_have_count(5)

    # Rows refused, each with its reason in both languages.
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(
        "application_number,applicant,mobile,matter\n"
        "XA-B-2,李华,+8613800138000,食品经营许可证\n"  # approved already: unchanged
        "XA-B-1,王小明,+8613800138000,食品经营许可证\n"  # documents in the locker: illegal
        "XA-W-1,周杰,123,营业执照\n",
        encoding="utf-8",
    )
    page.set_input_files("#import-file", str(mixed))
    page.click("#import-submit")
    expect(page.locator("#import-result tr[data-outcome]")).to_have_count(3)
    expect(page.locator('#import-result tr[data-line="3"]')).to_have_attribute(
        "data-reason", "illegal_state_change"
    )
    expect(page.locator('#import-result tr[data-line="4"]')).to_contain_text("手机号无效")
    shot(page, "records-import-refused")

    # A broken file (GBK, not UTF-8): refused whole, nothing changed.
    before = _ok(dashboard.api.get("/api/v1/staff/records"))["total"]
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("申请编号,申请人,手机号,事项\nXA-G-1,王,13800138000,证\n".encode("gbk"))
    page.set_input_files("#import-file", str(gbk))
    page.click("#import-submit")
    expect(page.locator('#import-result .notice.error[data-reason="not_utf8"]')).to_contain_text(
        "UTF-8"
    )
    assert _ok(dashboard.api.get("/api/v1/staff/records"))["total"] == before


def test_an_alarm_shows_as_a_badge_and_a_locker_marker_without_a_reload(page, dashboard):
    log_in(page, dashboard)
    go(page, "lockers")
    row = page.locator(f'tr[data-locker-id="{LOCKER}"]')
    expect(row).to_have_attribute("data-open-alarms", "0")
    expect(page.locator("#alarms-badge")).to_be_hidden()
    _mark_page(page)

    _raise_alarms(dashboard)  # door forced at #4, a board down: straight into the database
    badge = page.locator("#alarms-badge")
    expect(badge).to_have_text("2", timeout=LIVE_TIMEOUT_MS)
    expect(badge).to_be_visible()
    expect(row.locator("[data-alarm-count]")).to_have_attribute(
        "data-alarm-count", "2", timeout=LIVE_TIMEOUT_MS
    )
    assert _same_page(page)
    shot(page, "lockers-alarm-marker")

    # On the alarms page a cleared alarm leaves the open list, and the badge counts down.
    go(page, "alarms")
    open_alarms = page.locator("#alarms-results tr[data-alarm-id]")
    expect(open_alarms).to_have_count(2)
    [forced] = [
        a for a in _ok(dashboard.api.get("/api/v1/alarms?open=true")) if a["kind"] == "door_forced"
    ]
    _ok(dashboard.api.post(f"/api/v1/alarms/{forced['id']}/ack"))
    expect(open_alarms).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
    expect(badge).to_have_text("1", timeout=LIVE_TIMEOUT_MS)
    go(page, "lockers")
    expect(row.locator("[data-alarm-count]")).to_have_attribute("data-alarm-count", "1")
    assert _same_page(page)


def test_the_task_list_names_the_compartment_and_follows_new_tasks(page, dashboard):
    log_in(page, dashboard)
    go(page, "tasks")
    waiting = _ok(dashboard.api.get("/api/v1/staff/dropoffs-waiting"))
    overdue = _ok(dashboard.api.get("/api/v1/staff/recovery-tasks"))
    for ho, section in [(waiting[0], "dropoffs"), (overdue[0], "recovery")]:
        task = page.locator(f'#{section} tr[data-handover-id="{ho["id"]}"]')
        expect(task).to_have_attribute("data-compartment", str(ho["compartment_number"]))
        expect(task.locator(".compartment-no")).to_have_text(
            f"{ho['compartment_number']} 号 No. {ho['compartment_number']}"
        )
    shot(page, "tasks-compartments")
    _mark_page(page)

    # A second drop-off is deposited at the locker: it appears, naming its compartment.
    body = {
        "application_number": "XA-B-12",
        "applicant_name": "吴磊",
        "mobile": "+8613977778888",
        "matter_name": "营业执照",
        "status": "prereview_passed",
    }
    _ok(dashboard.api.post("/api/v1/records", json=body, headers=dashboard.integrator), 201)
    dropoff = _ok(
        dashboard.api.post(
            "/api/v1/handovers/dropoff",
            headers=dashboard.integrator,
            json={"application_number": "XA-B-12", "size": "M", "locker_id": LOCKER},
        ),
        201,
    )
    _ok(
        dashboard.api.post(
            f"/api/v1/lockers/{LOCKER}/handovers/{dropoff['id']}/deposited",
            headers=dashboard.locker_key,
        )
    )
    task = page.locator(f'#dropoffs tr[data-handover-id="{dropoff["id"]}"]')
    expect(task).to_have_attribute(
        "data-compartment", str(dropoff["compartment_number"]), timeout=LIVE_TIMEOUT_MS
    )
    expect(page.locator("#dropoffs tr[data-handover-id]")).to_have_count(2)
    assert _same_page(page)
