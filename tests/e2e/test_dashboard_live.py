"""The staff dashboard in chromium with the MQTT side running: the API (uvicorn in a thread,
its bridge on a real Mosquitto) and a locker on the other end (tests.support FakeLocker,
which answers commands as the test scripts it). What the locker reports shows up without a
reload of the browser: presence, all five alarm kinds, a drop-off waiting (that one even on
a page already open); what staff click goes to the
locker: a remote open that is answered and one that times out, a config change, the
recovery of an overdue licence. Screenshots are kept in test-artifacts/.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import Engine

from cloud_api.core.config import Settings
from cloud_api.core.db import make_engine
from cloud_api.main import create_app
from cloud_api.models.staff import Role, Scope
from cloud_api.services import bootstrap
from cloud_api.sms.providers import ConsoleProvider
from tests.support.browser import launch_chromium, screenshot, serve, stop_serving
from tests.support.cabinet import locker_body
from tests.support.mqtt_clients import FakeLocker
from tests.support.waiting import wait_until
from xinbao.codes import derive_locker_key
from xinbao.contract import CommandReply

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]

ADMIN, ADMIN_PASSWORD = "admin", "correct horse battery"
LOCKER = "XA-LIVE-1"


@dataclass
class Live:
    url: str
    api: httpx.Client  # the admin, for checking what the page claims
    integrator: dict
    totp: pyotp.TOTP
    locker: FakeLocker
    app: object
    engine: Engine


def _ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def answer(command):
    """The scripted locker: unlock opens compartment 1 and stays silent for the others; every
    other command is carried out."""
    if command.type.value == "unlock":
        number = command.parsed_payload().compartment
        if number != 1:
            return None
        result = {"compartment": 1, "outcome": "opened"}
    elif command.type.value == "config":
        result = {"applied": command.parsed_payload().settings}
    elif command.type.value == "lift_lockout":
        result = {"lifted": ["keypad"]}
    else:
        result = {"done": True}
    return CommandReply(request_id=command.request_id, ok=True, result=result)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def live(db_url, broker) -> Iterator[Live]:
    engine = make_engine(db_url)
    bootstrap.create_staff(engine, ADMIN, ADMIN_PASSWORD, Role.admin)
    _, key = bootstrap.create_api_key(
        engine, "approval system", [Scope.records_write, Scope.handovers_write]
    )
    settings = Settings(
        demo=True,
        database_url=db_url,
        run_background=False,
        mqtt_url=broker.url(),
        mqtt_client_id="cloud-live",
        mqtt_command_timeout_seconds=3,
        # A licence loaded falls overdue at once when the scheduler next runs.
        retention_days=0.00001,
    )
    app = create_app(settings, sms_provider=ConsoleProvider())
    server, thread, base = serve(app)
    locker = None
    try:
        assert app.state.bridge.wait_connected(20)
        with httpx.Client(base_url=base, timeout=30) as api:
            login = {"username": ADMIN, "password": ADMIN_PASSWORD}
            token = _ok(api.post("/api/v1/staff/login", json=login))["access_token"]
            api.headers["Authorization"] = f"Bearer {token}"
            uri = _ok(api.post("/api/v1/staff/me/totp"))["provisioning_uri"]
            totp = pyotp.TOTP(pyotp.parse_uri(uri).secret)
            # The step before: the confirmation spends it, the page log-in takes the current.
            earlier = totp.at(time.time() - 30)
            _ok(api.post("/api/v1/staff/me/totp/confirm", json={"code": earlier}))
            _ok(api.post("/api/v1/lockers", json=locker_body(LOCKER)), 201)
            locker = FakeLocker(broker.port, LOCKER, derive_locker_key(settings.master_key, LOCKER))
            locker.responder = answer
            yield Live(base, api, {"X-API-Key": key}, totp, locker, app, engine)
    finally:
        if locker is not None:
            locker.close()
        stop_serving(server, thread)
        engine.dispose()


@pytest.fixture
def page(browser: Browser, live: Live, request) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="zh-CN")
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(f"{live.url}/dashboard/")
        page.fill("#login-username", ADMIN)
        page.fill("#login-password", ADMIN_PASSWORD)
        page.fill("#login-totp", live.totp.now())
        page.click("#login-submit")
        expect(page.locator("#app-view")).to_be_visible()
        yield page
        screenshot(page, f"live-{request.node.name}")
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def go(page: Page, view: str) -> None:
    if page.locator("#main").get_attribute("data-view") == view:
        page.click('#nav a[data-view="records"]')  # away and back: the page loads afresh
        expect(page.locator("#main")).to_have_attribute("data-view", "records")
    page.click(f'#nav a[data-view="{view}"]')
    expect(page.locator("#main")).to_have_attribute("data-view", view)
    expect(page.locator("#main .loading")).to_have_count(0)


def record(live: Live, number: str, status: str = "prereview_passed") -> None:
    body = {
        "application_number": number,
        "applicant_name": "王小明",
        "mobile": "+8613800138000",
        "matter_name": "食品经营许可证",
        "status": "prereview_passed",
    }
    _ok(live.api.post("/api/v1/records", json=body, headers=live.integrator), 201)
    if status == "approved":
        for step in ("documents_received", "approved"):
            path = f"/api/v1/records/{number}/transitions"
            _ok(live.api.post(path, json={"status": step}, headers=live.integrator))


def test_presence_and_every_alarm_kind(page, live):
    go(page, "lockers")
    row = page.locator(f'tr[data-locker-id="{LOCKER}"]')
    live.locker.online()
    wait_until(lambda: live.api.get(f"/api/v1/lockers/{LOCKER}").json()["online"], 20, "online")
    go(page, "lockers")
    expect(row.locator("[data-online]")).to_have_attribute("data-online", "true")
    screenshot(page, "live-locker-online")

    live.locker.event("door_left_open", 3, open_s=300)
    live.locker.event("door_forced", 4)
    live.locker.event("door_jammed", 5)
    live.locker.event("board_unreachable", None, bus="0", board=2)
    live.locker.offline()
    kinds = {"door_left_open", "door_forced", "door_jammed", "board_unreachable", "locker_offline"}

    def open_kinds() -> set[str]:
        return {a["kind"] for a in live.api.get("/api/v1/alarms", params={"open": True}).json()}

    wait_until(lambda: open_kinds() == kinds, 20, "five open alarms")
    go(page, "alarms")
    for kind in kinds:
        expect(page.locator(f'#alarms-results tr[data-kind="{kind}"]')).to_have_count(1)
    expect(page.locator('#alarms-results tr[data-kind="locker_offline"]')).to_contain_text("离线")
    expect(page.locator('#alarms-results tr[data-kind="door_left_open"]')).to_contain_text("门未关")
    screenshot(page, "live-five-alarms")
    go(page, "lockers")
    expect(row.locator("[data-online]")).to_have_attribute("data-online", "false")

    # The door shut, the board answered, the locker came back: those alarms clear.
    live.locker.event("door_closed", 3)
    live.locker.event("board_recovered", None, bus="0", board=2)
    live.locker.online()
    wait_until(lambda: open_kinds() == {"door_forced", "door_jammed"}, 20, "three cleared")
    go(page, "alarms")
    expect(page.locator("#alarms-results tr[data-alarm-id]")).to_have_count(2)


def test_remote_opens_answered_and_timed_out_and_a_config_change(page, live):
    live.locker.online()
    go(page, "remote-open")
    page.select_option("#remote-locker", LOCKER)
    page.select_option("#remote-compartment", "1")
    page.fill("#remote-reason", "申请人来电 applicant on the phone")
    page.click("#remote-submit")
    outcome = page.locator("#remote-outcome")
    expect(outcome).to_have_attribute("data-status", "opened")
    screenshot(page, "live-remote-open-opened")
    [unlock] = live.locker.received("unlock")
    assert unlock.parsed_payload().compartment == 1

    page.select_option("#remote-compartment", "2")
    page.fill("#remote-reason", "申请人来电 second door")
    page.click("#remote-submit")
    expect(outcome).to_have_attribute("data-status", "timeout", timeout=30_000)
    made = {
        r["compartment_number"]: r["status"]
        for r in live.api.get("/api/v1/staff/remote-opens").json()
    }
    assert made == {1: "opened", 2: "timeout"}
    expect(page.locator("#remote-history tr[data-status=timeout]")).to_have_count(1)

    go(page, "commands")
    unlocks = page.locator('#commands-results tr[data-type="unlock"]')
    expect(unlocks).to_have_count(2)
    expect(
        page.locator('#commands-results tr[data-type="unlock"][data-status="ok"]')
    ).to_have_count(1)
    expect(unlocks.and_(page.locator('[data-status="timeout"]'))).to_have_count(1)
    page.select_option("#config-locker", LOCKER)
    page.select_option("#config-setting", "lockout_threshold")
    page.fill("#config-value", "3")
    page.click("#config-submit")
    expect(page.locator("#config-outcome")).to_have_attribute("data-status", "ok")
    [config] = live.locker.received("config")
    assert config.parsed_payload().settings == {"lockout_threshold": 3}
    screenshot(page, "live-commands")
    audit = live.api.get("/api/v1/dashboard/audit/latest").json()
    assert [e["detail"]["settings"] for e in audit if e["action"] == "locker.config"] == [
        {"lockout_threshold": 3}
    ]


def test_a_lockout_alarm_is_shown_and_staff_lift_the_lockout(page, live):
    """Issue 11: the second lockout level raises an alarm; staff lift it from the page."""
    live.locker.online()
    # The cloud listens to this locker (a busy machine may take a while to subscribe).
    wait_until(
        lambda: live.api.get(f"/api/v1/lockers/{LOCKER}").json()["online"], 20, "on line"
    )
    live.locker.event("lockout", None, seconds=60.0, level=2, alarm=True)
    go(page, "alarms")
    row = page.locator('#alarms-results tr[data-kind="lockout"]')
    expect(row).to_have_count(1, timeout=20_000)
    expect(row).to_contain_text("反复猜码")
    expect(row).to_contain_text("keypad guessed at repeatedly")
    screenshot(page, "live-lockout-alarm")
    row.locator("button[data-lift]").click()
    expect(row.locator("[data-lifted='true']")).to_have_count(1)
    [lift] = live.locker.received("lift_lockout")
    assert lift.parsed_payload().by == "staff:admin"
    assert not [
        a for a in live.api.get("/api/v1/alarms", params={"open": True}).json()
        if a["kind"] == "lockout"
    ]
    audit = live.api.get("/api/v1/dashboard/audit/latest").json()
    assert [e["actor"] for e in audit if e["action"] == "locker.lockout_lift"] == ["staff:admin"]


def test_a_dropoff_is_announced_and_an_overdue_licence_recovered(page, live):
    live.locker.online()
    record(live, "XA-LIVE-D1")
    drop = _ok(
        live.api.post(
            "/api/v1/handovers/dropoff",
            headers=live.integrator,
            json={"application_number": "XA-LIVE-D1", "size": "S", "locker_id": LOCKER},
        ),
        201,
    )
    record(live, "XA-LIVE-P1", status="approved")
    load = _ok(
        live.api.post(
            "/api/v1/staff/loads",
            json={"application_number": "XA-LIVE-P1", "locker_id": LOCKER, "size": "L"},
        ),
        201,
    )
    go(page, "lockers")
    badge = page.locator("#tasks-badge")
    expect(badge).to_be_hidden()

    # The locker reports the drop-off deposited: staff see it on whatever page they are on.
    live.locker.event("deposited", drop["compartment_number"], handover_id=drop["id"])
    expect(badge).to_have_text("1", timeout=20_000)
    bar = page.locator("#notice-bar")
    expect(bar.locator(f'li[data-handover-id="{drop["id"]}"]')).to_contain_text("XA-LIVE-D1")
    screenshot(page, "live-dropoff-notice")
    page.click("#notices-dismiss")
    expect(bar).to_be_hidden()
    expect(badge).to_be_hidden()
    page.reload()  # dismissed stays dismissed
    expect(page.locator("#app-view")).to_be_visible()
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("#notice-bar")).to_be_hidden()

    # The licence is loaded, then falls overdue (retention of less than a second).
    live.locker.event("deposited", load["compartment_number"], handover_id=load["id"])
    path = f"/api/v1/handovers/{load['id']}"

    def state() -> str:
        return _ok(live.api.get(path, headers=live.integrator))["state"]

    wait_until(lambda: state() == "deposited", 20, "the licence loaded")
    wait_until(lambda: live.app.state.scheduler.run_once().overdue == 1, 20, "overdue")
    go(page, "tasks")
    overdue = page.locator(f'#recovery tr[data-handover-id="{load["id"]}"]')
    expect(overdue).to_contain_text("XA-LIVE-P1")
    before = len(live.locker.received("sync_reservations"))
    overdue.locator('button[data-action="recover"]').click()
    expect(overdue).to_have_count(0)
    assert state() == "recovered"
    # The locker is told: the pickup code must stop working there.
    revoked = wait_until(
        lambda: [
            r.handover_id
            for c in live.locker.received("sync_reservations")[before:]
            for r in c.parsed_payload().revocations
        ],
        20,
        "the revocation",
    )
    assert revoked == [load["id"]]
