"""Forgot my code on the kiosk page in Debian's chromium (issue 13), with everything real
behind it: the controller (child process, simulator over a pty), Mosquitto, the cloud's
bridge and its SMS outbox. The page shows one answer for wrong and right details; the code
in the SMS, typed on the on-screen keys, opens the door the simulator sees open; with the
broker gone the page says, in both languages, that this cannot be done now. Screenshots go
to test-artifacts/."""

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.test_lost_code import commands_answered, new_code_sms, outcomes, ready
from tests.support.browser import launch_chromium, screenshot
from tests.support.cabinet import simulator
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]
WAIT_MS = 15_000


@pytest.fixture
def sim():
    with simulator() as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, controller) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1080, "height": 1600}, locale="zh-CN")
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on(
            "console",
            lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(controller.kiosk + "/")
        expect(page.locator("body[data-ready='1']")).to_have_count(1, timeout=WAIT_MS)
        yield page
    finally:
        context.close()
    assert errors == [], f"JavaScript errors or CSP refusals on the kiosk page: {errors}"


def ask(page: Page, number: str, digits: str) -> None:
    page.click("#lost-button")
    expect(page.locator("#lost-screen")).to_be_visible()
    page.fill("#lost-number", number)
    page.fill("#lost-mobile", digits)
    page.click("#lost-submit")


def tap_code(page: Page, code: str) -> None:
    for digit in code:
        page.click(f"#keys button:text-is('{digit}')")
    page.click("#keys button[data-key='ok']")


def test_forgot_my_code_on_the_page_then_the_new_code_opens_the_door(
    cloud, sim, controller, broker, page
):
    h = ready(cloud, "XA-LCB-0001")
    ask(page, "XA-LCB-0001", "1234")  # the wrong digits
    message = page.locator("#lost-message")
    expect(message).to_contain_text("如信息无误", timeout=WAIT_MS)
    wrong_said = message.inner_text()
    wait_until(lambda: outcomes(cloud) == ["mobile_mismatch"], 20, "the mismatch in the cloud")
    page.click("#lost-cancel")

    ask(page, "XA-LCB-0001", "8000")
    expect(message).to_contain_text("If the details match", timeout=WAIT_MS)
    assert message.inner_text() == wrong_said  # one answer: the page is no oracle
    expect(page.locator("#lost-number")).to_have_value("")
    screenshot(page, "kiosk-lost-code-sent")
    [body] = wait_until(lambda: new_code_sms(cloud), 20, "the SMS with the new code")
    code = re.findall(r"(?<!\d)\d{8}(?!\d)", body)[0]

    page.click("#lost-cancel")
    expect(page.locator("#keypad-screen")).to_be_visible()
    # The cabinet has the new counter once the sync is answered; the keypad opens with it.
    wait_until(lambda: commands_answered(cloud), 20, "the new code synced to the cabinet")
    number = str(h["compartment_number"])
    tap_code(page, code)
    expect(page.locator("#door")).to_have_text(number, timeout=WAIT_MS)
    expect(page.locator("#message")).to_contain_text(f"Door {number} is open")
    assert sim.compartment(1, h["compartment_number"]).door_open is True
    screenshot(page, "kiosk-lost-code-opened")

    broker.stop()
    wait_until(lambda: not controller.status()["online"], 20, "the cabinet off line")
    ask(page, "XA-LCB-0001", "8000")
    expect(message).to_contain_text("无法补发开箱码", timeout=WAIT_MS)
    expect(message).to_contain_text("No network connection")
    expect(message).to_have_class("message bad")
    screenshot(page, "kiosk-lost-code-offline")
