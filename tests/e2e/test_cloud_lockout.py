"""The cloud's side of the cabinet lockout (issue 11), over a real Mosquitto: the reservation
sync carries a keyed digest of the mobile's last digits (never the digits), a second-level
lockout raises a dashboard alarm, a lockout window is one audit line however many guesses
it refused, and staff lift a lockout with an audited, signed command."""

import pytest
from sqlmodel import Session, select

from cloud_api.models.audit import AuditEntry
from tests.e2e.conftest import LOCKER_ID
from tests.support.cabinet import ControllerProcess, simulator
from tests.support.waiting import wait_until
from xinbao.contract import CommandReply, CommandType
from xinbao.lockout import mobile_digest

pytestmark = pytest.mark.slow


@pytest.fixture
def sim():
    with simulator() as s:
        yield s


def audit_lines(cloud, action: str) -> list[AuditEntry]:
    with Session(cloud.engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == action)))


def open_alarms(cloud, kind: str) -> list[dict]:
    found = cloud.get("/api/v1/alarms", params={"open": "true", "locker_id": LOCKER_ID}).json()
    return [a for a in found if a["kind"] == kind]


def test_the_sync_carries_a_keyed_digest_of_the_mobile_digits(cloud, fake_locker):
    cloud.record("XA-LOCK-1")  # mobile +8613800138000
    h = cloud.dropoff("XA-LOCK-1")
    [sync] = wait_until(lambda: fake_locker.received("sync_reservations"), 10, "the sync")
    [upsert] = sync.parsed_payload().upserts
    assert upsert.mobile_digest == mobile_digest(cloud.locker_key(), h["id"], "8000")
    raw = sync.to_bytes()
    assert b"8000" not in raw.replace(upsert.mobile_digest.encode(), b"")
    assert b"138" not in raw.replace(upsert.mobile_digest.encode(), b"")


def test_a_second_level_lockout_raises_an_alarm_and_a_window_is_one_audit_line(
    cloud, fake_locker
):
    fake_locker.event("lockout", None, seconds=30.0, level=1)
    first = fake_locker.event("code_refused", None, reason="wrong", failures=1)
    wait_until(lambda: cloud.stored_event(first.event_id), 10, "the first events")
    assert open_alarms(cloud, "lockout") == []
    second = fake_locker.event("lockout", None, seconds=60.0, level=2, alarm=True)
    wait_until(lambda: cloud.stored_event(second.event_id), 10, "the second lockout")
    [alarm] = open_alarms(cloud, "lockout")
    assert alarm["data"]["level"] == 2 and "keypad" in alarm["data"]["message"]
    # A flood of 100,000 refused guesses arrives as one event and one audit line.
    ended = fake_locker.event(
        "lockout_ended",
        None,
        level=2,
        started=1.0,
        ended=61.0,
        refused=100_000,
        second_factor_failed=3,
    )
    wait_until(lambda: cloud.stored_event(ended.event_id), 10, "the window's summary")
    [line] = audit_lines(cloud, "locker.lockout_ended")
    assert line.detail["refused"] == 100_000 and line.actor == f"locker:{LOCKER_ID}"


def test_staff_lift_a_lockout_audited_and_signed(cloud, fake_locker):
    def answer(command) -> CommandReply:
        assert command.type is CommandType.LIFT_LOCKOUT
        return CommandReply(request_id=command.request_id, ok=True, result={"lifted": ["keypad"]})

    alarm_event = fake_locker.event("lockout", None, seconds=60.0, level=2, alarm=True)
    wait_until(lambda: cloud.stored_event(alarm_event.event_id), 10, "the lockout")
    assert len(open_alarms(cloud, "lockout")) == 1
    fake_locker.responder = answer
    r = cloud.post(f"/api/v1/lockers/{LOCKER_ID}/lockout/lift", {"reason": "checked the CCTV"})
    assert r.status_code == 201, r.text
    done = r.json()
    assert (done["type"], done["status"]) == ("lift_lockout", "ok")
    assert done["result"] == {"lifted": ["keypad"]}
    [sent] = fake_locker.received("lift_lockout")
    assert sent.parsed_payload().by == "staff:admin"
    [line] = audit_lines(cloud, "locker.lockout_lift")
    assert line.actor == "staff:admin" and line.detail["reason"] == "checked the CCTV"
    assert open_alarms(cloud, "lockout") == []
    # Not without a log-in, not for a locker that does not exist, not with a bad body.
    url = f"/api/v1/lockers/{LOCKER_ID}/lockout/lift"
    assert cloud.client.post(url, json={}).status_code == 401
    assert cloud.post("/api/v1/lockers/XA-NONE/lockout/lift", {}).status_code == 404
    bad = cloud.post(url, {"reason": "x" * 501})
    assert bad.status_code == 422
    assert len(fake_locker.received("lift_lockout")) == 1


def test_a_real_cabinet_locked_twice_raises_the_alarm_and_staff_lift_it(
    tmp_path, cloud, sim, broker
):
    """The whole way: guesses at a controller's kiosk, the second-level lockout reaches the
    dashboard as an alarm, staff lift it from the API and the controller takes codes again."""
    ctl = ControllerProcess.for_cabinet(
        tmp_path / "controller",
        locker_id=LOCKER_ID,
        locker_key=cloud.locker_key(),
        serial_port=sim.start_pty(),
        mqtt_port=broker.port,
        lockout_base_s=5.0,
    )
    ctl.start()
    try:
        wait_until(lambda: cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["online"], 20, "on")
        assert [ctl.code(f"{10_000_000 + i}").status_code for i in range(5)][-1] == 429
        wait_until(lambda: ctl.status()["locked_for_s"] == 0, 15, "the first lockout to end")
        assert [ctl.code(f"{10_000_000 + i}").status_code for i in range(5)][-1] == 429
        [alarm] = wait_until(lambda: open_alarms(cloud, "lockout"), 10, "the lockout alarm")
        assert alarm["data"]["level"] == 2
        lifted = cloud.post(f"/api/v1/lockers/{LOCKER_ID}/lockout/lift", {"reason": "seen"})
        assert lifted.status_code == 201 and lifted.json()["status"] == "ok", lifted.text
        assert lifted.json()["result"] == {"lifted": ["keypad"]}
        assert ctl.status()["locked_for_s"] == 0 and ctl.status()["lockout_level"] == 0
        assert open_alarms(cloud, "lockout") == []
        wait_until(lambda: audit_lines(cloud, "locker.lockout_ended"), 10, "the windows")
        lines = audit_lines(cloud, "locker.lockout_ended")
        assert [line.detail.get("lifted_by") for line in lines][-1] == "staff:admin"
    finally:
        ctl.stop()
