"""Commands from the cloud over a real Mosquitto: forged, replayed, expired, retained and
malformed ones open nothing; good ones are answered with their request_id."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from locker_controller.commands import REJECTIONS_RECORDED, RETAINED_AGE_S, RejectionGate
from tests.locker_controller.conftest import LOCKER_ID, LOCKER_KEY, Cloud, wait_until
from tests.locker_controller.test_pickup_offline import load_item, pickup
from tests.support.passes import pass_now
from tests.support.proxy import RetainClearingLink
from xinbao.codes import code_for
from xinbao.contract import (
    CommandType,
    ConfigPayload,
    PingPayload,
    ReservationSync,
    Revocation,
    StaffCredentials,
    StaffEntry,
    Telemetry,
    UnlockPayload,
    sign_command,
)

UNLOCK_5 = UnlockPayload(compartment=5, reason="citizen on the phone", staff_no="S001")


def rejected(cloud) -> list[str]:
    return [e.data.get("reason") for e in cloud.events() if e.type.value == "command_rejected"]


@pytest.mark.slow
def test_security_checks_on_commands(sim, broker, cloud, make_controller):
    since = len(sim.truth.events())
    # Retained: the broker hands it to the controller when it subscribes, flagged retained;
    # refused although the signature is right.
    kept = sign_command(LOCKER_KEY, CommandType.UNLOCK, UNLOCK_5)
    cloud.send(kept.to_bytes(), retain=True)
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    wait_until(lambda: b"online" in cloud.on("presence"), 10, "presence online")
    assert cloud.reply_to(kept.request_id).error == "retained"
    cloud.send(b"", retain=True)  # clear the retained message again

    # Forged: signed with another key.
    forged = sign_command(b"\x00" * 32, CommandType.UNLOCK, UNLOCK_5)
    cloud.send(forged.to_bytes())
    reply = cloud.reply_to(forged.request_id)
    assert not reply.ok and reply.error == "bad_signature"

    # Tampered after signing: the compartment changed.
    good = sign_command(LOCKER_KEY, CommandType.UNLOCK, UNLOCK_5)
    body = json.loads(good.to_bytes())
    body["payload"]["compartment"] = 6
    cloud.send(json.dumps(body).encode())
    assert cloud.reply_to(good.request_id).error == "bad_signature"

    # Expired.
    old = sign_command(
        LOCKER_KEY, CommandType.UNLOCK, UNLOCK_5, now=datetime.now(UTC) - timedelta(hours=1)
    )
    cloud.send(old.to_bytes())
    assert cloud.reply_to(old.request_id).error == "expired"

    # Malformed payloads: dropped, audited, no crash.
    for junk in (b"\xff\xfe not json", b"[1,2,3]", b"{}", b'{"request_id": 5}', b"x" * 70000):
        cloud.send(junk)
    wait_until(lambda: len(rejected(cloud)) >= 8, 10, "rejections to be audited")

    assert sim.truth.events("lock_pulse", since=since) == []
    assert sim.compartment(2, 1).door_open is False

    # A good command works, once; its replay is refused and opens nothing more.
    cmd = cloud.command(CommandType.UNLOCK, UNLOCK_5)
    reply = cloud.reply_to(cmd.request_id)
    assert reply.ok and reply.result == {"compartment": 5, "outcome": "opened"}, reply
    pulses = sim.truth.events("lock_pulse", since=since)
    assert [(p.board, p.channel) for p in pulses] == [(2, 1)]
    sim.close_door(2, 1)
    replies_before = len(cloud.replies())
    cloud.send(cmd.to_bytes())
    wait_until(lambda: len(cloud.replies()) > replies_before, 10, "the replay's reply")
    assert cloud.replies()[-1].error == "replayed"
    assert len(sim.truth.events("lock_pulse", since=since)) == 1
    assert ctl.status()["locker_id"] == "XA-TEST-1"  # still alive


@pytest.mark.slow
def test_a_retained_command_is_refused_even_when_the_broker_clears_the_flag(
    sim, broker, cloud, make_controller
):
    """The controller's path to the broker clears the retain flag of what the broker sends
    (RetainClearingLink), so a retained command arrives looking live. It is still refused: it
    is the first command after the subscription and was issued before it."""
    since = len(sim.truth.events())
    kept = sign_command(
        LOCKER_KEY,
        CommandType.UNLOCK,
        UNLOCK_5,
        now=datetime.now(UTC) - timedelta(seconds=RETAINED_AGE_S + 30),
        ttl=timedelta(minutes=10),
    )
    cloud.send(kept.to_bytes(), retain=True)
    link = RetainClearingLink(broker.port)
    try:
        ctl = make_controller(mqtt_port=link.port)
        ctl.start()
        reply = cloud.reply_to(kept.request_id, timeout=20)
        assert not reply.ok and reply.error == "retained", reply
        assert link.cleared >= 1  # the controller was handed it without the flag
        assert sim.truth.events("lock_pulse", since=since) == []
        cloud.send(b"", retain=True)
        # A live command on the same connection works (only the first after subscribing is
        # judged by its age).
        cmd = cloud.command(CommandType.UNLOCK, UNLOCK_5)
        assert cloud.reply_to(cmd.request_id).ok
        assert len(sim.truth.events("lock_pulse", since=since)) == 1
    finally:
        link.close()


@pytest.mark.slow
def test_staff_login_and_maintenance_open(sim, broker, cloud, make_controller):
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    cmd = cloud.command(
        CommandType.STAFF_CREDENTIALS,
        StaffCredentials(staff=[StaffEntry(staff_no="S001", name="Li", roles=["admin"])]),
    )
    assert cloud.reply_to(cmd.request_id).result == {"staff": 1}
    good = pass_now(LOCKER_KEY, LOCKER_ID, "S001")
    wrong = "0000000000" if good != "0000000000" else "0000000001"
    bad = ctl.post("/api/staff/login", {"staff_no": "S001", "staff_pass": wrong})
    assert bad.status_code == 401 and bad.json()["reason"] == "bad_credentials"
    # The pass of this member at another cabinet is no pass here.
    elsewhere = pass_now(LOCKER_KEY, "XA-0002", "S001")
    refused = ctl.post("/api/staff/login", {"staff_no": "S001", "staff_pass": elsewhere})
    assert refused.status_code == 401
    login = ctl.post("/api/staff/login", {"staff_no": "S001", "staff_pass": good})
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    # The pass is good for the shift: a second log-in with it works too.
    again = ctl.post("/api/staff/login", {"staff_no": "S001", "staff_pass": good})
    assert again.status_code == 200
    opened = ctl.post("/api/staff/maintenance", {"token": token, "compartment": 2})
    assert opened.status_code == 200 and opened.json()["compartment"] == 2
    assert sim.compartment(1, 2).door_open is True
    assert (
        ctl.post("/api/staff/maintenance", {"token": "nope", "compartment": 2}).status_code == 401
    )
    wait_until(lambda: "staff_action" in cloud.event_types(), 10, "staff_action event")
    types = cloud.event_types()
    assert "staff_login" in types and "code_refused" in types

    # The cloud raised the floor (the member's TOTP was reset): older passes stop here.
    cmd = cloud.command(
        CommandType.STAFF_CREDENTIALS,
        StaffCredentials(
            staff=[StaffEntry(staff_no="S001", name="Li", roles=["admin"], pass_floor=1)]
        ),
    )
    assert cloud.reply_to(cmd.request_id).result == {"staff": 1}
    def log_in(typed: str) -> int:
        return ctl.post("/api/staff/login", {"staff_no": "S001", "staff_pass": typed}).status_code

    assert log_in(good) == 401
    newer = pass_now(LOCKER_KEY, LOCKER_ID, "S001", counter=1)
    assert log_in(newer) == 200
    # Deactivated: the next sync leaves the member out, and their pass stops working.
    cmd = cloud.command(CommandType.STAFF_CREDENTIALS, StaffCredentials(staff=[]))
    assert cloud.reply_to(cmd.request_id).result == {"staff": 0}
    assert log_in(newer) == 401


def beats(cloud) -> list[Telemetry]:
    return [Telemetry.from_bytes(p) for p in cloud.on("telemetry")]


def boards_in(beat: Telemetry) -> set[tuple[str, int, bool]]:
    return {(b.bus, b.address, b.reachable) for b in beat.boards}


@pytest.mark.slow
def test_presence_telemetry_and_last_will(sim, broker, cloud, make_controller):
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    wait_until(lambda: beats(cloud), 10, "a telemetry heartbeat")
    beat = beats(cloud)[0]
    assert boards_in(beat) == {("0", 1, True), ("0", 2, True)}
    assert beat.version and beat.uptime_s >= 0
    # Nothing happened yet but start-up: a heartbeat reports the outbox as empty once the
    # broker acknowledged what there was.
    wait_until(lambda: beats(cloud)[-1].outbox_depth == 0, 10, "an empty outbox reported")

    # A dead board is reported as such, the other one still reachable.
    sim.inject(board=2, fault="absent")
    wait_until(
        lambda: boards_in(beats(cloud)[-1]) == {("0", 1, True), ("0", 2, False)},
        20,
        "board 2 reported unreachable",
    )
    sim.clear(board=2)
    wait_until(
        lambda: boards_in(beats(cloud)[-1]) == {("0", 1, True), ("0", 2, True)},
        20,
        "board 2 reported back",
    )

    # ``online`` is retained: a subscriber arriving now is handed it, flagged retained.
    assert cloud.on("presence")[-1] == b"online"
    late = Cloud(broker.port, client_id="test-late-subscriber")
    try:
        wait_until(lambda: late.messages, 10, "the retained presence")
        presence = [(p, r) for t, p, r in late.messages if t.endswith("/presence")]
        assert presence == [(b"online", True)]
    finally:
        late.close()
    ctl.kill()  # no goodbye: the broker publishes the last will after the keepalive lapses
    wait_until(lambda: cloud.on("presence")[-1] == b"offline", 60, "the offline last will")


@pytest.mark.slow
def test_revocation_and_config_commands(sim, broker, cloud, make_controller):
    load_item(sim, 1, 3)
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    code = code_for(LOCKER_KEY, 17)
    synced = cloud.command(
        CommandType.SYNC_RESERVATIONS, ReservationSync(upserts=[pickup(30, 3, 17)])
    )
    assert cloud.reply_to(synced.request_id).result == {"upserted": 1, "revoked": 0}
    revoked = cloud.command(
        CommandType.SYNC_RESERVATIONS, ReservationSync(revocations=[Revocation(handover_id=30)])
    )
    # The licence is inside: the code stops, but the cabinet keeps the door the item's.
    assert cloud.reply_to(revoked.request_id).result == {
        "upserted": 0,
        "revoked": 1,
        "items_kept": [{"handover_id": 30, "compartment": 3}],
    }
    refused = ctl.code(code)
    assert refused.status_code == 400 and refused.json()["reason"] == "used", refused.text
    assert sim.compartment(1, 3).door_open is False
    # A revocation of a handover with nothing inside forgets it, and its code is wrong.
    cloud.command(
        CommandType.SYNC_RESERVATIONS,
        ReservationSync(
            upserts=[pickup(31, 4, 18).model_copy(update={"kind": "dropoff", "state": "reserved"})]
        ),
    )
    gone = cloud.command(
        CommandType.SYNC_RESERVATIONS, ReservationSync(revocations=[Revocation(handover_id=31)])
    )
    assert cloud.reply_to(gone.request_id).result == {"upserted": 0, "revoked": 1}
    refused = ctl.code(code_for(LOCKER_KEY, 18))
    assert refused.status_code == 400 and refused.json()["reason"] == "wrong", refused.text

    # Config: checked, applied at once, kept across a restart.
    bad = cloud.command(CommandType.CONFIG, ConfigPayload(settings={"lockout_threshold": 0}))
    assert cloud.reply_to(bad.request_id).error.startswith("invalid: lockout_threshold")
    unknown = cloud.command(CommandType.CONFIG, ConfigPayload(settings={"open_all": 1}))
    assert cloud.reply_to(unknown.request_id).error.startswith("invalid: unknown setting")
    good = cloud.command(CommandType.CONFIG, ConfigPayload(settings={"lockout_threshold": 2}))
    assert cloud.reply_to(good.request_id).result == {"applied": {"lockout_threshold": 2}}
    ctl.stop()
    ctl.start()
    # One wrong code was typed above: the second now locks the cabinet (threshold 2, not 5).
    second = ctl.code(str((int(code) + 1) % 10**8).zfill(8))
    assert second.status_code == 429 and second.json()["reason"] == "locked_out", second.text


@pytest.mark.slow
def test_a_flood_of_hostile_commands_is_recorded_within_bounds(sim, broker, cloud, make_controller):
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    wait_until(lambda: b"online" in cloud.on("presence"), 10, "presence online")
    forged = [sign_command(b"\x01" * 32, CommandType.UNLOCK, UNLOCK_5) for _ in range(60)]
    for cmd in forged:
        cloud.send(cmd.to_bytes())
    good = cloud.command(CommandType.PING, PingPayload())
    # After all 60, in order; a ping's answer carries the cabinet's view (reconciliation).
    answer = cloud.reply_to(good.request_id).result
    assert answer["pong"] is True and len(answer["cabinet"]["compartments"]) > 0, answer
    wait_until(lambda: ctl.status()["outbox_depth"] == 0, 20, "the outbox to drain")
    assert len(rejected(cloud)) == REJECTIONS_RECORDED  # the rest only counted
    answered = {r.request_id for r in cloud.replies()} & {c.request_id for c in forged}
    assert len(answered) == REJECTIONS_RECORDED
    assert ctl.status()["replies_pending"] == 0


def test_rejection_gate_merges_a_flood_into_one_event():
    now = [100.0]
    gate = RejectionGate(limit=3, window_s=60.0, clock=lambda: now[0])
    admitted = [gate.admit("bad_signature") for _ in range(3)]
    assert admitted == [(True, None)] * 3
    assert gate.admit("bad_signature") == (False, None)
    assert gate.admit("expired") == (False, None)
    now[0] += 59.9
    assert gate.admit("expired") == (False, None)
    now[0] += 0.2  # the window is over: the next rejection is recorded, with the summary
    record, summary = gate.admit("replayed")
    assert record is True
    assert summary == {
        "reason": "flood",
        "suppressed": 3,
        "reasons": {"bad_signature": 1, "expired": 2},
        "window_s": 60.0,
    }
    assert gate.close_window() is None  # one recorded, nothing held back in the new window
