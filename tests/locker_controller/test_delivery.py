"""No event lost: broker restarted mid-stream, controller killed with SIGKILL before publish."""

from __future__ import annotations

from tests.locker_controller.conftest import LOCKER_KEY, db_events, wait_until
from tests.locker_controller.test_pickup_offline import load_item, pickup
from xinbao.codes import code_for
from xinbao.contract import CommandType, ReservationSync


def slam(sim, ctl, board: int, channel: int, number: int) -> None:
    """Someone forces a door and shuts it again: two events (door_forced, door_closed)."""
    sim.open_door(board, channel, by="forced")
    wait_until(lambda: ctl.status()["doors"][str(number)], 5, f"door {number} seen open")
    sim.close_door(board, channel)
    wait_until(lambda: not ctl.status()["doors"][str(number)], 5, f"door {number} seen shut")


def check_complete_and_ordered(cloud, ctl) -> None:
    wait_until(lambda: ctl.status()["outbox_depth"] == 0, 30, "the outbox to drain")
    events = cloud.events()
    seqs = [e.seq for e in events]
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == sorted(first_seen), "first deliveries out of seq order"
    assert set(seqs) == set(range(min(seqs), max(seqs) + 1)), "an event was lost"
    # At least once: a repeat carries the same event_id, never a new one for the same seq.
    by_seq = {}
    for e in events:
        assert by_seq.setdefault(e.seq, e.event_id) == e.event_id


def test_broker_restarted_mid_stream(sim, broker, cloud, make_controller):
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    for channel in (1, 2):
        slam(sim, ctl, 1, channel, channel)
    wait_until(lambda: len(cloud.event_types()) >= 4, 10, "the first events")
    broker.stop()
    for channel in (3, 4):
        slam(sim, ctl, 1, channel, channel)
    assert ctl.status()["outbox_depth"] >= 4
    broker.start()
    for channel in (1, 2):
        slam(sim, ctl, 2, channel, channel + 4)
    wait_until(lambda: len(set(e.seq for e in cloud.events())) >= 12, 30, "all 12 events")
    check_complete_and_ordered(cloud, ctl)
    kinds = cloud.event_types()
    assert kinds.count("door_forced") >= 6 and kinds.count("door_closed") >= 6


def test_sigkill_between_door_closed_and_its_publish(sim, broker, cloud, make_controller, tmp_path):
    load_item(sim, 1, 4)
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    cmd = cloud.command(CommandType.SYNC_RESERVATIONS, ReservationSync(upserts=[pickup(9, 4, 3)]))
    assert cloud.reply_to(cmd.request_id).ok
    broker.stop()  # nothing can be published from here on
    assert ctl.code(code_for(LOCKER_KEY, 3)).json()["outcome"] == "opened"
    sim.take_item(1, 4)
    sim.close_door(1, 4)
    wait_until(
        lambda: {"door_closed", "collected"} <= {e["type"] for e in db_events(tmp_path / "data")},
        10,
        "door_closed and collected committed",
    )
    ctl.kill()  # SIGKILL: no chance to flush or say goodbye
    broker.start()
    ctl.start()
    wait_until(lambda: "collected" in cloud.event_types(), 20, "collected after the restart")
    check_complete_and_ordered(cloud, ctl)
    kinds = cloud.event_types()
    for kind in ("code_accepted", "unlock_sent", "door_opened", "door_closed", "collected"):
        assert kind in kinds
    assert sim.compartment(1, 4).door_open is False
    assert len(sim.truth.events("lock_pulse")) == 1  # opened once, not again after restart
