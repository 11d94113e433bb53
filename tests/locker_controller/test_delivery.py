"""No event lost: broker restarted mid-stream, frozen (SIGSTOP) or killed, controller killed
with SIGKILL before publish or before the PUBACK, controller started with the broker down.
After each, a signed command still reaches the controller (subscriptions renewed)."""

from __future__ import annotations

import pytest

from tests.locker_controller.conftest import LOCKER_ID, LOCKER_KEY, Cloud, db_events, wait_until
from tests.locker_controller.test_pickup_offline import load_item, pickup
from xinbao.codes import code_for
from xinbao.contract import (
    CommandType,
    EventMark,
    PingPayload,
    ReservationSync,
    Telemetry,
    UnlockPayload,
)

pytestmark = pytest.mark.slow


def slam(sim, ctl, board: int, channel: int, number: int) -> None:
    """Someone forces a door and shuts it again: two events (door_forced, door_closed)."""
    # Seen shut first: forced before the controller's first reading would be its baseline.
    wait_until(lambda: ctl.status()["doors"][str(number)] is False, 10, f"door {number} seen")
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
    before = onlines(cloud)
    broker.start()
    for channel in (1, 2):
        slam(sim, ctl, 2, channel, channel + 4)
    wait_until(lambda: len(set(e.seq for e in cloud.events())) >= 12, 30, "all 12 events")
    check_complete_and_ordered(cloud, ctl)
    kinds = cloud.event_types()
    assert kinds.count("door_forced") >= 6 and kinds.count("door_closed") >= 6
    # The controller said online again, and its subscription was renewed with it.
    wait_until(lambda: onlines(cloud) > before, 20, "online again after the restart")
    unlock_works(cloud, sim, 7, 2, 3)


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


def unlock_works(cloud, sim, number: int, board: int, channel: int) -> None:
    """A signed unlock sent now is received (the subscription is live) and answered ok."""
    cmd = cloud.command(
        CommandType.UNLOCK, UnlockPayload(compartment=number, reason="resubscribed?")
    )
    reply = cloud.reply_to(cmd.request_id, timeout=20)
    assert reply.ok and reply.result["outcome"] == "opened", reply
    assert sim.compartment(board, channel).door_open is True


def onlines(cloud) -> int:
    return cloud.on("presence").count(b"online")


def held_back(ctl, tmp_path, count: int) -> list[int]:
    """``count`` events published to the frozen broker, none acknowledged: all still in
    the outbox in SQLite (only a PUBACK marks an event sent)."""
    wait_until(lambda: ctl.status()["in_flight"] >= count, 10, f"{count} events published")
    status = ctl.status()
    assert status["outbox_depth"] >= count, status
    seqs = [e["seq"] for e in db_events(tmp_path / "data") if not e["acked"]]
    assert len(seqs) == status["outbox_depth"]
    return seqs


def test_frozen_broker_acknowledges_nothing_so_nothing_leaves_the_outbox(
    sim, broker, cloud, make_controller, tmp_path
):
    """SIGSTOPped broker: the link looks up, events go to the socket and wait for a PUBACK.
    The heartbeats sent meanwhile report them as outbox depth; after SIGCONT all arrive,
    each once, and the outbox drains (heartbeat depth 0)."""
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    slam(sim, ctl, 1, 1, 1)
    wait_until(lambda: len(cloud.events()) >= 2, 10, "the first events")
    wait_until(lambda: ctl.status()["outbox_depth"] == 0, 10, "the outbox to drain")
    broker.pause()
    try:
        for channel in (2, 3):
            slam(sim, ctl, 1, channel, channel)
        seqs = held_back(ctl, tmp_path, 4)
        beats = ctl.status()["heartbeats_sent"]
        wait_until(lambda: ctl.status()["heartbeats_sent"] > beats, 10, "a heartbeat")
        assert ctl.status()["outbox_depth"] == len(seqs)  # still nothing dropped
    finally:
        broker.resume()
    check_complete_and_ordered(cloud, ctl)
    delivered = [e.seq for e in cloud.events()]
    assert sorted(delivered) == sorted(set(delivered)), "a duplicate over a live link"
    assert set(seqs) <= set(delivered)
    depths = [Telemetry.from_bytes(p).outbox_depth for p in cloud.on("telemetry")]
    assert max(depths) >= len(seqs), depths
    wait_until(
        lambda: Telemetry.from_bytes(cloud.on("telemetry")[-1]).outbox_depth == 0,
        10,
        "a heartbeat with the outbox empty",
    )


