"""The kiosk's ``GET /metrics`` on a real controller (child process) with the simulator over a
pty: a door opened and shut moves the door-event counters, a wrong code the keypad histogram,
a board gone silent its own timeout counter (and no other board's); the outbox depth is the
outbox's. Gated: loopback by default, the configured token when there is one."""

from __future__ import annotations

import secrets

import httpx
import pytest

from locker_controller.config import parse_config
from locker_controller.errors import ConfigError
from tests.locker_controller.conftest import LOCKER_KEY, MASTER_HEX
from tests.support.metrics import samples, value
from tests.support.waiting import wait_until
from xinbao.codes import code_for


def scrape(ctl, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    r = httpx.get(ctl.kiosk + "/metrics", headers=headers or {}, timeout=10)
    assert r.status_code == 200, r.text
    return samples(r.text)


def door_events(samples) -> float:
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "xinbao_controller_events_total" and dict(labels)["type"].startswith("door_")
    )


@pytest.mark.slow
def test_figures_move_with_doors_codes_and_a_silent_board(sim, make_controller):
    ctl = make_controller()
    ctl.start()
    wait_until(lambda: ctl.status()["doors_settled"], 10, "the doors read")
    before = scrape(ctl)
    assert value(before, "xinbao_controller_bus_timeouts_total", bus="0", board="2") == 0
    assert value(before, "xinbao_controller_board_reachable", bus="0", board="2") == 1

    # A door opened with no unlock of ours (forced) and shut again: two door events.
    sim.open_door(1, 2, by="forced")
    forced = {"type": "door_forced"}
    wait_until(
        lambda: value(scrape(ctl), "xinbao_controller_events_total", **forced) == 1,
        10,
        "door_forced counted",
    )
    sim.close_door(1, 2)
    closed = {"type": "door_closed"}
    wait_until(
        lambda: (
            value(scrape(ctl), "xinbao_controller_events_total", **closed)
            > value(before, "xinbao_controller_events_total", **closed)
        ),
        10,
        "door_closed counted",
    )
    after_doors = scrape(ctl)
    assert door_events(after_doors) >= door_events(before) + 2
    # No broker in this test: every event waits in the outbox, and the metric says so.
    assert value(after_doors, "xinbao_controller_outbox_depth") == ctl.status()["outbox_depth"]
    assert value(after_doors, "xinbao_controller_outbox_depth") >= 2
    assert value(after_doors, "xinbao_controller_online") == 0

    # A wrong code: timed, as refused.
    refused = {"result": "refused"}
    assert ctl.code(code_for(LOCKER_KEY, 999)).status_code == 400
    keypad = scrape(ctl)
    assert value(keypad, "xinbao_controller_keypad_answer_seconds_count", **refused) == 1
    assert value(keypad, "xinbao_controller_keypad_pulse_seconds_count") == 0

    # Board 2 stops answering: its timeouts count up, board 1's do not.
    sim.inject(board=2, fault="absent")
    wait_until(
        lambda: value(scrape(ctl), "xinbao_controller_board_reachable", bus="0", board="2") == 0,
        15,
        "board 2 unreachable in the metrics",
    )
    silent = scrape(ctl)
    assert value(silent, "xinbao_controller_bus_timeouts_total", bus="0", board="2") >= 3
    assert value(silent, "xinbao_controller_bus_timeouts_total", bus="0", board="1") == 0
    assert value(silent, "xinbao_controller_doors_out_of_service") == 4
    assert value(silent, "xinbao_controller_events_total", type="board_unreachable") == 1
    # Labels name boards and event types, never a code.
    text = httpx.get(ctl.kiosk + "/metrics", timeout=10).text
    assert code_for(LOCKER_KEY, 999) not in text


TOKEN = secrets.token_urlsafe(32)


@pytest.mark.slow
def test_with_a_token_a_scrape_without_it_is_refused(sim, make_controller):
    ctl = make_controller(extra=f'[metrics]\ntoken = "{TOKEN}"\n')
    ctl.start()
    for headers in ({}, {"Authorization": "Bearer " + "x" * 43}):
        r = httpx.get(ctl.kiosk + "/metrics", headers=headers, timeout=10)
        assert r.status_code == 401, r.text
        body = r.json()
        assert body["reason"] == "metrics_token" and body["message_zh"] and body["message_en"]
        assert "xinbao_" not in r.text
    found = scrape(ctl, {"Authorization": f"Bearer {TOKEN}"})
    assert ("xinbao_controller_outbox_depth", ()) in found


@pytest.mark.slow
def test_an_allow_list_without_loopback_refuses_this_machine(sim, make_controller):
    ctl = make_controller(extra='[metrics]\nallow = ["10.0.0.0/8"]\n')
    ctl.start()
    r = httpx.get(ctl.kiosk + "/metrics", timeout=10)
    assert r.status_code == 403 and r.json()["reason"] == "metrics_address", r.text


BASE = f"""locker_id = "XA-1"
master_key_hex = "{MASTER_HEX}"
data_dir = "/tmp/x"
[[buses]]
port = "/dev/null"
protocol = "kerong-cu16"
  [[buses.boards]]
  address = 1
[[compartments]]
number = 1
size = "S"
board = 1
channel = 1
"""


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ('token = "short"', "at least 32"),
        (f'token = "{"ab" * 20}"', "not a random token"),
        ('allow = ["intranet"]', "'intranet' is not an address"),
    ],
)
def test_a_weak_token_or_a_bad_allow_list_is_refused(section, said):
    with pytest.raises(ConfigError, match=said):
        parse_config(BASE + f"[metrics]\n{section}\n")
