"""The kiosk page in Debian's chromium (Playwright, sync API), against a real controller
process and the simulator over a pty.

What the page shows is checked against what happened: the door the page names is the one
the simulator saw open, the staff lists are the store's handovers, and the collect and
recover buttons end in the events the cloud would get. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser, Page, expect

from locker_controller.store import Handover
from tests.locker_controller.conftest import LOCKER_KEY, db_events, wait_until
from tests.locker_controller.test_doors import handover, seed, wait_event
from tests.locker_controller.test_pickup_offline import load_item
from tests.locker_controller.test_staff import seed_world, staff_pass
from tests.support.browser import launch_chromium, screenshot
from xinbao.codes import code_for
from xinbao.lockout import mobile_digest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

WAIT_MS = 15_000  # Playwright waits for the condition up to this long


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def open_kiosk(browser: Browser, request):
    """``open_kiosk(ctl)`` -> a page on the controller's kiosk, ready to type on."""
    contexts, errors = [], []

    def open_page(ctl) -> Page:
        context = browser.new_context(viewport={"width": 1080, "height": 1600}, locale="zh-CN")
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(str(err)))
        # Anything the Content-Security-Policy blocked (the inline script or style changed
        # without its hash, a foreign resource).
        page.on(
            "console",
            lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(ctl.kiosk + "/")
        expect(page.locator("body[data-ready='1']")).to_have_count(1, timeout=WAIT_MS)
        return page

    yield open_page
    try:
        for i, context in enumerate(contexts):
            for page in context.pages:
                screenshot(page, f"kiosk-{request.node.name}-{i}")
    finally:
        for context in contexts:
            context.close()
    assert errors == [], f"JavaScript errors or CSP refusals on the kiosk page: {errors}"


def tap_code(page: Page, code: str) -> None:
    """Press the on-screen keys one by one, then OK."""
    for digit in code:
        page.click(f"#keys button:text-is('{digit}')")
    expect(page.locator("#display")).to_have_text("•" * len(code))
    page.click("#keys button[data-key='ok']")


def shot(page: Page, name: str) -> None:
    """A screenshot of the page as it is now, kept for a human to look at."""
    screenshot(page, f"kiosk-{name}")


def test_keys_pressed_show_the_door_that_opened(tmp_path, sim, make_controller, open_kiosk):
    load_item(sim, 1, 3)
    load_item(sim, 1, 4)
    seed(
        tmp_path,
        handover(1, "pickup", 3, 11, "deposited"),
        handover(2, "pickup", 4, 12, "deposited"),
    )
    ctl = make_controller()
    ctl.start()
    page = open_kiosk(ctl)
    expect(page.locator("#prompt-zh")).to_have_text("请输入8位开箱码")  # code_digits
    tap_code(page, code_for(LOCKER_KEY, 11))
    expect(page.locator("#door")).to_have_text("3", timeout=WAIT_MS)
    expect(page.locator("#message")).to_contain_text("3号箱门已打开")
    expect(page.locator("#message")).to_contain_text("Door 3 is open")
    assert sim.compartment(1, 3).door_open is True

    # A physical keypad or a keyboard-wedge scanner: digits typed, then Enter.
    page.keyboard.type(code_for(LOCKER_KEY, 12)[:3] + "9")
    page.keyboard.press("Backspace")
    page.keyboard.type(code_for(LOCKER_KEY, 12)[3:])
    expect(page.locator("#display")).to_have_text("•" * 8)
    page.keyboard.press("Enter")
    expect(page.locator("#door")).to_have_text("4", timeout=WAIT_MS)
    assert sim.compartment(1, 4).door_open is True
    page.keyboard.type("123")
    page.keyboard.press("Escape")
    expect(page.locator("#display")).to_have_text("")


def test_jammed_door_offers_reopen_for_the_configured_window(
    tmp_path, sim, make_controller, open_kiosk
):
    seed(
        tmp_path,
        handover(5, "dropoff", None, 51, "reserved"),
        handover(6, "dropoff", None, 52, "reserved"),
    )
    ctl = make_controller(extra="reopen_window_s = 3.0")
    ctl.start()
    page = open_kiosk(ctl)
    sim.inject(board=1, fault="jammed", channel=3)
    tap_code(page, code_for(LOCKER_KEY, 51))
    expect(page.locator("#reopen")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#message")).to_contain_text("did not open: press reopen")
    assert sim.compartment(1, 3).door_open is False
    sim.clear(board=1, fault="jammed")
    page.click("#reopen")
    expect(page.locator("#message")).to_contain_text("Door 3 is open", timeout=WAIT_MS)
    expect(page.locator("#reopen")).to_be_hidden()
    assert sim.compartment(1, 3).door_open is True
    sim.put_item(1, 3)
    sim.close_door(1, 3)
    wait_event(tmp_path, "deposited", compartment=3)

    # The button goes away after reopen_window_s (3 s here, not a fixed minute).
    sim.inject(board=1, fault="jammed", channel=4)
    tap_code(page, code_for(LOCKER_KEY, 52))
    expect(page.locator("#reopen")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#reopen")).to_be_hidden(timeout=WAIT_MS)


def test_refusals_are_explained_in_chinese_and_english(tmp_path, sim, make_controller, open_kiosk):
    seed(
        tmp_path,
        handover(7, "dropoff", None, 71, "reserved", expires_in=timedelta(hours=-1)),
        handover(8, "pickup", 1, 72, "deposited"),
    )
    ctl = make_controller(lockout_base_s=60.0)
    ctl.start()
    page = open_kiosk(ctl)
    good = code_for(LOCKER_KEY, 72)
    wrong = str((int(good) + 1) % 10**8).zfill(8)

    tap_code(page, wrong)
    expect(page.locator("#message")).to_contain_text("开箱码错误，请核对短信", timeout=WAIT_MS)
    expect(page.locator("#message")).to_contain_text("Wrong code. Please check your SMS.")
    expect(page.locator("#door")).to_have_text("")

    tap_code(page, code_for(LOCKER_KEY, 71))
    expect(page.locator("#message")).to_contain_text("开箱码已过期", timeout=WAIT_MS)
    expect(page.locator("#message")).to_contain_text("This code has expired.")

    for _ in range(3):  # the fifth failure in a row locks the cabinet
        tap_code(page, wrong)
        expect(page.locator("#message")).not_to_contain_text("Checking", timeout=WAIT_MS)
    expect(page.locator("#message")).to_contain_text("错误次数过多")
    expect(page.locator("#message")).to_contain_text("Too many wrong codes")
    expect(page.locator("#lockout")).to_be_visible()
    # Locked: the code typed is kept and the mobile's last 4 digits are asked for.
    expect(page.locator("#prompt-zh")).to_have_text("请输入接收短信的手机号后四位")
    expect(page.locator("#prompt-en")).to_contain_text("last 4 digits of the mobile")
    assert sim.compartment(1, 1).door_open is False


def test_a_fresh_page_shows_the_lockout_and_opens_with_the_mobile_digits(
    tmp_path, sim, make_controller, open_kiosk
):
    """Issue 11: a lockout used to be invisible on a fresh page, and it turned away an
    applicant who arrived after someone else's guesses."""
    load_item(sim, 1, 1)
    expires = datetime.now(UTC) + timedelta(days=1)
    digest = mobile_digest(LOCKER_KEY, 8, "8000")
    seed(tmp_path, Handover(8, "pickup", 1, None, 72, 8, expires, "deposited", None, digest))
    ctl = make_controller(lockout_base_s=600.0)
    ctl.start()
    good = code_for(LOCKER_KEY, 72)
    for i in range(1, 6):  # someone else's guesses
        ctl.code(str((int(good) + i) % 10**8).zfill(8))
    page = open_kiosk(ctl)  # the applicant arrives at a fresh page
    expect(page.locator("#lockout")).to_be_visible()
    expect(page.locator("#lockout-zh")).to_contain_text("键盘锁定中")
    expect(page.locator("#lockout-zh")).to_contain_text("手机号后四位")
    expect(page.locator("#lockout-en")).to_contain_text("the keypad is locked for")
    first = int(page.locator("#lockout-count").inner_text())
    assert 590 <= first <= 600
    expect(page.locator("#lockout-count")).not_to_have_text(str(first), timeout=WAIT_MS)
    shot(page, "lockout-fresh-page")
    tap_code(page, good)
    expect(page.locator("#prompt-en")).to_have_text(
        "Type the last 4 digits of the mobile that got the SMS"
    )
    # A wrong guess at the digits opens nothing and says so in both languages.
    tap_code(page, "1234")
    expect(page.locator("#message")).to_contain_text("手机号后四位不正确", timeout=WAIT_MS)
    expect(page.locator("#message")).to_contain_text("last 4 digits of the mobile are wrong")
    assert sim.compartment(1, 1).door_open is False
    tap_code(page, good)
    tap_code(page, "8000")
    expect(page.locator("#door")).to_have_text("1", timeout=WAIT_MS)
    expect(page.locator("#message")).to_contain_text("Door 1 is open")
    assert sim.compartment(1, 1).door_open is True


def staff_log_in(page: Page, staff_no: str) -> None:
    page.click("#staff-button")
    page.fill("#staff-no", staff_no)
    page.fill("#staff-pass", staff_pass(staff_no))
    page.click("#staff-login-submit")
    expect(page.locator("#staff-panel-screen")).to_be_visible(timeout=WAIT_MS)


def test_staff_collect_and_recover_from_the_panel(tmp_path, sim, make_controller, open_kiosk):
    seed_world(tmp_path, sim)
    ctl = make_controller()
    ctl.start()
    page = open_kiosk(ctl)
    page.click("#staff-button")
    page.fill("#staff-no", "S001")
    page.fill("#staff-pass", "12345")
    page.click("#staff-login-submit")
    expect(page.locator("#staff-login-message")).to_contain_text("Wrong staff number")
    page.click("#staff-cancel")
    staff_log_in(page, "S001")
    expect(page.locator("#staff-name")).to_have_text("name of S001")
    expect(page.locator("#tasks-load li")).to_have_text(["REC-24 · M装入 Load"])
    expect(page.locator("#tasks-collect li")).to_have_count(1)
    expect(page.locator("#tasks-recover li")).to_have_count(1)
    expect(page.locator("#maintenance-section")).to_be_hidden()  # not for "staff"
    shot(page, "staff-panel")

    page.click("#tasks-collect button[data-compartment='2']")
    expect(page.locator("#staff-door")).to_have_text("2", timeout=WAIT_MS)
    assert sim.compartment(1, 2).door_open is True
    sim.take_item(1, 2)
    sim.close_door(1, 2)
    assert wait_event(tmp_path, "collected", compartment=2)["data"]["by"] == "S001"
    expect(page.locator("#tasks-collect li")).to_have_text(["暂无 None"], timeout=WAIT_MS)

    page.click("#tasks-recover button[data-compartment='6']")
    expect(page.locator("#staff-door")).to_have_text("6", timeout=WAIT_MS)
    sim.take_item(2, 2)
    sim.close_door(2, 2)
    wait_event(tmp_path, "staff_action", compartment=6, action="recovered")
    expect(page.locator("#tasks-recover li")).to_have_text(["暂无 None"], timeout=WAIT_MS)

    page.click("#staff-logout")
    expect(page.locator("#keypad-screen")).to_be_visible()
    assert not any(ctl.status()["doors"].values())  # every door shut again


def test_staff_panel_logs_out_after_inactivity(tmp_path, sim, make_controller, open_kiosk):
    seed_world(tmp_path, sim)
    ctl = make_controller(extra="staff_session_s = 2.0")
    ctl.start()
    page = open_kiosk(ctl)
    staff_log_in(page, "T001")  # a technician: maintenance only
    expect(page.locator("#load-section")).to_be_hidden()
    expect(page.locator("#maintenance-section")).to_be_visible()
    page.select_option("#maint-number", "5")
    page.click("#maint-open")
    expect(page.locator("#staff-door")).to_have_text("5", timeout=WAIT_MS)
    wait_until(lambda: sim.compartment(2, 1).door_open, 5, "door 5 open")
    expect(page.locator("#keypad-screen")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#message")).to_contain_text("Staff logged out after inactivity.")
    wait_event(tmp_path, "staff_action", compartment=5, action="maintenance")


def test_a_jam_at_the_staff_panel_offers_reopen_and_the_lists_stay_put(
    tmp_path, sim, make_controller, open_kiosk
):
    """Issue 13: a staff collect whose door jammed said "press reopen" with no reopen
    button and showed the door in the success colour; the task lists were redrawn on every
    refresh, so a button could go from under a finger. Now: the failed door is red, a
    reopen button reopens it with the staff session, and a refresh that changes nothing
    redraws nothing."""
    seed_world(tmp_path, sim)
    ctl = make_controller()
    ctl.start()
    page = open_kiosk(ctl)
    staff_log_in(page, "S001")
    button = page.locator("#tasks-recover button[data-compartment='6']")
    expect(button).to_be_visible()
    handle = button.element_handle()
    page.wait_for_timeout(3500)  # past one task refresh (3 s)
    assert handle.evaluate("b => b.isConnected"), "the button was redrawn under the finger"

    sim.inject(board=1, fault="jammed", channel=2)
    page.click("#tasks-collect button[data-compartment='2']")
    expect(page.locator("#staff-door")).to_have_text("2", timeout=WAIT_MS)
    expect(page.locator("#staff-door")).to_have_class("door failed")
    expect(page.locator("#staff-message")).to_have_class("message bad")
    expect(page.locator("#staff-reopen")).to_be_visible()
    assert sim.compartment(1, 2).door_open is False
    shot(page, "staff-panel-jammed")

    sim.clear(board=1, fault="jammed")
    page.click("#staff-reopen")
    expect(page.locator("#staff-door")).to_have_class("door", timeout=WAIT_MS)
    expect(page.locator("#staff-message")).to_have_class("message ok")
    expect(page.locator("#staff-reopen")).to_be_hidden()
    assert sim.compartment(1, 2).door_open is True
    sim.take_item(1, 2)
    sim.close_door(1, 2)
    assert wait_event(tmp_path, "collected", compartment=2)["data"]["by"] == "S001"
    sent = [e for e in db_events(tmp_path / "data") if e["type"] == "unlock_sent"]
    assert sent[-1]["data"].get("reopen") and sent[-1]["data"].get("staff_no") == "S001"
