"""The staff dashboard in Debian's chromium (Playwright, sync API).

Each test gets its own API server (uvicorn in a thread, on a free port) over a fresh copy of
the migrated SQLite template, and a world made through the real HTTP API: a locker, a
drop-off deposited and waiting for staff, an approved record ready to load, a pickup gone
overdue. Every check compares what the page shows with what the API or the database says,
so a page that merely looks right cannot pass. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import text
from sqlmodel import Session

from cloud_api.core.config import Settings
from cloud_api.core.db import make_engine
from cloud_api.main import create_app
from cloud_api.models.monitoring import AlarmKind
from cloud_api.models.staff import Role, Scope
from cloud_api.services import alarms, bootstrap
from cloud_api.sms.providers import ConsoleProvider
from tests.cloud_api.conftest import Clock, locker_body
from tests.cloud_api.helpers import drop_audit_guard
from tests.support.browser import launch_chromium, screenshot, serve, stop_serving
from xinbao import staff_pass
from xinbao.codes import derive_locker_key

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ADMIN, ADMIN_PASSWORD = "admin", "correct horse battery"
LOCKER = "xa-port-001"


@dataclass
class Dashboard:
    url: str
    api: httpx.Client  # logged in as the admin, for checking what the page claims
    integrator: dict
    locker_key: dict
    totp: pyotp.TOTP
    clock: Clock
    app: object
    db_path: Path

    def totp_now(self) -> str:
        """A code the cloud takes now: the next time step's (within the one-step drift it
        allows), because the fixture's own log-in spent the current one and each code is
        taken once."""
        return self.totp.at(self.clock.now + timedelta(seconds=30))

    def wrong_totp(self) -> str:
        valid = {self.totp.at(self.clock.now + timedelta(seconds=30 * k)) for k in (-1, 0, 1)}
        return next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919)) if c not in valid)


def _ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def _build_world(api: httpx.Client, integrator: dict, app, clock: Clock) -> dict:
    """Through the HTTP API: a locker; XA-B-1 dropped off (waiting for staff); XA-B-2
    approved (to load); XA-B-3 loaded, deposited, then overdue (to recover)."""
    registered = _ok(api.post("/api/v1/lockers", json=locker_body(LOCKER, sizes="SSMMLL")), 201)
    locker_key = {"X-Locker-Key": registered["locker_key"]}

    def record(number: str, status: str, name: str) -> None:
        body = {
            "application_number": number,
            "applicant_name": name,
            "mobile": "+8613800138000",
            "matter_name": "食品经营许可证",
            "status": status,
        }
        start = "submitted" if status == "approved" else status
        _ok(api.post("/api/v1/records", json={**body, "status": start}, headers=integrator), 201)
        if status == "approved":
            for step in ("prereview_passed", "documents_received", "approved"):
                _ok(
                    api.post(
                        f"/api/v1/records/{number}/transitions",
                        json={"status": step},
                        headers=integrator,
                    )
                )

    record("XA-B-1", "prereview_passed", "王小明")
    record("XA-B-2", "approved", "李华")
    record("XA-B-3", "approved", "张伟")
    dropoff = _ok(
        api.post(
            "/api/v1/handovers/dropoff",
            headers=integrator,
            json={"application_number": "XA-B-1", "size": "S", "locker_id": LOCKER},
        ),
        201,
    )
    _ok(
        api.post(
            f"/api/v1/lockers/{LOCKER}/handovers/{dropoff['id']}/deposited", headers=locker_key
        )
    )
    load = _ok(
        api.post(
            "/api/v1/staff/loads",
            json={"application_number": "XA-B-3", "locker_id": LOCKER, "size": "L"},
        ),
        201,
    )
    _ok(api.post(f"/api/v1/lockers/{LOCKER}/handovers/{load['id']}/deposited", headers=locker_key))
    clock.advance(days=8)
    assert app.state.scheduler.run_once().overdue == 1
    app.state.dispatcher.run_once()
    return locker_key


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def dashboard(template_db, tmp_path) -> Iterator[Dashboard]:
    db_path = tmp_path / "dashboard.db"
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
    clock = Clock(now=datetime.now(UTC).replace(microsecond=0))
    settings = Settings(demo=True, database_url=url, run_background=False)
    app = create_app(settings, sms_provider=ConsoleProvider(), clock=clock)
    server, thread, base = serve(app)
    try:
        with httpx.Client(base_url=base, timeout=10) as api:
            token = _ok(
                api.post(
                    "/api/v1/staff/login", json={"username": ADMIN, "password": ADMIN_PASSWORD}
                )
            )["access_token"]
            api.headers["Authorization"] = f"Bearer {token}"
            secret = pyotp.parse_uri(_ok(api.post("/api/v1/staff/me/totp"))["provisioning_uri"])
            totp = pyotp.TOTP(secret.secret)
            _ok(api.post("/api/v1/staff/me/totp/confirm", json={"code": totp.at(clock.now)}))
            integrator = {"X-API-Key": key}
            locker_key = _build_world(api, integrator, app, clock)
            # The world moved the clock 8 days on: a fresh admin token for the checks.
            token = _ok(
                api.post(
                    "/api/v1/staff/login",
                    json={
                        "username": ADMIN,
                        "password": ADMIN_PASSWORD,
                        "totp": totp.at(clock.now),
                    },
                )
            )["access_token"]
            api.headers["Authorization"] = f"Bearer {token}"
            yield Dashboard(base, api, integrator, locker_key, totp, clock, app, db_path)
    finally:
        stop_serving(server, thread)


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard, request) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="zh-CN")
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(str(err)))
        # Anything the Content-Security-Policy blocked (an inline style, a foreign script).
        page.on(
            "console",
            lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(f"{dashboard.url}/dashboard/")
        yield page
        screenshot(page, f"dashboard-{request.node.name}")
    finally:
        context.close()
    assert errors == [], f"JavaScript errors or CSP refusals on the page: {errors}"


def shot(page: Page, name: str) -> None:
    """A screenshot of the page as it is now, kept for a human to look at."""
    screenshot(page, f"dashboard-{name}")


def log_in(page: Page, dashboard: Dashboard, totp: str | None = None) -> None:
    page.fill("#login-username", ADMIN)
    page.fill("#login-password", ADMIN_PASSWORD)
    page.fill("#login-totp", totp or dashboard.totp_now())
    page.click("#login-submit")
    expect(page.locator("#app-view")).to_be_visible()


def go(page: Page, view: str) -> None:
    page.click(f'#nav a[data-view="{view}"]')
    expect(page.locator("#main")).to_have_attribute("data-view", view)
    expect(page.locator("#main .loading")).to_have_count(0)


def test_login_refuses_a_wrong_totp_and_admits_the_right_one(page, dashboard):
    expect(page.locator("#login-view")).to_be_visible()
    page.fill("#login-username", ADMIN)
    page.fill("#login-password", ADMIN_PASSWORD)
    page.fill("#login-totp", dashboard.wrong_totp())
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("动态码错误")
    shot(page, "login-refused")
    expect(page.locator("#app-view")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    failed = dashboard.api.get("/api/v1/dashboard/audit/latest?limit=5").json()
    assert "staff.login_failed" in [e["action"] for e in failed]

    log_in(page, dashboard)
    expect(page.locator("#whoami")).to_contain_text(ADMIN)
    assert page.evaluate("Object.keys(sessionStorage)") == ["xinbao.staff.token"]
    expect(page.locator("#main")).to_have_attribute("data-view", "lockers")


def test_an_ended_session_goes_back_to_the_login(page, dashboard):
    log_in(page, dashboard)
    page.evaluate("sessionStorage.setItem('xinbao.staff.token', 'not-a-token')")
    page.click('#nav a[data-view="records"]')
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#login-error")).to_contain_text("重新登录")
    assert page.evaluate("sessionStorage.length") == 0


def test_lockers_page_shows_the_locker_and_its_occupancy(page, dashboard):
    log_in(page, dashboard)
    go(page, "lockers")
    api_locker = dashboard.api.get("/api/v1/lockers").json()[0]
    row = page.locator(f'tr[data-locker-id="{LOCKER}"]')
    expect(row).to_be_visible()
    for o in api_locker["occupancy"]:
        expect(row.locator(f'.occ[data-size="{o["size"]}"]')).to_contain_text(
            f"空 {o['free']} / {o['total']}"
        )
    # S: one taken by the drop-off; L: one by the overdue licence.
    assert {o["size"]: o["free"] for o in api_locker["occupancy"]} == {"S": 1, "M": 2, "L": 1}
    expected_online = {True: "true", False: "false"}.get(api_locker.get("online"), "unknown")
    expect(row.locator("[data-online]")).to_have_attribute("data-online", expected_online)

    shot(page, "lockers")
    row.locator("a").click()
    detail = dashboard.api.get(f"/api/v1/lockers/{LOCKER}").json()
    tiles = page.locator("#compartments .tile")
    expect(tiles).to_have_count(len(detail["compartments"]))
    for c in detail["compartments"]:
        expect(page.locator(f'.tile[data-compartment="{c["number"]}"]')).to_have_attribute(
            "data-state", c["state"]
        )
    expect(page.locator('.tile[data-state="occupied"]')).to_have_count(2)


def test_records_page_shows_records_and_their_handovers(page, dashboard):
    log_in(page, dashboard)
    go(page, "records")
    row = page.locator('tr[data-record="XA-B-1"]')
    expect(row).to_contain_text("王小明")
    handover = row.locator("li.handover")
    expect(handover).to_have_count(1)
    expect(handover).to_have_attribute("data-kind", "dropoff")
    expect(handover).to_have_attribute("data-state", "deposited")
    expect(page.locator('tr[data-record="XA-B-3"] li.handover')).to_have_attribute(
        "data-state", "overdue"
    )
    expect(page.locator("tr[data-record]")).to_have_count(3)
    shot(page, "records")

    page.fill("#records-search", "李华")
    page.click("#records-results >> xpath=.. >> button[type=submit]")
    expect(page.locator("tr[data-record]")).to_have_count(1)
    expect(page.locator('tr[data-record="XA-B-2"]')).to_be_visible()


def test_start_a_load_from_the_dashboard(page, dashboard):
    log_in(page, dashboard)
    go(page, "load")
    # Only the approved record without a licence in a locker is offered.
    options = page.locator('#load-record option:not([value=""])')
    expect(options).to_have_count(1)
    page.select_option("#load-record", "XA-B-2")
    page.select_option("#load-locker", LOCKER)
    page.select_option("#load-size", "M")
    page.click("#load-submit")
    result = page.locator("#load-result .notice.good")
    expect(result).to_be_visible()
    handover_id = int(result.get_attribute("data-handover-id"))

    [record] = dashboard.api.get("/api/v1/dashboard/records", params={"q": "XA-B-2"}).json()
    [handover] = record["handovers"]
    assert (handover["id"], handover["kind"], handover["state"]) == (
        handover_id,
        "pickup",
        "reserved",
    )
    expect(result).to_contain_text(f"{handover['compartment_number']}")

    # The loaded record is no longer offered; submitting with no record sends nothing.
    expect(options).to_have_count(0)
    page.click("#load-submit")
    expect(page.locator("#load-result .notice.error")).to_contain_text("Choose a record")
    [record] = dashboard.api.get("/api/v1/dashboard/records", params={"q": "XA-B-2"}).json()
    assert len(record["handovers"]) == 1


def test_tasks_list_dropoffs_waiting_and_overdue_pickups(page, dashboard):
    log_in(page, dashboard)
    go(page, "tasks")
    dropoff = page.locator("#dropoffs tr[data-handover-id]")
    overdue = page.locator("#recovery tr[data-handover-id]")
    expect(dropoff).to_have_count(1)
    expect(dropoff).to_contain_text("XA-B-1")
    expect(overdue).to_have_count(1)
    expect(overdue).to_contain_text("XA-B-3")

    handover_id = int(dropoff.get_attribute("data-handover-id"))
    dropoff.locator("button").click()
    expect(dropoff).to_have_count(0)
    [record] = dashboard.api.get("/api/v1/dashboard/records", params={"q": "XA-B-1"}).json()
    assert record["status"] == "documents_received"
    assert [(h["id"], h["state"]) for h in record["handovers"]] == [(handover_id, "collected")]


def test_remote_open_needs_a_reason_and_is_recorded(page, dashboard):
    log_in(page, dashboard)
    go(page, "remote-open")
    page.select_option("#remote-compartment", "3")
    page.fill("#remote-reason", "   ")
    page.click("#remote-submit")
    expect(page.locator("#remote-error")).to_contain_text("reason is required")
    assert dashboard.api.get("/api/v1/staff/remote-opens").json() == []

    page.fill("#remote-reason", "申请人来电，核实身份 applicant on the phone")
    page.click("#remote-submit")
    outcome = page.locator("#remote-outcome")
    expect(outcome).to_be_visible()
    [made] = dashboard.api.get("/api/v1/staff/remote-opens").json()
    assert (made["locker_id"], made["compartment_number"]) == (LOCKER, 3)
    assert made["reason"] == "申请人来电，核实身份 applicant on the phone"
    expect(outcome).to_have_attribute("data-status", made["status"])
    expect(page.locator(f'#remote-history tr[data-remote-open-id="{made["id"]}"]')).to_contain_text(
        "applicant on the phone"
    )
    audit = dashboard.api.get("/api/v1/dashboard/audit/latest?limit=20").json()
    assert any(
        e["action"] == "door.remote_open_requested" and e["detail"].get("request") == made["id"]
        for e in audit
    )


def test_sms_outbox_and_console_inbox(page, dashboard):
    log_in(page, dashboard)
    go(page, "sms")
    outbox = dashboard.api.get("/api/v1/sms/outbox").json()
    assert {m["template"] for m in outbox} >= {"dropoff_code", "pickup_code"}
    rows = page.locator("#sms-outbox tr[data-sms-id]")
    expect(rows).to_have_count(len(outbox))
    for m in outbox:
        expect(page.locator(f'#sms-outbox tr[data-sms-id="{m["id"]}"]')).to_have_attribute(
            "data-status", m["status"]
        )
    inbox = dashboard.api.get("/api/v1/sms/console-inbox").json()
    assert inbox, "the dispatcher sent the queued messages through the console"
    expect(page.locator("#sms-inbox tbody tr")).to_have_count(len(inbox))
    expect(page.locator("#sms-inbox")).to_contain_text(inbox[0]["body"][:20])


def _raise_alarms(dashboard: Dashboard) -> None:
    """Alarms as the MQTT ingestion raises them (same service), without a broker."""
    engine = make_engine(f"sqlite:///{dashboard.db_path}")
    try:
        with Session(engine) as session:
            now = dashboard.clock.now
            alarms.raise_alarm(session, LOCKER, AlarmKind.door_forced, now, compartment=4)
            alarms.raise_alarm(
                session, LOCKER, AlarmKind.board_unreachable, now, data={"bus": "a", "board": 2}
            )
            session.commit()
    finally:
        engine.dispose()


def test_alarms_are_listed_and_acknowledged(page, dashboard):
    _raise_alarms(dashboard)
    log_in(page, dashboard)
    go(page, "alarms")
    rows = page.locator("#alarms-results tr[data-alarm-id]")
    expect(rows).to_have_count(2)
    forced = page.locator('#alarms-results tr[data-kind="door_forced"]')
    expect(forced).to_contain_text("强行开门")
    alarm_id = int(forced.get_attribute("data-alarm-id"))
    shot(page, "alarms")

    forced.locator("button[data-ack]").click()
    expect(forced.locator('[data-acked="true"]')).to_be_visible()
    [acked] = [a for a in dashboard.api.get("/api/v1/alarms").json() if a["id"] == alarm_id]
    assert acked["acked_by"] == f"staff:{ADMIN}"
    open_ids = {a["id"] for a in dashboard.api.get("/api/v1/alarms?open=true").json()}
    assert alarm_id not in open_ids and len(open_ids) == 1

    # Reloaded, the open list no longer has it; "include cleared" brings it back.
    go(page, "lockers")
    go(page, "alarms")
    expect(rows).to_have_count(1)
    page.check("#alarms-all")
    expect(rows).to_have_count(2)


def test_missing_monitoring_endpoints_show_unavailable(page, dashboard):
    """Against an API without the MQTT side (no alarms, no events, no online state) the pages
    say "unavailable" instead of breaking."""

    def absent(route):
        route.fulfill(
            status=404,
            content_type="application/problem+json",
            body='{"title": "Not Found", "status": 404, "detail": "Not Found"}',
        )

    def without_monitoring_fields(route):
        answer = route.fetch()
        lockers = answer.json()
        for locker in lockers if isinstance(lockers, list) else [lockers]:
            for field in ("online", "last_seen_at", "boards", "outbox_depth"):
                locker.pop(field, None)
        route.fulfill(response=answer, json=lockers)

    page.route("**/api/v1/alarms*", absent)
    page.route("**/api/v1/lockers/*/events*", absent)
    page.route("**/api/v1/lockers?*", without_monitoring_fields)
    page.route(f"**/api/v1/lockers/{LOCKER}", without_monitoring_fields)
    log_in(page, dashboard)
    go(page, "alarms")
    expect(page.locator('#alarms-results [data-unavailable="true"]')).to_be_visible()
    go(page, "lockers")
    expect(page.locator(f'tr[data-locker-id="{LOCKER}"] [data-online]')).to_have_attribute(
        "data-online", "unknown"
    )
    page.click(f'tr[data-locker-id="{LOCKER}"] a')
    expect(page.locator('[data-unavailable="true"]')).to_have_count(2)  # boards, events


def test_audit_verify_shows_ok_then_finds_tampering(page, dashboard):
    log_in(page, dashboard)
    go(page, "audit")
    page.click("#audit-verify")
    verdict = page.locator("#audit-verdict")
    expect(verdict).to_have_attribute("data-ok", "true")
    expect(page.locator("#audit-entries tr[data-seq]").first).to_be_visible()

    # Someone edits an entry behind the API's back: the same button must now say so.
    engine = make_engine(f"sqlite:///{dashboard.db_path}")
    try:
        with engine.begin() as conn:
            drop_audit_guard(conn)  # as an attacker with database rights would, first
            conn.execute(text("UPDATE audit_entry SET actor = 'staff:mallory' WHERE seq = 2"))
    finally:
        engine.dispose()
    page.click("#audit-verify")
    expect(verdict).to_have_attribute("data-ok", "false")
    expect(verdict).to_contain_text("entry 2")


def test_staff_without_admin_rights_see_audit_as_admin_only(page, dashboard):
    engine = make_engine(f"sqlite:///{dashboard.db_path}")
    try:
        bootstrap.create_staff(engine, "clerk", "clerk password 1", Role.staff)
    finally:
        engine.dispose()
    page.fill("#login-username", "clerk")
    page.fill("#login-password", "clerk password 1")
    page.click("#login-submit")  # no second factor enrolled yet: password alone
    expect(page.locator("#whoami")).to_contain_text("clerk")
    go(page, "audit")
    expect(page.locator('#audit-entries [data-forbidden="true"]')).to_be_visible()
    page.click("#audit-verify")
    expect(page.locator('#audit-result [data-forbidden="true"]')).to_be_visible()
    go(page, "tasks")  # staff pages still work for them
    expect(page.locator("#recovery tr[data-handover-id]")).to_have_count(1)


def test_a_staff_pass_for_a_cabinet_then_log_out_ends_the_token(page, dashboard):
    log_in(page, dashboard)
    go(page, "staff-pass")
    page.select_option("#pass-locker", LOCKER)
    page.click("#pass-submit")
    expect(page.locator("#pass-code")).to_have_text(re.compile(r"^\d{10}$"))
    expect(page.locator("#pass-staff-no")).to_have_text(ADMIN)
    shot(page, "staff-pass")
    typed = page.locator("#pass-code").inner_text()
    master = dashboard.app.state.settings.master_key
    pass_key = staff_pass.derive_pass_key(derive_locker_key(master, LOCKER))
    now = dashboard.clock.now.timestamp()
    assert staff_pass.match_pass(pass_key, LOCKER, ADMIN, typed, now, range(16))

    token = page.evaluate("sessionStorage.getItem('xinbao.staff.token')")
    page.click("#logout")
    expect(page.locator("#login-view")).to_be_visible()
    ended = httpx.get(
        f"{dashboard.url}/api/v1/staff/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert ended.status_code == 401


def test_an_admin_deactivates_a_member_on_the_staff_page(page, dashboard):
    made = dashboard.api.post(
        "/api/v1/staff", json={"username": "li.wei", "password": "a long password"}
    )
    assert made.status_code == 201, made.text
    member = httpx.post(
        f"{dashboard.url}/api/v1/staff/login",
        json={"username": "li.wei", "password": "a long password"},
    ).json()["access_token"]
    log_in(page, dashboard)
    go(page, "staff")
    row = page.locator('tr[data-username="li.wei"]')
    expect(row).to_have_attribute("data-active", "true")
    expect(page.locator('tr[data-username="admin"] button')).to_have_count(0)  # not oneself
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator('button[data-action="deactivate"]').click()
    expect(row).to_have_attribute("data-active", "false")
    shot(page, "staff-accounts")
    ended = httpx.get(
        f"{dashboard.url}/api/v1/staff/me", headers={"Authorization": f"Bearer {member}"}
    )
    assert ended.status_code == 401
