"""The dashboard's "resend code / 重发开箱码" button in Debian's chromium (issue 13), on the
world of test_dashboard_browser (its fixtures): shown only on a record whose code is out,
two clicks (the first revokes a code), then what the page says is checked against the API:
the audit line, the SMS queued, the old code refused and the new one accepted at the locker.
A refusal (a second resend within the minute) is shown in both languages."""

import pytest
from playwright.sync_api import Page, expect

from tests.cloud_api.helpers import code_of
from tests.cloud_api.test_dashboard_browser import (  # noqa: F401 (fixtures)
    LOCKER,
    Dashboard,
    browser,
    dashboard,
    go,
    log_in,
    page,
    shot,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _record(dashboard: Dashboard, number: str) -> dict:
    [record] = dashboard.api.get("/api/v1/dashboard/records", params={"q": number}).json()
    return record


def _accepted(dashboard: Dashboard, code: str) -> bool:
    r = dashboard.api.post(
        f"/api/v1/lockers/{LOCKER}/codes/check", json={"code": code}, headers=dashboard.locker_key
    )
    assert r.status_code == 200, r.text
    return r.json()["accepted"]


def test_staff_resend_a_code_from_the_records_page(page: Page, dashboard: Dashboard):  # noqa: F811
    settings = dashboard.app.state.settings
    log_in(page, dashboard)
    go(page, "records")
    # XA-B-3: a licence overdue in the locker (its code still works); XA-B-1: documents
    # already in (no code out); XA-B-2: nothing at a locker.
    expect(page.locator('tr[data-record="XA-B-3"] button.resend-code')).to_have_count(1)
    expect(page.locator('tr[data-record="XA-B-1"] button.resend-code')).to_have_count(0)
    expect(page.locator('tr[data-record="XA-B-2"] button.resend-code')).to_have_count(0)
    [before] = _record(dashboard, "XA-B-3")["handovers"]

    row = page.locator('tr[data-record="XA-B-3"]')
    row.locator("button.resend-code").click()
    expect(row.locator("button.resend-code")).to_contain_text("确认重发")
    assert _record(dashboard, "XA-B-3")["handovers"][0]["code_counter"] == before["code_counter"]
    row.locator("button.resend-code").click()
    # In the toast (it outlives a redraw of the row) and beside the button.
    toast = page.locator("#toast")
    expect(toast).to_contain_text("新开箱码已发送至 +86138****8000")
    expect(toast).to_contain_text("the old code no longer works")
    done = row.locator(".resend-result .notice.good")
    expect(done).to_have_attribute("data-sent-to", "+86138****8000")
    shot(page, "resend-code")

    [after] = _record(dashboard, "XA-B-3")["handovers"]
    assert after["code_counter"] != before["code_counter"]
    audit = dashboard.api.get("/api/v1/dashboard/audit/latest?limit=20").json()
    [entry] = [e for e in audit if e["action"] == "code.reissued"]
    assert entry["actor"] == "staff:admin" and entry["detail"]["via"] == "dashboard"
    assert entry["detail"]["handover_id"] == after["id"]
    outbox = dashboard.api.get("/api/v1/sms/outbox", params={"handover_id": after["id"]}).json()
    assert "pickup_code_new" in [m["template"] for m in outbox]
    assert not _accepted(dashboard, code_of(settings, LOCKER, before["code_counter"]))
    assert _accepted(dashboard, code_of(settings, LOCKER, after["code_counter"]))


def test_a_refusal_is_shown_in_both_languages(page: Page, dashboard: Dashboard):  # noqa: F811
    """A second resend within the minute (a double click, or two members at once) is refused
    by the API (429 just_sent) and the page says so in Chinese and English. (The 409 for a
    record with no code out is the same path: tests/cloud_api/test_resend_code.py; the page
    shows no button on such a record.)"""
    log_in(page, dashboard)
    go(page, "records")
    row = page.locator('tr[data-record="XA-B-3"]')
    toast = page.locator("#toast")
    for _ in range(2):
        row.locator("button.resend-code").click()
    expect(toast).to_contain_text("新开箱码已发送至")
    for _ in range(2):
        row.locator("button.resend-code").click()
    expect(toast).to_contain_text("开箱码刚刚发送")
    expect(toast).to_contain_text("A code was just sent")
    shot(page, "resend-code-refused")
    audit = dashboard.api.get("/api/v1/dashboard/audit/latest?limit=20").json()
    assert [e["action"] for e in audit].count("code.reissued") == 1
