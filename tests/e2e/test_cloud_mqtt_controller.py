"""The cloud with the real edge controller (child process) and the simulator over a pty:
reservations travel by command, codes open doors, deposits come back, a locker that was off
line catches up on return (a new reservation, and a cancelled one taken away), a remote
unlock goes round trip, and staff enrolled later can log in at an on-line cabinet."""

import base64
from pathlib import Path

import pytest
from sqlmodel import Session, select

from cloud_api.models.monitoring import LockerCommand
from tests.e2e.conftest import BACKENDS, LOCKER_ID, enrolled_staff, staff_pass
from tests.support.cabinet import locker_body, simulator
from tests.support.waiting import wait_until
from xinbao.codes import code_for

pytestmark = pytest.mark.slow


@pytest.fixture
def sim():
    with simulator() as s:
        yield s


def commands_answered(cloud) -> bool:
    with Session(cloud.engine) as s:
        sent = s.exec(select(LockerCommand).where(LockerCommand.locker_id == LOCKER_ID)).all()
    return bool(sent) and all(c.status == "ok" for c in sent)


def state(cloud, hid: int) -> str:
    return cloud.client.get(f"/api/v1/handovers/{hid}", headers=cloud.integrator).json()["state"]


def pulses(sim, board: int, channel: int) -> int:
    return len(sim.truth.events("lock_pulse", board=board, channel=channel))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_dropoff_offline_return_and_remote_unlock(cloud, sim, controller, broker):
    # On connect the controller says online: the cloud answers with a full sync + staff.
    wait_until(lambda: cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["online"], 20, "online")
    wait_until(lambda: commands_answered(cloud), 20, "the first full sync answered")

    # A drop-off reserved through the API reaches the locker by command.
    cloud.record("XA-CTL-0001")
    h = cloud.dropoff("XA-CTL-0001")
    assert h["compartment_number"] == 3  # the first M: board 1, channel 3
    wait_until(lambda: commands_answered(cloud), 20, "the reservation sync answered")
    code = code_for(cloud.locker_key(), h["code_counter"], cloud.settings.code_digits)
    r = controller.code(code)
    assert r.status_code == 200 and r.json()["outcome"] == "opened", r.text
    assert pulses(sim, 1, 3) == 1
    sim.put_item(1, 3)
    sim.close_door(1, 3)
    wait_until(lambda: state(cloud, h["id"]) == "deposited", 20, "deposited in the cloud")
    record = cloud.client.get("/api/v1/records/XA-CTL-0001", headers=cloud.integrator).json()
    assert record["status"] == "documents_in_locker"
    kinds = [e["type"] for e in cloud.get(f"/api/v1/lockers/{LOCKER_ID}/events?limit=50").json()]
    for kind in ("code_accepted", "unlock_sent", "door_opened", "door_closed", "deposited"):
        assert kinds.count(kind) == 1, kinds

    # Off line while the next reservation is made: it arrives when the locker comes back.
    controller.stop()
    wait_until(
        lambda: not cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["online"], 20, "offline"
    )
    cloud.record("XA-CTL-0002")
    h2 = cloud.dropoff("XA-CTL-0002", size="S")
    controller.start()
    wait_until(lambda: cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["online"], 20, "back")

    wait_until(lambda: _synced(cloud, h2["id"]), 20, "the full sync after the return")
    code2 = code_for(cloud.locker_key(), h2["code_counter"], cloud.settings.code_digits)
    r = controller.code(code2)
    assert r.status_code == 200 and r.json()["compartment"] == h2["compartment_number"], r.text
    sim.put_item(1, h2["compartment_number"])
    sim.close_door(1, h2["compartment_number"])
    wait_until(lambda: state(cloud, h2["id"]) == "deposited", 20, "second deposit")

    # Remote unlock: signed command, the door opens, the reply gives the outcome.
    r = cloud.post(
        "/api/v1/staff/remote-opens",
        {"locker_id": LOCKER_ID, "compartment_number": 5, "reason": "citizen on the phone"},
    )
    assert r.status_code == 201 and r.json()["status"] == "opened", r.text
    assert pulses(sim, 2, 1) == 1
    # No door opened that should not have: one pulse each, on the three doors used.
    assert len(sim.truth.events("lock_pulse")) == 3


