"""Commands from the cloud over a real Mosquitto: forged, replayed, expired, retained and
malformed ones open nothing; good ones are answered with their request_id."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyotp

from tests.locker_controller.conftest import LOCKER_KEY, wait_until
from xinbao.contract import (
    CommandType,
    StaffCredentials,
    StaffSecret,
    Telemetry,
    UnlockPayload,
    sign_command,
)

UNLOCK_5 = UnlockPayload(compartment=5, reason="citizen on the phone", staff_no="S001")


def rejected(cloud) -> list[str]:
    return [e.data.get("reason") for e in cloud.events() if e.type.value == "command_rejected"]


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


def test_staff_login_and_maintenance_open(sim, broker, cloud, make_controller):
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    secret = pyotp.random_base32()
    cmd = cloud.command(
        CommandType.STAFF_CREDENTIALS,
        StaffCredentials(staff=[StaffSecret(staff_no="S001", name="Li", totp_secret=secret)]),
    )
    assert cloud.reply_to(cmd.request_id).result == {"staff": 1}
    bad = ctl.post("/api/staff/login", {"staff_no": "S001", "totp": "000000"})
    if pyotp.TOTP(secret).verify("000000", valid_window=1):  # 1 in 300,000: the guess is right
        bad = ctl.post("/api/staff/login", {"staff_no": "S999", "totp": "000000"})
    assert bad.status_code == 401 and bad.json()["reason"] == "bad_credentials"
    otp = pyotp.TOTP(secret).now()
    login = ctl.post("/api/staff/login", {"staff_no": "S001", "totp": otp})
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    # The same one-time code cannot log in twice.
    assert ctl.post("/api/staff/login", {"staff_no": "S001", "totp": otp}).status_code == 401
    opened = ctl.post("/api/staff/maintenance", {"token": token, "compartment": 2})
    assert opened.status_code == 200 and opened.json()["compartment"] == 2
    assert sim.compartment(1, 2).door_open is True
    assert (
        ctl.post("/api/staff/maintenance", {"token": "nope", "compartment": 2}).status_code == 401
    )
    wait_until(lambda: "staff_action" in cloud.event_types(), 10, "staff_action event")
    types = cloud.event_types()
    assert "staff_login" in types and "code_refused" in types


def test_presence_telemetry_and_last_will(sim, broker, cloud, make_controller):
    ctl = make_controller(mqtt_port=broker.port)
    ctl.start()
    wait_until(lambda: cloud.on("telemetry"), 10, "a telemetry heartbeat")
    beat = Telemetry.from_bytes(cloud.on("telemetry")[0])
    assert {(b.bus, b.address, b.reachable) for b in beat.boards} == {
        ("0", 1, True),
        ("0", 2, True),
    }
    assert beat.outbox_depth >= 0
    assert cloud.on("presence")[-1] == b"online"
    ctl.kill()  # no goodbye: the broker publishes the last will after the keepalive lapses
    wait_until(lambda: cloud.on("presence")[-1] == b"offline", 60, "the offline last will")
