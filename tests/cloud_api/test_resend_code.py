"""Staff resend a record's code from the dashboard (issue 13): a new code by SMS, the old one
revoked, audited as ``code.reissued`` via dashboard with the member as actor; a clear 409 when
no code of the record is out; the daily-work roles at the locker's site only. Both databases."""

from cloud_api.models.staff import Role
from cloud_api.services import bootstrap
from tests.cloud_api.conftest import locker_body, login, make_record, reserve_dropoff
from tests.cloud_api.helpers import assert_problem, code_of
from tests.cloud_api.lost_code_helpers import audit, handover, reissue_rows, sms

PASSWORD = "a long enough password"


def _resend(world, number: str, headers=None):
    return world.client.post(
        f"/api/v1/staff/records/{number}/resend-code", headers=headers or world.admin_headers
    )


def _accepted(world, code: str) -> bool:
    r = world.client.post(
        f"/api/v1/lockers/{world.locker_id}/codes/check",
        json={"code": code},
        headers=world.locker_headers,
    )
    assert r.status_code == 200, r.text
    return r.json()["accepted"]


def test_staff_resend_a_code_and_the_old_one_stops_opening(world, engine, settings, clock):
    h = reserve_dropoff(world, "XA-RS-1")
    clock.advance(minutes=5)  # the applicant calls: the SMS never came
    r = _resend(world, "XA-RS-1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sent_to"] == "+86138****8000"
    assert "+86138****8000" in body["message_zh"] and "old code" in body["message_en"]
    [public] = body["handovers"]
    assert public["id"] == h["id"] and public["code_counter"] != h["code_counter"]
    assert handover(engine, h["id"]).code_counter == public["code_counter"]

    [entry] = audit(engine, "code.reissued")
    assert entry.actor == "staff:admin" and entry.subject == f"handover:{h['id']}"
    assert entry.detail["via"] == "dashboard" and entry.detail["handover_id"] == h["id"]
    assert entry.detail["record_id"] == handover(engine, h["id"]).record_id
    [row] = reissue_rows(engine)
    assert (row.via, row.outcome, row.actor) == ("dashboard", "reissued", "staff:admin")
    assert [m.template for m in sms(engine, h["id"])] == ["dropoff_code", "dropoff_code_new"]
    assert not _accepted(world, code_of(settings, world.locker_id, h["code_counter"]))
    assert _accepted(world, code_of(settings, world.locker_id, public["code_counter"]))


def test_a_second_click_within_the_minute_is_refused_then_allowed(world, engine, clock):
    h = reserve_dropoff(world, "XA-RS-1")
    clock.advance(minutes=5)  # the reservation's own SMS went out five minutes ago
    assert _resend(world, "XA-RS-1").status_code == 200
    again = _resend(world, "XA-RS-1")
    body = assert_problem(again, 429)
    assert body["reason"] == "just_sent" and "秒后再试" in body["message_zh"]
    assert int(again.headers["Retry-After"]) == 60
    assert len(audit(engine, "code.reissued")) == 1
    clock.advance(seconds=61)
    assert _resend(world, "XA-RS-1").status_code == 200
    assert len(sms(engine, h["id"])) == 3


def test_a_record_with_no_code_out_is_refused_clearly_and_nothing_changes(world, engine):
    make_record(world.client, world.integrator_headers, "XA-RS-2")  # no drop-off reserved
    body = assert_problem(_resend(world, "XA-RS-2"), 409)
    assert body["reason"] == "no_live_handover"
    assert "没有可用的开箱码" in body["message_zh"] and "no code in use" in body["message_en"]
    h = reserve_dropoff(world, "XA-RS-3")
    r = world.client.post(f"/api/v1/handovers/{h['id']}/cancel", headers=world.integrator_headers)
    assert r.status_code == 200, r.text
    assert assert_problem(_resend(world, "XA-RS-3"), 409)["reason"] == "no_live_handover"
    assert audit(engine, "code.reissued") == [] and reissue_rows(engine) == []
    assert_problem(_resend(world, "XA-NONE-1"), 404)
    assert_problem(_resend(world, "bad%20number"), 422)


def test_only_staff_who_do_the_daily_work_at_that_site_may_resend(world, engine, clock):
    h = reserve_dropoff(world, "XA-RS-1")
    clock.advance(minutes=5)
    bootstrap.create_staff(engine, "tech", PASSWORD, Role.technician)
    tech = login(world.client, "tech", PASSWORD)
    assert_problem(_resend(world, "XA-RS-1", tech), 403)
    r = world.client.post(
        "/api/v1/staff",
        json={"username": "far", "password": PASSWORD, "role": "staff", "site": "高新区政务中心"},
        headers=world.admin_headers,
    )
    assert r.status_code == 201, r.text
    assert_problem(_resend(world, "XA-RS-1", login(world.client, "far", PASSWORD)), 403)
    assert_problem(_resend(world, "XA-RS-1", world.integrator_headers), 403)
    assert_problem(world.client.post("/api/v1/staff/records/XA-RS-1/resend-code"), 401)
    assert handover(engine, h["id"]).code_counter == h["code_counter"]
    assert audit(engine, "code.reissued") == []
    # A member of the locker's own site may.
    r = world.client.post(
        "/api/v1/staff",
        json={
            "username": "near",
            "password": PASSWORD,
            "role": "staff",
            "site": "国际港务区政务中心",
        },
        headers=world.admin_headers,
    )
    assert r.status_code == 201, r.text
    ok = _resend(world, "XA-RS-1", login(world.client, "near", PASSWORD))
    assert ok.status_code == 200, ok.text
    assert audit(engine, "code.reissued")[0].actor == "staff:near"


def test_the_kiosk_limit_does_not_stop_staff(world, app, engine, clock):
    """An applicant who used up the kiosk's three tries (or someone who used them up for
    them) can still be helped on the phone."""
    from tests.cloud_api.lost_code_helpers import cabinet

    reserve_dropoff(world, "XA-RS-1")
    kiosk = cabinet(app, engine, clock, world.locker_id)
    for wrong in ("1111", "2222", "3333", "4444"):
        kiosk.ask("XA-RS-1", wrong)
    assert reissue_rows(engine)[-1].outcome == "limited_record"
    clock.advance(minutes=2)
    assert _resend(world, "XA-RS-1").status_code == 200


def test_a_locker_elsewhere_gets_nothing_from_a_resend(world, engine, clock):
    """The sync after a resend names the handover at its own locker only (locker_body's
    second locker, same site, never hears of it)."""
    r = world.client.post(
        "/api/v1/lockers", json=locker_body("xa-port-002"), headers=world.admin_headers
    )
    assert r.status_code == 201, r.text
    h = reserve_dropoff(world, "XA-RS-1")
    clock.advance(minutes=5)
    r = _resend(world, "XA-RS-1")
    assert r.status_code == 200 and r.json()["handovers"][0]["locker_id"] == world.locker_id
    assert handover(engine, h["id"]).locker_id == world.locker_id
