"""Journeys against the simulator over a pty and a real Mosquitto, controller as a process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.locker_controller.conftest import LOCKER_KEY, wait_until
from xinbao.codes import code_for
from xinbao.contract import CommandType, Reservation, ReservationSync

pytestmark = pytest.mark.slow


def load_item(sim, board: int, channel: int) -> None:
    """A licence already in the compartment (staff put it there before the test)."""
    sim.open_door(board, channel, by="forced")  # staff key, before the controller runs
    sim.put_item(board, channel)
    sim.close_door(board, channel)


def pickup(hid: int, compartment: int, counter: int) -> Reservation:
    return Reservation(
        handover_id=hid,
        kind="pickup",
        compartment=compartment,
        counter=counter,
        digits=8,
        expires_at=datetime.now(UTC) + timedelta(days=7),
        state="deposited",
    )


def test_pickup_with_the_broker_down_for_the_whole_pickup(sim, broker, cloud, make_controller):
    load_item(sim, 1, 3)
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    cmd = cloud.command(CommandType.SYNC_RESERVATIONS, ReservationSync(upserts=[pickup(41, 3, 7)]))
    assert cloud.reply_to(cmd.request_id).ok

    broker.stop()
    since = len(sim.truth.events())
    response = ctl.code(code_for(LOCKER_KEY, 7))
    assert response.status_code == 200, response.text
    assert response.json()["compartment"] == 3
    assert response.json()["outcome"] == "opened"
    sim.truth.wait_for("door_opened", since=since, board=1, channel=3, timeout=5)
    sim.take_item(1, 3)
    sim.close_door(1, 3)
    wait_until(lambda: not ctl.status()["doors"]["3"], 5, "the controller to see door 3 shut")

    broker.start()
    wait_until(lambda: "collected" in cloud.event_types(), 20, "collected to reach the cloud")
    events = cloud.events()
    types = [e.type.value for e in events]
    for expected in ("code_accepted", "unlock_sent", "door_opened", "door_closed", "collected"):
        assert expected in types
    collected = next(e for e in events if e.type.value == "collected")
    assert collected.data["handover_id"] == 41 and collected.compartment == 3
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    # The code was single use: a second try is refused and the door stays shut.
    again = ctl.code(code_for(LOCKER_KEY, 7))
    assert again.status_code == 400 and again.json()["reason"] == "used"
    assert sim.compartment(1, 3).door_open is False
