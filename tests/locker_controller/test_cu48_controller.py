"""A kerong-cu48 cabinet through the whole controller: a real ``xinbao controller`` process, its
kiosk and a simulated CU48 bus over a pty.

Kerong's "CU48 Protocol And Introduction" v2.1 (2020-03-23): an unlock (`02 ADDR LOCK 51 03
SUM`) has no reply. The controller fires it, waits the pulse and reads the status to tell
`opened` from `jammed`; the silence is never a timeout and never counts against the board's
health (it used to: every unlock waited for a reply that never came).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulator import BoardSpec, Simulator
from tests.locker_controller.conftest import LOCKER_KEY, wait_until
from tests.locker_controller.test_doors import handover, seed, types, wait_event
from tests.locker_controller.test_pickup_offline import load_item
from xinbao.codes import code_for

pytestmark = pytest.mark.slow

PICKUPS = 8  # one per compartment: 1-4 on board 1, 5-8 on board 2


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """Two CU48 boards (DIP addresses 1 and 2) that stay silent after an unlock, as the
    vendor documents; the controller's own conftest wires compartments 1-8 to them."""
    boards = [
        BoardSpec(protocol="kerong-cu48", address=address, pulse_ms=100) for address in (1, 2)
    ]
    with Simulator(boards, wire_timing=False, reply_delay=0.001) as s:
        yield s


def test_pickups_at_the_kiosk_open_and_the_boards_stay_healthy(tmp_path, sim, make_controller):
    spots = [(1 + (n - 1) // 4, (n - 1) % 4 + 1) for n in range(1, PICKUPS + 1)]
    for board, channel in spots:
        load_item(sim, board, channel)
    seed(
        tmp_path,
        *(handover(n, "pickup", n, 100 + n, "deposited") for n in range(1, PICKUPS + 1)),
    )
    ctl = make_controller(protocol="kerong-cu48")
    ctl.start()
    wait_until(lambda: ctl.status()["doors"].get("8") is False, 10, "every door seen shut")
    since = sim.truth.last_seq

    for number, (board, channel) in enumerate(spots, 1):
        answer = ctl.code(code_for(LOCKER_KEY, 100 + number))
        assert answer.status_code == 200, answer.text
        assert answer.json()["outcome"] == "opened" and answer.json()["compartment"] == number
        sim.take_item(board, channel)
        sim.close_door(board, channel)
        wait_event(tmp_path, "collected", compartment=number)

    # The boards heard one unlock per pickup and answered none of them ...
    unlocks = [e for e in sim.truth.events(since=since) if e.kind == "lock_pulse"]
    assert [(e.board, e.channel) for e in unlocks] == spots
    # ... and the controller never took that silence for a board going away.
    assert "board_unreachable" not in types(tmp_path)
    assert ctl.status()["out_of_service"] == []