@pytest.mark.parametrize("broker_then", ["sigcont", "sigkill"])
def test_controller_killed_while_the_broker_is_frozen(
    sim, broker, cloud, make_controller, tmp_path, broker_then
):
    """Events published to a SIGSTOPped broker, then the controller SIGKILLed: nothing was
    acknowledged, so the restarted controller publishes them all again. Every seq reaches
    the cloud; a second delivery (the frozen broker may still read the dead connection's
    bytes after SIGCONT) carries the same event_id, so dedupe on event_id leaves exactly
    one per seq. After a SIGKILLed broker nothing was ever delivered twice."""
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    slam(sim, ctl, 1, 1, 1)
    wait_until(lambda: len(cloud.events()) >= 2, 10, "the first events")
    broker.pause()
    for channel in (2, 3):
        slam(sim, ctl, 1, channel, channel)
    seqs = held_back(ctl, tmp_path, 4)
    ctl.kill()
    if broker_then == "sigcont":
        broker.resume()
    else:
        broker.kill()
        broker.start()
    ctl.start()
    check_complete_and_ordered(cloud, ctl)
    events = cloud.events()
    assert set(seqs) <= {e.seq for e in events}
    ids_per_seq: dict[int, set] = {}
    for e in events:
        ids_per_seq.setdefault(e.seq, set()).add(e.event_id)
    assert all(len(ids) == 1 for ids in ids_per_seq.values())
    if broker_then == "sigkill":
        assert len(events) == len(ids_per_seq), "delivered twice"
    unlock_works(cloud, sim, 5, 2, 1)


def test_controller_started_with_the_broker_down(sim, broker, make_controller, tmp_path):
    broker.stop()
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    slam(sim, ctl, 1, 2, 2)
    assert ctl.status()["online"] is False
    assert ctl.status()["outbox_depth"] >= 2  # kept for later
    broker.start()
    cloud = Cloud(broker.port)
    try:
        wait_until(lambda: onlines(cloud) >= 1, 30, "the controller to come on line")
        check_complete_and_ordered(cloud, ctl)
        assert cloud.event_types()[:2] == ["door_forced", "door_closed"]
        unlock_works(cloud, sim, 6, 2, 2)
    finally:
        cloud.close()


def test_outbox_waits_until_the_cloud_speaks_after_a_connect(sim, broker, make_controller):
    """A broker acknowledges (and drops) what no subscription matches, so a PUBACK alone
    does not prove the cloud got an event. After connecting, the controller holds its
    outbox until a verified command arrives (the cloud's sync on seeing ``online``)."""
    silent = Cloud(broker.port, greets=False)
    try:
        ctl = make_controller(mqtt_port=broker.port)
        ctl.start()
        wait_until(lambda: onlines(silent) >= 1, 20, "the controller on line")
        slam(sim, ctl, 1, 2, 2)
        beats = ctl.status()["heartbeats_sent"]
        wait_until(lambda: ctl.status()["heartbeats_sent"] > beats, 10, "a heartbeat")
        status = ctl.status()
        assert status["online"] and status["outbox_held"], status
        assert status["outbox_depth"] >= 2 and status["in_flight"] == 0, status
        assert silent.events() == []
        cmd = silent.command(CommandType.PING, PingPayload())
        assert silent.reply_to(cmd.request_id).result["pong"] is True
        check_complete_and_ordered(silent, ctl)
        assert silent.event_types()[:2] == ["door_forced", "door_closed"]
        assert ctl.status()["outbox_held"] is False
    finally:
        silent.close()


def test_events_a_broker_acknowledged_but_never_delivered_go_again(
    sim, broker, cloud, make_controller, tmp_path
):
    """A PUBACK says the broker has an event, not the cloud: here the cloud is not subscribed
    (as after a Mosquitto restart that forgot its shared subscription), the broker acks and
    drops. The controller keeps acked events; the next full sync says what the cloud holds,
    and the rest go again. A mark naming the last event lets them all leave the outbox."""
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    wait_until(lambda: not ctl.status()["outbox_held"], 10, "the cloud's greeting")
    slam(sim, ctl, 1, 1, 1)
    wait_until(lambda: len(cloud.events()) >= 2, 10, "the first events")
    topic = f"xinbao/v1/lockers/{LOCKER_ID}/#"
    cloud.client.unsubscribe(topic)
    wait_until(lambda: ctl.status()["outbox_depth"] == 0, 10, "the first events acked")
    seen = {e.event_id for e in cloud.events()}
    slam(sim, ctl, 1, 2, 2)
    wait_until(lambda: sum(e["acked"] for e in db_events(tmp_path / "data")) >= 4, 10, "all acked")
    assert ctl.status()["outbox_depth"] == 0
    assert {e.event_id for e in cloud.events()} == seen  # the broker dropped the new ones
    cloud.client.subscribe(topic, qos=1)
    first = cloud.events()[0]
    ours = EventMark(seq=first.seq, event_id=first.event_id)
    cmd = cloud.command(CommandType.SYNC_RESERVATIONS, ReservationSync(full=True, events_upto=ours))
    reply = cloud.reply_to(cmd.request_id)
    assert reply.ok and reply.result["events"]["sent_again"] >= 3, reply
    wait_until(
        lambda: (
            {"door_forced", "door_closed"}
            <= {e.type.value for e in cloud.events() if e.event_id not in seen}
        ),
        10,
        "the lost events sent again",
    )
    wait_until(lambda: ctl.status()["outbox_depth"] == 0, 10, "the repeats acked")
    assert first.seq not in {e["seq"] for e in db_events(tmp_path / "data")}
    last = max(cloud.events(), key=lambda e: e.seq)
    mark = EventMark(seq=last.seq, event_id=last.event_id)
    cmd = cloud.command(CommandType.SYNC_RESERVATIONS, ReservationSync(full=True, events_upto=mark))
    assert cloud.reply_to(cmd.request_id).ok
    assert [e for e in db_events(tmp_path / "data") if e["seq"] <= last.seq] == []
