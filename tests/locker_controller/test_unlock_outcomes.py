"""Every unlock outcome ends the way the door says: a door already open, or opened although
the board never confirmed it, completes its pickup or drop-off on the close; a door that
stayed shut frees its compartment after the reopen window. Controller without broker."""

from __future__ import annotations

import pytest

from tests.locker_controller.conftest import LOCKER_KEY, db_events, wait_until
from tests.locker_controller.test_doors import handover, seed, types, wait_event
from tests.locker_controller.test_pickup_offline import load_item
from xinbao.codes import code_for

pytestmark = pytest.mark.slow


def door_seen(ctl, number: int, is_open: bool) -> bool:
    return ctl.status()["doors"][str(number)] is is_open


def test_code_typed_for_a_door_already_open(tmp_path, sim, make_controller):
    load_item(sim, 1, 3)
    seed(tmp_path, handover(8, "pickup", 3, 81, "deposited"))
    ctl = make_controller()
    ctl.start()
    wait_until(lambda: door_seen(ctl, 3, False), 10, "door 3 seen shut")
    sim.open_door(1, 3, by="forced")
    wait_event(tmp_path, "door_forced", compartment=3)
    wait_until(lambda: door_seen(ctl, 3, True), 10, "door 3 seen open")

    opened = ctl.code(code_for(LOCKER_KEY, 81))
    assert opened.status_code == 200, opened.text
    body = opened.json()
    assert body["outcome"] == "already_open" and body["compartment"] == 3, body
    assert body["message_en"] == "Door 3 is open" and not body["can_reopen"]
    sent = wait_event(tmp_path, "unlock_sent", compartment=3)
    assert sent["data"]["outcome"] == "already_open"
    assert ctl.status()["busy"] == [3]

    sim.take_item(1, 3)
    sim.close_door(1, 3)
    collected = wait_event(tmp_path, "collected", compartment=3)
    assert collected["data"]["handover_id"] == 8
    assert ctl.status()["busy"] == []
    again = ctl.code(code_for(LOCKER_KEY, 81))
    assert again.status_code == 400 and again.json()["reason"] == "used"


def test_unconfirmed_unlock_then_the_door_is_seen_open(tmp_path, sim, make_controller):
    """The board pulses but answers too late (slow fault): outcome no_response. When it
    answers again, the open door is ours (door_opened, not door_forced) and its close
    completes the pickup."""
    load_item(sim, 1, 2)
    seed(tmp_path, handover(9, "pickup", 2, 91, "deposited"))
    ctl = make_controller()
    ctl.start()
    wait_until(lambda: door_seen(ctl, 2, False), 10, "door 2 seen shut")
    since = sim.truth.last_seq
    sim.inject(board=1, fault="slow", seconds=2.0)
    reply = ctl.code(code_for(LOCKER_KEY, 91))
    assert reply.status_code == 200, reply.text
    assert reply.json()["outcome"] == "no_response"
    assert "contact staff" in reply.json()["message_en"]
    assert sim.truth.events("lock_pulse", since, board=1, channel=2)  # it did pulse
    sim.clear(board=1, fault="slow")

    opened = wait_event(tmp_path, "door_opened", compartment=2)
    assert "door_forced" not in types(tmp_path)
    sent = [e for e in db_events(tmp_path / "data") if e["type"] == "unlock_sent"]
    assert [e["data"]["outcome"] for e in sent] == ["no_response"]
    assert sent[0]["seq"] < opened["seq"]
    sim.take_item(1, 2)
    sim.close_door(1, 2)
    collected = wait_event(tmp_path, "collected", compartment=2)
    assert collected["data"]["handover_id"] == 9


def test_door_that_stayed_shut_frees_its_compartment(tmp_path, sim, make_controller):
    """A drop-off's unlock gets no answer and the door stays shut (jammed): after
    reopen_window_s the compartment is free again and the unused code still works."""
    seed(tmp_path, handover(10, "dropoff", None, 101, "reserved"))
    ctl = make_controller(extra="reopen_window_s = 2.0")
    ctl.start()
    wait_until(lambda: door_seen(ctl, 3, False), 10, "door 3 seen shut")
    sim.inject(board=1, fault="jammed", channel=3)
    sim.inject(board=1, fault="slow", seconds=2.0)
    first = ctl.code(code_for(LOCKER_KEY, 101))
    assert first.status_code == 200 and first.json()["outcome"] == "no_response", first.text
    assert first.json()["compartment"] == 3  # the first free "M"
    assert ctl.status()["busy"] == [3]  # held for the drop-off while the window runs
    sim.clear(board=1)
    wait_until(lambda: ctl.status()["busy"] == [], 20, "the purpose to be dropped")
    assert sim.compartment(1, 3).door_open is False

    again = ctl.code(code_for(LOCKER_KEY, 101))
    assert again.status_code == 200 and again.json()["outcome"] == "opened", again.text
    assert again.json()["compartment"] == 3  # free again, not skipped for a stale purpose
    sim.put_item(1, 3)
    sim.close_door(1, 3)
    deposited = wait_event(tmp_path, "deposited", compartment=3)
    assert deposited["data"]["handover_id"] == 10
    outcomes = [
        e["data"]["outcome"] for e in db_events(tmp_path / "data") if e["type"] == "unlock_sent"
    ]
    assert outcomes == ["no_response", "opened"]


def test_a_code_typed_twice_opens_the_same_door_only(tmp_path, sim, make_controller):
    seed(tmp_path, handover(11, "dropoff", None, 111, "reserved"))
    ctl = make_controller()
    ctl.start()
    wait_until(lambda: door_seen(ctl, 3, False), 10, "door 3 seen shut")
    code = code_for(LOCKER_KEY, 111)
    first = ctl.code(code)
    assert first.status_code == 200 and first.json()["compartment"] == 3, first.text
    wait_until(lambda: door_seen(ctl, 3, True), 10, "door 3 seen open")
    again = ctl.code(code)  # the applicant is unsure and types it again
    assert again.status_code == 200, again.text
    assert again.json()["compartment"] == 3 and again.json()["outcome"] == "already_open"
    assert sim.compartment(1, 4).door_open is False  # the next free "M" stayed shut
    sim.put_item(1, 3)
    sim.close_door(1, 3)
    wait_event(tmp_path, "deposited", compartment=3)
    assert types(tmp_path).count("deposited") == 1
    used = ctl.code(code)
    assert used.status_code == 400 and used.json()["reason"] == "used"
