"""The dashboard's Webhooks page in Debian's chromium: an administrator adds a subscriber (a
bad URL refused with the reason, the secret shown once), sees a dead letter and replays it;
the real HTTP subscriber then receives the event with its original id.

The dashboard world (API server over real HTTP, admin with TOTP, integrator key) is the one
of test_dashboard_browser.py. Screenshots go to test-artifacts/.
"""

import httpx
import pytest
from playwright.sync_api import expect
from sqlmodel import Session, select

from cloud_api.core.db import make_engine
from cloud_api.models.audit import AuditEntry
from tests.cloud_api.test_dashboard_browser import (  # noqa: F401 (fixtures)
    browser,
    dashboard,
    go,
    log_in,
    page,
    shot,
)
from tests.support.waiting import wait_until
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def receiver():
    rx = WebhookReceiver().start()
    try:
        yield rx
    finally:
        rx.stop()


def _integrator_key_id(dashboard) -> int:
    keys = dashboard.api.get("/api/v1/api-keys").json()
    return next(k["id"] for k in keys if k["name"] == "approval system")


def test_add_a_subscriber_secret_shown_once(page, dashboard, receiver):  # noqa: F811
    log_in(page, dashboard)
    go(page, "webhooks")
    expect(page.locator("#webhook-subscribers")).to_contain_text("暂无订阅者")
    page.select_option("#webhook-key", str(_integrator_key_id(dashboard)))
    page.fill("#webhook-name", "审批系统")
    page.fill("#webhook-url", "ftp://approval.example.cn/hook")
    page.click("#webhook-submit")
    expect(page.locator("#webhook-error")).to_contain_text("http:// or https://")
    assert dashboard.api.get("/api/v1/webhooks/subscribers").json() == []

    page.fill("#webhook-url", receiver.url)
    page.click("#webhook-submit")
    secret = page.locator("#webhook-secret")
    expect(secret).to_contain_text("whsec_")
    shot(page, "webhooks-secret-once")
    [created] = dashboard.api.get("/api/v1/webhooks/subscribers").json()
    assert created["url"] == receiver.url and "secret" not in created
    expect(page.locator(f'tr[data-subscriber-id="{created["id"]}"]')).to_contain_text(receiver.url)
    shown = secret.inner_text().split(": ")[-1].strip()
    # Away and back: the secret is gone from the page for good.
    go(page, "sms")
    go(page, "webhooks")
    expect(page.locator(f'tr[data-subscriber-id="{created["id"]}"]')).to_be_visible()
    assert shown not in page.content()


def test_dead_letters_are_listed_and_replayed(page, dashboard, receiver):  # noqa: F811
    r = dashboard.api.post(
        "/api/v1/webhooks/subscribers",
        json={
            "api_key_id": _integrator_key_id(dashboard),
            "name": "审批系统",
            "url": receiver.url,
        },
    )
    assert r.status_code == 201, r.text
    receiver.stop()  # the subscriber is down
    # The integrator's own request (dashboard.api carries the admin's token, which would win).
    with httpx.Client(base_url=dashboard.url, headers=dashboard.integrator, timeout=10) as api:
        r = api.post(
            "/api/v1/records",
            json={
                "application_number": "XA-WH-1",
                "applicant_name": "赵六",
                "mobile": "+8613800138000",
                "matter_name": "营业执照",
            },
        )
    assert r.status_code == 201, r.text
    worker = dashboard.app.state.webhooks
    worker.max_attempts = 1
    assert worker.run_once() == 1
    [dead] = dashboard.api.get("/api/v1/webhooks/events?status=dead").json()

    log_in(page, dashboard)
    go(page, "webhooks")
    row = page.locator(f'#webhook-events tr[data-event-pk="{dead["id"]}"]')
    expect(row).to_have_attribute("data-status", "dead")
    expect(row).to_contain_text("XA-WH-1")
    expect(row).to_contain_text("record.created")
    expect(row).to_contain_text("Connection refused")
    shot(page, "webhooks-dead-letter")

    receiver.start()
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator('button[data-action="replay"]').click()
    expect(page.locator("#webhook-events")).to_contain_text("没有死信")
    assert dashboard.api.get("/api/v1/webhooks/events?status=dead").json() == []
    wait_until(
        lambda: (worker.run_once(), receiver.accepted())[1], 15, "the replayed event arrives"
    )
    [delivery] = receiver.accepted()
    assert delivery.event_id == dead["event_id"]
    assert delivery.json["record"]["application_number"] == "XA-WH-1"

    page.select_option("#webhook-status", "delivered")
    expect(page.locator(f'#webhook-events tr[data-event-pk="{dead["id"]}"]')).to_have_attribute(
        "data-status", "delivered"
    )
    expect(page.locator(f'#webhook-events tr[data-event-pk="{dead["id"]}"]')).to_contain_text(
        "重发 replayed 1"
    )
    shot(page, "webhooks-replayed")
    engine = make_engine(f"sqlite:///{dashboard.db_path}")
    try:
        with Session(engine) as s:
            [entry] = s.exec(
                select(AuditEntry).where(AuditEntry.action == "webhook.replayed")
            ).all()
    finally:
        engine.dispose()
    assert entry.actor == "staff:admin" and entry.detail["event_id"] == dead["event_id"]
