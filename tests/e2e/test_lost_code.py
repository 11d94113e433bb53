"""Forgot my code through the real MQTT path (issue 13): the kiosk of the real controller
(child process, simulator over a pty) forwards the request, the cloud's bridge applies it,
the new code reaches the cabinet by reservation sync and the applicant by SMS; the old code
no longer opens, the new one does. Off line the kiosk says it cannot do this now. And the
attack: another locker's account asks about a record whose drop-off waits at this locker."""

import re

import pytest
from sqlmodel import Session, select

from cloud_api.models.code_reissue import CodeReissue
from cloud_api.models.monitoring import LockerCommand
from tests.e2e.conftest import BACKENDS, LOCKER_ID
from tests.support.cabinet import locker_body, simulator
from tests.support.mqtt_clients import FakeLocker
from tests.support.waiting import wait_until
from xinbao.codes import code_for
from xinbao.lost_code import request_data

pytestmark = pytest.mark.slow
MOBILE = "+8613800138000"


@pytest.fixture
def sim():
    with simulator() as s:
        yield s


def online(cloud) -> bool:
    return cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["online"]


def commands_answered(cloud, locker_id: str = LOCKER_ID) -> bool:
    with Session(cloud.engine) as s:
        sent = s.exec(select(LockerCommand).where(LockerCommand.locker_id == locker_id)).all()
    return bool(sent) and all(c.status == "ok" for c in sent)


def commands(cloud) -> int:
    with Session(cloud.engine) as s:
        return len(s.exec(select(LockerCommand)).all())


def outcomes(cloud) -> list[str]:
    with Session(cloud.engine) as s:
        return [r.outcome for r in s.exec(select(CodeReissue).order_by(CodeReissue.id)).all()]


def counter(cloud, handover_id: int) -> int:
    r = cloud.client.get(f"/api/v1/handovers/{handover_id}", headers=cloud.integrator)
    return r.json()["code_counter"]


def new_code_sms(cloud) -> list[str]:
    return [m["body"] for m in cloud.sms_inbox(MOBILE) if "原码已失效" in m["body"]]


def pulses(sim, board: int, channel: int) -> int:
    return len(sim.truth.events("lock_pulse", board=board, channel=channel))


def ready(cloud, number: str) -> dict:
    """A drop-off for ``number`` reserved and known at the cabinet."""
    wait_until(lambda: online(cloud), 20, "online")
    wait_until(lambda: commands_answered(cloud), 20, "the first full sync answered")
    cloud.record(number)
    handover = cloud.dropoff(number)
    wait_until(lambda: commands_answered(cloud), 20, "the reservation at the locker")
    return handover


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_a_code_asked_for_at_the_kiosk_replaces_the_old_one_at_the_cabinet(cloud, sim, controller):
    h = ready(cloud, "XA-LC-0001")
    digits = cloud.settings.code_digits
    old = code_for(cloud.locker_key(), h["code_counter"], digits)

    # Wrong digits first: the kiosk gives the same answer, the cloud issues nothing.
    wrong = controller.post(
        "/api/lost-code", {"application_no": "XA-LC-0001", "mobile_last4": "1234"}
    )
    assert wrong.status_code == 200, wrong.text
    wait_until(lambda: outcomes(cloud) == ["mobile_mismatch"], 20, "the mismatch in the cloud")
    right = controller.post(
        "/api/lost-code", {"application_no": "XA-LC-0001", "mobile_last4": "8000"}
    )
    assert right.status_code == 200 and right.json() == wrong.json(), right.text

    new_counter = wait_until(
        lambda: (c := counter(cloud, h["id"])) != h["code_counter"] and c, 20, "a new code"
    )
    wait_until(lambda: commands_answered(cloud), 20, "the new code synced to the cabinet")
    [body] = wait_until(lambda: new_code_sms(cloud), 20, "the SMS with the new code")
    new = code_for(cloud.locker_key(), new_counter, digits)
    assert re.findall(r"(?<!\d)\d{8}(?!\d)", body) == [new, new]

    refused = controller.code(old)
    assert refused.status_code == 400 and refused.json()["ok"] is False, refused.text
    assert pulses(sim, 1, 3) == 0
    opened = controller.code(new)
    assert opened.status_code == 200 and opened.json()["outcome"] == "opened", opened.text
    assert opened.json()["compartment"] == h["compartment_number"] and pulses(sim, 1, 3) == 1
    assert outcomes(cloud) == ["mobile_mismatch", "reissued"]
    entries = cloud.get("/api/v1/dashboard/audit/latest?limit=100").json()
    [reissued] = [e for e in entries if e["action"] == "code.reissued"]
    assert reissued["actor"] == f"locker:{LOCKER_ID}" and reissued["detail"]["via"] == "kiosk"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_off_line_the_kiosk_says_it_cannot_send_a_code_now(cloud, sim, controller, broker):
    ready(cloud, "XA-LC-0002")
    broker.stop()
    body = {"application_no": "XA-LC-0002", "mobile_last4": "8000"}
    answer = wait_until(
        lambda: (r := controller.post("/api/lost-code", body)).status_code == 503 and r,
        20,
        "the kiosk to notice the link is down",
    )
    said = answer.json()
    assert said["reason"] == "offline"
    assert "无法补发开箱码" in said["message_zh"] and "No network" in said["message_en"]
    broker.start()
    wait_until(
        lambda: controller.post("/api/lost-code", body).status_code == 200, 30, "back on line"
    )
    wait_until(lambda: outcomes(cloud) == ["reissued"], 20, "the request applied")


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_another_lockers_account_gets_no_code_for_a_handover_here(cloud, broker):
    """The attack: the account of locker XA-E2E-2 (a stolen cabinet) publishes lost-code
    requests naming a record whose drop-off waits at XA-E2E-1, with the right mobile
    digits. Nothing is issued, nothing is sent to either locker or to the mobile; its
    malformed requests are refused and kept as such."""
    r = cloud.post("/api/v1/lockers", json=locker_body("XA-E2E-2"))
    assert r.status_code == 201, r.text
    cloud.record("XA-LC-0003")
    h = cloud.dropoff("XA-LC-0003")
    sent_before = commands(cloud)
    inbox_before = len(cloud.sms_inbox(MOBILE))
    rogue = FakeLocker(broker.port, "XA-E2E-2", cloud.locker_key("XA-E2E-2"))
    try:
        asked = [
            rogue.event("code_reissue_requested", **request_data(key, "XA-LC-0003", "8000"))
            for key in (cloud.locker_key("XA-E2E-2"), cloud.locker_key())
        ]
        junk = rogue.event(
            "code_reissue_requested", application_no="XA-LC-0003", mobile_last4="8000"
        )
        for event in [*asked, junk]:
            wait_until(lambda e=event: cloud.stored_event(e.event_id), 20, "the request stored")
    finally:
        rogue.close()
    assert [cloud.stored_event(e.event_id).outcome for e in asked] == ["applied", "applied"]
    assert cloud.stored_event(junk.event_id).outcome.startswith("refused: lost-code request")
    assert outcomes(cloud) == ["not_at_this_locker", "not_at_this_locker"]
    assert counter(cloud, h["id"]) == h["code_counter"]
    assert commands(cloud) == sent_before
    assert len(cloud.sms_inbox(MOBILE)) == inbox_before
