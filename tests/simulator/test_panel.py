"""The testers' web panel, driven in Debian's chromium through Playwright.

Every check looks at both sides: what the page shows and what the simulator's state or
ground truth says, so a page that merely looks right cannot pass. The cabinet has two buses
that both have a board 1, so a request that forgets its bus would hit the wrong door.
Screenshots land in test-artifacts/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
import serial
from playwright.sync_api import Browser, Page, expect

from simulator import BoardSpec, Cabinet, Fault
from tests.support.browser import launch_chromium, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# cu16 golden vector (DESIGN.md §4): unlock board 1, lock 3.
CU16_UNLOCK_B1_L3 = bytes.fromhex("02 12 31 03 48")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def cabinet() -> Iterator[Cabinet]:
    cab = Cabinet()
    try:
        cab.add_bus(
            "cu16",
            [
                BoardSpec(protocol="kerong-cu16", address=1, channels=4),
                BoardSpec(protocol="kerong-cu16", address=2, channels=4),
            ],
            wire_timing=False,
            reply_delay=0.0,
        )
        cab.add_bus("8a", [BoardSpec(protocol="bcc-8a", address=1, channels=8)], wire_timing=False)
        cab.start_control("127.0.0.1", 0)
        yield cab
    finally:
        cab.stop()


@pytest.fixture
def page(browser: Browser, cabinet: Cabinet, request) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(cabinet.start_control())
        expect(page.locator("#link-status")).to_have_attribute("data-state", "online")
        yield page
        screenshot(page, f"panel-{request.node.name}")
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def door(page: Page, bus: str, board: int, channel: int):
    return page.locator(f'.door[data-bus="{bus}"][data-board="{board}"][data-channel="{channel}"]')


def message(page: Page):
    return page.locator("#message")


def test_page_shows_every_door(page, cabinet):
    expected = {
        (name, b.address, ch)
        for name, sim in cabinet.buses.items()
        for b in sim.boards
        for ch in b.compartments
    }
    doors = page.locator(".door")
    expect(doors).to_have_count(len(expected))
    shown = {
        (
            d.get_attribute("data-bus"),
            int(d.get_attribute("data-board")),
            int(d.get_attribute("data-channel")),
        )
        for d in doors.all()
    }
    assert shown == expected
    expect(page.locator(".door[data-door='closed'][data-locked='true']")).to_have_count(16)
    expect(page.locator("section.bus")).to_have_count(2)
    expect(page.locator("#fault-board option")).to_have_count(3)


def test_latched_door_is_refused_with_a_message(page, cabinet):
    target = door(page, "cu16", 1, 2)
    target.locator(".door-face").click()
    expect(message(page)).to_be_visible()
    expect(message(page)).to_have_attribute("data-kind", "error")
    expect(message(page)).to_contain_text("409")
    expect(message(page)).to_contain_text("latched")
    assert not cabinet.buses["cu16"].compartment(1, 2).door_open
    expect(target).to_have_attribute("data-door", "closed")
    assert cabinet.truth.events("door_opened") == []


def test_door_unlocked_on_the_wire_shows_open_and_click_closes_it(page, cabinet):
    sim = cabinet.buses["cu16"]
    port = serial.serial_for_url(sim.start_tcp("127.0.0.1", 0), timeout=1.0)
    try:
        port.write(CU16_UNLOCK_B1_L3)
        port.flush()
        assert sim.truth.wait_for("door_opened", board=1, channel=3) is not None
    finally:
        port.close()
    target = door(page, "cu16", 1, 3)
    expect(target).to_have_attribute("data-door", "open")
    expect(target.locator(".door-state")).to_contain_text("Open")
    # The other bus's board 1 is untouched.
    expect(door(page, "8a", 1, 3)).to_have_attribute("data-door", "closed")

    target.locator(".door-face").click()
    expect(target).to_have_attribute("data-door", "closed")
    expect(target).to_have_attribute("data-locked", "true")
    state = sim.compartment(1, 3)
    assert not state.door_open and state.locked
    assert [e.by for e in cabinet.truth.events("door_closed")] == ["tester"]


def test_put_and_take_items(page, cabinet):
    sim = cabinet.buses["cu16"]
    sim.board(2).unlock(4)
    target = door(page, "cu16", 2, 4)
    expect(target).to_have_attribute("data-door", "open")
    put, take = target.locator(".item-put"), target.locator(".item-take")

    put.click()
    expect(target).to_have_attribute("data-items", "1")
    put.click()
    expect(target).to_have_attribute("data-items", "2")
    expect(target.locator(".item-count")).to_contain_text("×2")
    assert sim.compartment(2, 4).items == 2
    take.click()
    expect(target).to_have_attribute("data-items", "1")
    assert sim.compartment(2, 4).items == 1

    target.locator(".door-face").click()  # shut it with the item inside
    expect(target).to_have_attribute("data-door", "closed")
    take.click()
    expect(message(page)).to_have_attribute("data-kind", "error")
    expect(message(page)).to_contain_text("shut")
    assert sim.compartment(2, 4).items == 1 and sim.compartment(2, 4).occupied


def test_forced_open_reaches_the_right_bus(page, cabinet):
    page.locator("#force-open").check()
    target = door(page, "8a", 1, 5)
    target.locator(".door-face").click()
    expect(target).to_have_attribute("data-door", "open")
    assert cabinet.buses["8a"].compartment(1, 5).door_open
    assert not cabinet.buses["cu16"].compartment(1, 4).door_open
    opened = cabinet.truth.events("door_opened")
    assert [(e.bus, e.board, e.channel, e.by) for e in opened] == [("8a", 1, 5, "forced")]
    target.locator(".item-take").click()  # nothing inside
    expect(message(page)).to_contain_text("empty")


def test_inject_and_clear_faults(page, cabinet):
    page.select_option("#fault-board", label="8a · 板 1")
    page.select_option("#fault-kind", "jammed")
    page.select_option("#fault-channel", "6")
    page.locator("#fault-inject").click()
    badge = door(page, "8a", 1, 6).locator(".badge[data-fault='jammed']")
    expect(badge).to_be_visible()
    assert cabinet.buses["8a"].faults() == [Fault(kind="jammed", board=1, channel=6)]
    assert cabinet.buses["cu16"].faults() == []

    # A whole-board fault with a parameter; the channel choice is off for it.
    page.select_option("#fault-board", label="cu16 · 板 2")
    page.select_option("#fault-kind", "slow")
    expect(page.locator("#fault-channel")).to_be_disabled()
    page.locator("#fault-params input[data-param='seconds']").fill("1.5")
    page.locator("#fault-inject").click()
    board2 = page.locator('.board[data-bus="cu16"][data-board="2"]')
    expect(board2.locator(".board-faults .badge[data-fault='slow']")).to_be_visible()
    assert cabinet.buses["cu16"].faults() == [Fault("slow", 2, None, {"seconds": 1.5})]

    # Bad input: the API's 400 message reaches the tester, nothing changes.
    page.locator("#fault-params input[data-param='seconds']").fill("soon")
    page.locator("#fault-inject").click()
    expect(message(page)).to_contain_text("400")
    expect(message(page)).to_contain_text("seconds")
    assert len(cabinet.buses["cu16"].faults()) == 1
    expect(page.locator("#fault-list li")).to_have_count(2)

    page.locator("#fault-list li[data-fault='jammed'] button").click()
    expect(badge).to_have_count(0)
    assert cabinet.buses["8a"].faults() == []
    page.locator("#fault-clear-all").click()
    expect(page.locator("#fault-list li.none")).to_be_visible()
    assert cabinet.buses["cu16"].faults() == []


def test_truth_log_shows_events_newest_first(page, cabinet):
    sim = cabinet.buses["cu16"]
    sim.board(1).unlock(1)
    sim.put_item(1, 1)
    target = door(page, "cu16", 1, 1)
    expect(target).to_have_attribute("data-items", "1")  # the page has seen it open
    target.locator(".door-face").click()  # close, through the page
    rows = page.locator("#truth-body tr")
    expect(rows.first).to_have_attribute("data-kind", "door_closed")
    seqs = [int(s) for s in rows.evaluate_all("rows => rows.map(r => r.dataset.seq)")]
    kinds = rows.evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert seqs == sorted(seqs, reverse=True)
    assert seqs[0] == cabinet.truth.last_seq
    truth = [e.kind for e in reversed(cabinet.truth.events())]
    assert kinds == truth
    assert kinds[:4] == ["door_closed", "item_put", "door_opened", "lock_pulse"]
    expect(rows.first).to_contain_text("cu16")

    # Wire frames are logged too, and can be hidden.
    port = serial.serial_for_url(sim.start_tcp("127.0.0.1", 0), timeout=1.0)
    try:
        port.write(bytes.fromhex("02 00 30 03 35"))  # cu16 status of board 0: no such board
        port.flush()
        assert sim.truth.wait_for("frame_received") is not None
    finally:
        port.close()
    wire = page.locator("#truth-body tr[data-kind='frame_received']")
    expect(wire.first).to_be_visible()
    expect(wire.first).to_contain_text(re.compile("02 00 30 03 35", re.IGNORECASE))
    page.locator("#truth-hide-wire").check()
    expect(wire.first).to_be_hidden()


def test_static_files_are_served_safely(cabinet):
    with httpx.Client(base_url=cabinet.start_control(), timeout=5) as client:
        index = client.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assert "/panel/panel.js" in index.text and "<table>" in index.text  # noscript doors
        js = client.get("/panel/panel.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "function" in js.text
        assert client.get("/panel/panel.css").headers["content-type"].startswith("text/css")
        for bad in (
            "/panel/../control.py",
            "/panel/%2e%2e/control.py",
            "/panel/..%2fcontrol.py",
            "/panel/__init__.py",
            "/panel/nothing.js",
            "/panel/.panel.js",
            "/panel/sub/panel.js",
        ):
            r = client.get(bad)
            assert r.status_code == 404, bad
            assert "error" in r.json()
        assert client.post("/panel/panel.js").status_code == 405


def test_fault_kinds_and_truth_limit(cabinet):
    with httpx.Client(base_url=cabinet.start_control(), timeout=5) as client:
        kinds = {k["fault"]: k for k in client.get("/fault-kinds").json()["kinds"]}
        assert kinds["slow"]["params"] == {"seconds": 2.0} and not kinds["slow"]["per_channel"]
        assert kinds["jammed"]["per_channel"]
        sim = cabinet.buses["cu16"]
        for _ in range(3):
            sim.inject(1, "absent")
        answer = client.get("/truth", params={"limit": 2}).json()
        assert [e["seq"] for e in answer["events"]] == [2, 3] and answer["last_seq"] == 3
        for bad in ("0", "x", "10001"):
            r = client.get("/truth", params={"limit": bad})
            assert r.status_code == 400 and "limit" in r.json()["error"]


def test_doors_show_the_cabinets_compartment_numbers(page, cabinet):
    """Issue 13: testers think in compartment numbers, as the dashboard shows them; a bus
    told its wiring (the demo tells it) shows each door's number beside board and channel,
    and only where told (the 8A bus here was told nothing)."""
    cabinet.buses["cu16"].label(2, 3, "#7 M")
    cabinet.buses["cu16"].label(1, 1, "#1 S")
    expect(door(page, "cu16", 2, 3).locator(".door-label")).to_have_text("箱 #7 M")
    expect(door(page, "cu16", 1, 1).locator(".door-label")).to_have_text("箱 #1 S")
    expect(door(page, "cu16", 1, 3).locator(".door-label")).to_be_hidden()
    expect(door(page, "8a", 1, 3).locator(".door-label")).to_be_hidden()
    boards = httpx.get(cabinet.start_control() + "/boards", timeout=5).json()["boards"]
    labels = {
        (b["bus"], b["address"], c["channel"]): c["label"]
        for b in boards
        for c in b["channels"]
        if c["label"]
    }
    assert labels == {("cu16", 2, 3): "#7 M", ("cu16", 1, 1): "#1 S"}
