"""The rating link, followed in Debian's chromium as an applicant would, then the dashboard.

The API runs over real HTTP (uvicorn in a thread) with the Twilio provider pointed at the fake
Twilio server; a licence is loaded, deposited and collected through the API; the dispatcher
sends the thank-you SMS through the real twilio library; the test takes the link out of the
body Twilio received and opens it on a phone-sized screen. The comment carries markup, which
must stay text on the rating page and on the dashboard. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from cloud_api.core.config import Settings
from cloud_api.core.db import make_engine
from cloud_api.main import create_app
from cloud_api.models.staff import Role, Scope
from cloud_api.services import bootstrap
from tests.cloud_api.conftest import locker_body
from tests.cloud_api.sms.conftest import twilio_settings
from tests.support.browser import (
    bound_socket,
    launch_chromium,
    screenshot,
    serve,
    stop_serving,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ADMIN, ADMIN_PASSWORD = "admin", "correct horse battery"
LOCKER, SITE = "xa-port-001", "国际港务区政务中心"
MOBILE = "+8613800138000"
# Markup in the comment: if any page put it in as HTML, an <img> would appear in the DOM.
COMMENT = '取件很快 quick <img src=x onerror="alert(1)"><script>alert(2)</script> & "ok"'


@dataclass
class Served:
    url: str
    api: httpx.Client  # logged in as the admin
    app: object
    rating_link: str
    handover_id: int


def _ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def _collect_a_licence(api: httpx.Client, integrator: dict) -> int:
    key = {
        "X-Locker-Key": _ok(api.post("/api/v1/lockers", json=locker_body(LOCKER)), 201)[
            "locker_key"
        ]
    }
    record = {
        "application_number": "XA-RATE-1",
        "applicant_name": "王小明",
        "mobile": MOBILE,
        "matter_name": "食品经营许可证",
    }
    _ok(api.post("/api/v1/records", json=record, headers=integrator), 201)
    for status in ("prereview_passed", "documents_received", "approved"):
        _ok(
            api.post(
                "/api/v1/records/XA-RATE-1/transitions", json={"status": status}, headers=integrator
            )
        )
    load = _ok(
        api.post(
            "/api/v1/staff/loads",
            json={"application_number": "XA-RATE-1", "locker_id": LOCKER, "size": "S"},
        ),
        201,
    )
    for step in ("deposited", "collected"):
        _ok(api.post(f"/api/v1/lockers/{LOCKER}/handovers/{load['id']}/{step}", headers=key))
    return load["id"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def served(template_db, tmp_path, fake_twilio) -> Iterator[Served]:
    db_path = tmp_path / "rating.db"
    shutil.copy(template_db("sqlite"), db_path)
    url = f"sqlite:///{db_path}"
    engine = make_engine(url)
    try:
        bootstrap.create_staff(engine, ADMIN, ADMIN_PASSWORD, Role.admin)
        _, key = bootstrap.create_api_key(
            engine, "approval system", [Scope.records_write, Scope.handovers_write]
        )
    finally:
        engine.dispose()
    sock, base = bound_socket()
    settings = Settings(
        demo=True, database_url=url, run_background=False, rating_url=f"{base}/rate"
    )
    sms = twilio_settings(fake_twilio)
    app = create_app(settings, sms_settings=sms)
    server, thread, _ = serve(app, sock)
    try:
        with httpx.Client(base_url=base, timeout=10) as api:
            login = {"username": ADMIN, "password": ADMIN_PASSWORD}
            token = _ok(api.post("/api/v1/staff/login", json=login))["access_token"]
            api.headers["Authorization"] = f"Bearer {token}"
            handover_id = _collect_a_licence(api, {"X-API-Key": key})

            # The thank-you SMS goes out through the fake Twilio (the pickup code's SMS, never
            # sent before the pickup here, is superseded: its handover is over).
            def receipts() -> list[dict]:
                app.state.dispatcher.run_once()
                return [m for m in fake_twilio.messages if "满意度评价" in m["body"]]

            [receipt] = wait_until(receipts, 10, "the thank-you SMS to reach Twilio")
            assert receipt["to"] == MOBILE
            link = re.search(r"https?://\S+", receipt["body"]).group(0)
            yield Served(base, api, app, link, handover_id)
    finally:
        stop_serving(server, thread)


def _watch(context: BrowserContext, problems: list[str]) -> Page:
    page = context.new_page()
    page.on("pageerror", lambda err: problems.append(f"error: {err}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    # Anything the Content-Security-Policy blocked (an inline style, a foreign script).
    page.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return page


def _no_horizontal_scroll(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_the_sms_link_rates_the_pickup_on_a_phone_and_the_dashboard_shows_it(
    browser: Browser, served: Served
):
    assert served.rating_link.startswith(f"{served.url}/rate/{served.handover_id}.")
    problems: list[str] = []
    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="zh-CN",
    )
    try:
        page = _watch(phone, problems)
        page.goto(served.rating_link)
        expect(page.locator("h1")).to_contain_text("满意度评价")
        expect(page.locator("h1")).to_contain_text("Rate our service")
        expect(page.locator(".about")).to_contain_text(SITE)
        assert _no_horizontal_scroll(page)
        screenshot(page, "rating-page-mobile")

        page.tap('label[for="score-4"]')
        expect(page.locator("#score-4")).to_be_checked()
        page.fill("#comment", COMMENT)
        screenshot(page, "rating-page-mobile-filled")
        page.tap("#rating-submit")

        rated = page.locator("#rated")
        expect(rated).to_be_visible()
        expect(rated).to_have_attribute("data-score", "4")
        assert page.locator("#rated-comment").text_content() == COMMENT
        assert page.locator("img").count() == 0 and page.locator("body script").count() == 0
        assert _no_horizontal_scroll(page)
        screenshot(page, "rating-page-mobile-thanks")

        # The same link again: the rating is shown, not a form; a second post is refused.
        page.goto(served.rating_link)
        expect(page.locator("#rated")).to_have_attribute("data-score", "4")
        expect(page.locator("#rating-form")).to_have_count(0)
        again = page.request.post(served.rating_link, form={"score": "1", "comment": "again"})
        assert again.status == 409
        assert "already rated" in again.text()
        # A link with one digit of its handover id changed is refused with a clear page.
        altered = re.sub(
            r"/rate/(\d+)\.", lambda m: f"/rate/{int(m.group(1)) + 1}.", served.rating_link
        )
        response = page.goto(altered)
        assert response is not None and response.status == 404
        expect(page.locator(".notice")).to_contain_text("此评价链接无效")
        screenshot(page, "rating-page-mobile-invalid")
    finally:
        phone.close()

    summary = _ok(served.api.get("/api/v1/dashboard/ratings"))
    [group] = summary["groups"]
    assert (group["site"], group["count"], group["average"]) == (SITE, 1, 4.0)
    [comment] = summary["comments"]
    assert (comment["score"], comment["comment"]) == (4, COMMENT)

    desk = browser.new_context(viewport={"width": 1360, "height": 900}, locale="zh-CN")
    try:
        page = _watch(desk, problems)
        page.goto(f"{served.url}/dashboard/")
        page.fill("#login-username", ADMIN)
        page.fill("#login-password", ADMIN_PASSWORD)
        page.click("#login-submit")
        expect(page.locator("#app-view")).to_be_visible()
        page.click('#nav a[data-view="ratings"]')
        expect(page.locator("#main")).to_have_attribute("data-view", "ratings")
        row = page.locator(f'#ratings-weeks tr[data-site="{SITE}"]')
        expect(row).to_have_count(1)
        expect(row).to_have_attribute("data-week", group["week_start"])
        expect(row.locator("td.count")).to_have_text("1")
        expect(row.locator("td.average")).to_contain_text("4.00")
        expect(row.locator('.dist-row[data-score="4"]')).to_have_attribute("data-count", "1")
        expect(row.locator('[data-level="good"]')).to_contain_text("1")
        cell = page.locator(
            f'#ratings-comments tr[data-rating-id="{comment["id"]}"] .rating-comment'
        )
        expect(cell).to_be_visible()
        assert cell.text_content() == COMMENT
        assert page.locator("#main img").count() == 0
        screenshot(page, "dashboard-ratings")
    finally:
        desk.close()
    assert problems == [], f"JavaScript errors, dialogs or CSP refusals: {problems}"


def test_staff_without_a_supervisor_role_see_ratings_as_not_theirs(browser: Browser, served):
    _ok(
        served.api.post(
            "/api/v1/staff",
            json={"username": "clerk", "password": "clerk-password-1", "role": "staff"},
        ),
        201,
    )
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="zh-CN")
    try:
        page = _watch(context, problems)
        page.goto(f"{served.url}/dashboard/")
        page.fill("#login-username", "clerk")
        page.fill("#login-password", "clerk-password-1")
        page.click("#login-submit")
        expect(page.locator("#app-view")).to_be_visible()
        page.click('#nav a[data-view="ratings"]')
        expect(page.locator('#ratings-weeks [data-forbidden="true"]')).to_contain_text(
            "supervisors and administrators only"
        )
        expect(page.locator("#ratings-comments tr[data-rating-id]")).to_have_count(0)
        screenshot(page, "dashboard-ratings-forbidden")
    finally:
        context.close()
    assert problems == [], problems
