"""8A boards whose firmware pushes door changes (``82 BOARD CH ST BCC``, issue 12): the
controller takes each report as a settled door change at once, without waiting for
``debounce_polls`` polls of that board; the door event says ``via: report``. A board that does
not push is still read by polling alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulator import BoardSpec, Simulator
from tests.locker_controller.conftest import wait_until
from tests.locker_controller.test_doors import db_events, wait_event

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[Simulator]:
    boards = [
        BoardSpec("bcc-8a", 1, channels=24, reports_doors=True),
        BoardSpec("bcc-8a", 2, channels=24),
    ]
    with Simulator(boards, wire_timing=False, reply_delay=0.001) as s:
        yield s


def test_pushed_door_reports_are_door_events_without_the_polls(tmp_path, sim, make_controller):
    # Ten polls of a board before a polled change counts: a report counts at once.
    ctl = make_controller(protocol="bcc-8a", channels=24, poll_interval_s=0.1, debounce_polls=10)
    ctl.start()
    wait_until(lambda: ctl.status()["doors_settled"], 20, "every door read ten times")

    sim.open_door(1, 3, by="forced")  # compartment 3: board 1 pushes
    forced = wait_event(tmp_path, "door_forced", compartment=3)
    assert forced["data"].get("via") == "report", forced
    sim.close_door(1, 3)
    closed = wait_event(tmp_path, "door_closed", compartment=3)
    assert closed["data"].get("via") == "report", closed

    sim.open_door(2, 2, by="forced")  # compartment 6: board 2 does not push
    polled = wait_event(tmp_path, "door_forced", compartment=6, timeout=20)
    assert "via" not in polled["data"], polled
    # Each change once, however it was seen.
    seen = [(e["type"], e["compartment"]) for e in db_events(tmp_path / "data")]
    assert seen.count(("door_forced", 3)) == 1 and seen.count(("door_closed", 3)) == 1, seen