def _synced(cloud, handover_id: int) -> bool:
    """A full sync naming the handover was sent after the return and answered ok."""
    with Session(cloud.engine) as s:
        rows = s.exec(
            select(LockerCommand)
            .where(LockerCommand.type == "sync_reservations")
            .order_by(LockerCommand.id)
        ).all()
    return bool(rows) and rows[-1].status == "ok" and rows[-1].result["upserted"] >= 2


def online(cloud) -> bool:
    return cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["online"]


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_a_revocation_made_while_off_line_reaches_the_controller(cloud, sim, controller):
    """A drop-off cancelled while the cabinet is off line: when it returns, the full sync
    takes the reservation away, so the code is refused and no lock pulses."""
    wait_until(lambda: online(cloud), 20, "online")
    wait_until(lambda: commands_answered(cloud), 20, "the first full sync answered")
    cloud.record("XA-CTL-0003")
    h = cloud.dropoff("XA-CTL-0003")
    wait_until(lambda: commands_answered(cloud), 20, "the reservation at the locker")
    code = code_for(cloud.locker_key(), h["code_counter"], cloud.settings.code_digits)

    controller.stop()
    wait_until(lambda: not online(cloud), 20, "offline")
    r = cloud.client.post(f"/api/v1/handovers/{h['id']}/cancel", headers=cloud.integrator)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    since = sim.truth.last_seq
    controller.start()
    wait_until(lambda: online(cloud), 20, "back")
    wait_until(lambda: _full_sync_after(cloud, h["id"]), 20, "the full sync without it")

    refused = controller.code(code)
    assert refused.status_code == 400 and refused.json()["ok"] is False, refused.text
    assert sim.truth.events("lock_pulse", since) == []
    assert not controller.status()["doors"][str(h["compartment_number"])]

    def kinds() -> list[str]:
        return [e["type"] for e in cloud.get(f"/api/v1/lockers/{LOCKER_ID}/events").json()]

    wait_until(lambda: "code_refused" in kinds(), 20, "the refusal reported")
    assert "code_accepted" not in kinds()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_staff_enrolled_while_the_locker_is_on_line_can_log_in_there(cloud, controller):
    """... with a pass from the dashboard; and the cabinet's data files (what a thief copies)
    hold no TOTP secret, nor anything that logs in at another cabinet or at the dashboard."""
    wait_until(lambda: online(cloud), 20, "online")
    wait_until(lambda: commands_answered(cloud), 20, "the first full sync answered")
    secret = enrolled_staff(cloud.engine, "clerk9")
    typed = staff_pass(cloud, "clerk9", secret)

    def logged_in() -> bool:
        r = controller.post("/api/staff/login", {"staff_no": "clerk9", "staff_pass": typed})
        return r.status_code == 200 and r.json()["ok"]

    wait_until(logged_in, 45, "the new staff member accepted at the cabinet")
    # A pass for another cabinet of the city (XA-E2E-2), typed here: refused.
    r = cloud.post("/api/v1/lockers", json=locker_body("XA-E2E-2"))
    assert r.status_code == 201, r.text
    elsewhere = staff_pass(cloud, "clerk9", secret, "XA-E2E-2")
    r = controller.post("/api/staff/login", {"staff_no": "clerk9", "staff_pass": elsewhere})
    assert r.status_code == 401 and r.json()["reason"] == "bad_credentials"

    data = Path(controller.config).parent / "data"
    stolen = b"".join(f.read_bytes() for f in data.iterdir() if f.is_file())
    assert b"clerk9" in stolen  # the staff list is there ...
    for secret_form in (secret, secret.lower(), base64.b32decode(secret).hex()):
        assert secret_form.encode() not in stolen  # ... the TOTP secret is not
    assert cloud.settings.master_key not in stolen
    other_key = cloud.locker_key("XA-E2E-2")
    assert other_key not in stolen and other_key.hex().encode() not in stolen


def _full_sync_after(cloud, handover_id: int) -> bool:
    """The newest reservation sync is a full one that the locker answered, without it."""
    with Session(cloud.engine) as s:
        rows = s.exec(
            select(LockerCommand)
            .where(LockerCommand.type == "sync_reservations")
            .order_by(LockerCommand.id.desc())
        ).all()
    return bool(rows) and rows[0].status == "ok" and rows[0].result["upserted"] == 0


