"""Lost codes asked for at the kiosk (issue 13): the cabinet's ``code_reissue_requested``
event through the cloud's real ingest, on SQLite and PostgreSQL.

A match issues a new code (the old one stops opening, the new one opens), queues it by SMS and
audits ``code.reissued``; a mismatch, an unknown record, a record whose code is out at another
locker and a request over a limit issue nothing; the limits write one row and one audit line
per window however many requests come; a hostile cabinet's malformed payloads are refused."""

from datetime import timedelta

import pytest

from cloud_api.models.code_reissue import ReissueOutcome
from tests.cloud_api.conftest import locker_body, make_record, reserve_dropoff
from tests.cloud_api.helpers import code_of
from tests.cloud_api.lost_code_helpers import (
    audit,
    cabinet,
    event_outcome,
    handover,
    reissue_rows,
    sms,
)
from xinbao.codes import derive_locker_key
from xinbao.lost_code import request_digest

RIGHT = "8000"  # the last 4 digits of make_record's +8613800138000


def _check(world, code: str, locker_id: str | None = None, headers=None):
    r = world.client.post(
        f"/api/v1/lockers/{locker_id or world.locker_id}/codes/check",
        json={"code": code},
        headers=headers or world.locker_headers,
    )
    assert r.status_code == 200, r.text
    return r.json()["accepted"]


def _outcomes(engine) -> list[str]:
    return [row.outcome for row in reissue_rows(engine)]


def test_matching_details_issue_a_new_code_and_the_old_one_stops_opening(
    world, app, engine, clock, settings
):
    h = reserve_dropoff(world, "XA-LOST-1")
    old = code_of(settings, world.locker_id, h["code_counter"])
    kiosk = cabinet(app, engine, clock, world.locker_id)

    assert kiosk.ask("XA-LOST-1", RIGHT).value == "applied"

    fresh = handover(engine, h["id"])
    assert fresh.code_counter != h["code_counter"]
    [row] = reissue_rows(engine)
    assert (row.outcome, row.via, row.handover_id) == ("reissued", "kiosk", h["id"])
    [entry] = audit(engine, "code.reissued")
    assert entry.actor == f"locker:{world.locker_id}" and entry.subject == f"handover:{h['id']}"
    assert entry.detail["via"] == "kiosk"
    assert entry.detail["handover_id"] == h["id"]
    assert entry.detail["record_id"] == fresh.record_id
    assert (entry.detail["old_counter"], entry.detail["counter"]) == (
        h["code_counter"],
        fresh.code_counter,
    )
    [revoked] = audit(engine, "code.revoked")
    assert revoked.detail["counter"] == h["code_counter"]
    # The first SMS and the new one (which says the old code is void), for the new counter.
    messages = sms(engine, h["id"])
    assert [(m.template, m.code_counter) for m in messages] == [
        ("dropoff_code", h["code_counter"]),
        ("dropoff_code_new", fresh.code_counter),
    ]
    assert not _check(world, old)
    assert _check(world, code_of(settings, world.locker_id, fresh.code_counter))


def test_a_pickup_waiting_gets_a_new_pickup_code(world, app, engine, clock, settings):
    make_record(world.client, world.integrator_headers, "XA-LOST-P", status="prereview_passed")
    for step in ("documents_received", "approved"):
        r = world.client.post(
            "/api/v1/records/XA-LOST-P/transitions",
            json={"status": step},
            headers=world.integrator_headers,
        )
        assert r.status_code == 200, r.text
    r = world.client.post(
        "/api/v1/staff/loads",
        json={"application_number": "XA-LOST-P", "locker_id": world.locker_id, "size": "M"},
        headers=world.admin_headers,
    )
    assert r.status_code == 201, r.text
    hid = r.json()["id"]
    kiosk = cabinet(app, engine, clock, world.locker_id)
    kiosk.ask("XA-LOST-P", RIGHT)  # loaded, not deposited: no code is out yet
    assert _outcomes(engine) == ["no_live_handover"]
    r = world.client.post(
        f"/api/v1/lockers/{world.locker_id}/handovers/{hid}/deposited",
        headers=world.locker_headers,
    )
    assert r.status_code == 200, r.text
    kiosk.ask("XA-LOST-P", RIGHT)
    assert _outcomes(engine)[-1] == "reissued"
    assert sms(engine, hid)[-1].template == "pickup_code_new"
    assert _check(world, code_of(settings, world.locker_id, handover(engine, hid).code_counter))


@pytest.mark.parametrize(
    "number, digits, outcome",
    [
        ("XA-LOST-1", "0800", "mobile_mismatch"),
        ("XA-NOBODY-9", RIGHT, "unknown_record"),
        ("xa-lost-1", RIGHT, "unknown_record"),  # application numbers are exact
    ],
)
def test_details_that_do_not_match_issue_nothing(
    world, app, engine, clock, settings, number, digits, outcome
):
    h = reserve_dropoff(world, "XA-LOST-1")
    kiosk = cabinet(app, engine, clock, world.locker_id)
    assert kiosk.ask(number, digits).value == "applied"  # the event itself is fine
    assert handover(engine, h["id"]).code_counter == h["code_counter"]
    assert [m.template for m in sms(engine, h["id"])] == ["dropoff_code"]
    assert audit(engine, "code.reissued") == [] and audit(engine, "code.revoked") == []
    [declined] = audit(engine, "code.reissue_declined")
    assert declined.detail["reason"] == outcome and declined.detail["application_no"] == number
    assert _outcomes(engine) == [outcome]
    assert _check(world, code_of(settings, world.locker_id, h["code_counter"]))


def test_an_expired_reservation_or_a_finished_handover_gets_no_new_code(world, app, engine, clock):
    h = reserve_dropoff(world, "XA-LOST-1")
    kiosk = cabinet(app, engine, clock, world.locker_id)
    clock.advance(hours=49)  # past the 48 h reservation, before the scheduler expired it
    kiosk.ask("XA-LOST-1", RIGHT)
    assert _outcomes(engine) == ["no_live_handover"]
    assert handover(engine, h["id"]).code_counter == h["code_counter"]


def test_a_cabinet_reaches_no_record_whose_code_is_out_at_another_locker(
    world, app, engine, clock, settings
):
    """The attack: locker B's account (a stolen or rogue cabinet) asks for a record whose
    drop-off is reserved at locker A, with the right digits, digested with B's key and
    with A's key (B cannot have it, but say it had). Nothing is issued anywhere."""
    h = reserve_dropoff(world, "XA-LOST-1")
    r = world.client.post(
        "/api/v1/lockers", json=locker_body("xa-port-002"), headers=world.admin_headers
    )
    assert r.status_code == 201, r.text
    rogue = cabinet(app, engine, clock, "xa-port-002")
    rogue.ask("XA-LOST-1", RIGHT)
    rogue.ask("XA-LOST-1", RIGHT, key_of=world.locker_id)
    assert handover(engine, h["id"]).code_counter == h["code_counter"]
    assert [m.template for m in sms(engine, h["id"])] == ["dropoff_code"]
    assert audit(engine, "code.reissued") == []
    assert _outcomes(engine) == ["not_at_this_locker", "not_at_this_locker"]
    reasons = {e.detail["reason"] for e in audit(engine, "code.reissue_declined")}
    assert reasons == {"not_at_this_locker"}
    # ... and a digest made with another locker's key is no use at the right one either.
    honest = cabinet(app, engine, clock, world.locker_id)
    honest.ask("XA-LOST-1", RIGHT, key_of="xa-port-002")
    assert _outcomes(engine)[-1] == "mobile_mismatch"
    assert handover(engine, h["id"]).code_counter == h["code_counter"]


def test_three_requests_a_record_a_day(world, app, engine, clock, settings):
    """Wrong digits count: they are guesses at the last 4 digits (3 a day, not 10,000)."""
    h = reserve_dropoff(world, "XA-LOST-1")
    kiosk = cabinet(app, engine, clock, world.locker_id)
    for wrong in ("1111", "2222", "3333"):
        kiosk.ask("XA-LOST-1", wrong)
    kiosk.ask("XA-LOST-1", RIGHT)  # the right digits, over the limit: nothing
    kiosk.ask("XA-LOST-1", RIGHT)
    assert handover(engine, h["id"]).code_counter == h["code_counter"]
    assert _outcomes(engine) == ["mobile_mismatch"] * 3 + ["limited_record"]
    assert reissue_rows(engine)[-1].refused == 2
    [limited] = audit(engine, "code.reissue_limited")
    assert limited.detail["scope"] == "record" and limited.detail["limit"] == 3
    clock.advance(days=1, seconds=1)
    kiosk.ask("XA-LOST-1", RIGHT)
    assert _outcomes(engine)[-1] == "reissued"
    assert handover(engine, h["id"]).code_counter != h["code_counter"]


def test_ten_requests_a_locker_an_hour_and_a_flood_writes_one_line(
    world, app, engine, clock, settings
):
    h = reserve_dropoff(world, "XA-LOST-1")
    kiosk = cabinet(app, engine, clock, world.locker_id)
    for n in range(10):
        kiosk.ask(f"XA-GUESS-{n}", "1234")
    before = len(audit(engine, "code.reissue_declined"))
    for _ in range(25):
        kiosk.ask("XA-LOST-1", RIGHT)  # a real request too, lost in the flood
    assert handover(engine, h["id"]).code_counter == h["code_counter"]
    assert _outcomes(engine) == ["unknown_record"] * 10 + ["limited_locker"]
    assert reissue_rows(engine)[-1].refused == 25
    [limited] = audit(engine, "code.reissue_limited")
    assert limited.detail == {
        "via": "kiosk",
        "scope": "locker",
        "limit": 10,
        "window_s": 3600,
        "locker_id": world.locker_id,
    }
    assert len(audit(engine, "code.reissue_declined")) == before == 10
    clock.advance(hours=1, seconds=1)
    kiosk.ask("XA-LOST-1", RIGHT)
    assert _outcomes(engine)[-1] == "reissued"


def test_limits_count_by_the_clouds_clock_not_the_cabinets(world, app, engine, clock):
    """A hostile cabinet that writes old times on its events stays within the limit."""
    reserve_dropoff(world, "XA-LOST-1")
    kiosk = cabinet(app, engine, clock, world.locker_id)
    for n in range(12):
        kiosk.ask(f"XA-GUESS-{n}", "1234", ts=clock.now - timedelta(days=2))
    assert _outcomes(engine) == ["stale"] * 10 + ["limited_locker"]


def test_a_request_that_reaches_the_cloud_late_issues_nothing(world, app, engine, clock):
    h = reserve_dropoff(world, "XA-LOST-1")
    kiosk = cabinet(app, engine, clock, world.locker_id)
    kiosk.ask("XA-LOST-1", RIGHT, ts=clock.now - timedelta(minutes=16))
    assert _outcomes(engine) == ["stale"]
    assert handover(engine, h["id"]).code_counter == h["code_counter"]
    kiosk.ask("XA-LOST-1", RIGHT, ts=clock.now - timedelta(minutes=14))
    assert _outcomes(engine)[-1] == "reissued"


def _digest(settings, locker_id: str) -> str:
    return request_digest(derive_locker_key(settings.master_key, locker_id), "XA-LOST-1", RIGHT)


@pytest.mark.parametrize(
    "make, compartment, why",
    [
        (lambda d: {"application_no": "XA-LOST-1"}, None, "missing ['mobile_digest']"),
        (lambda d: {"application_no": "XA-LOST-1", "mobile_digest": d, "x": 1}, None, "unknown"),
        (lambda d: {"application_no": "XA-LOST-1", "mobile_digest": d.upper()}, None, "hex"),
        (lambda d: {"application_no": "XA-LOST-1", "mobile_digest": 5}, None, "hex"),
        (lambda d: {"application_no": "XA-LOST-1", "mobile_last4": "8000"}, None, "unknown"),
        (lambda d: {"application_no": ["XA-LOST-1"], "mobile_digest": d}, None, "text"),
        (lambda d: {"application_no": " XA-LOST-1", "mobile_digest": d}, None, "blanks"),
        (lambda d: {"application_no": "X" * 65, "mobile_digest": d}, None, "1-64"),
        (lambda d: {"application_no": "XA-%-1", "mobile_digest": d}, None, "1-64"),
        (lambda d: {"application_no": "XA-LOST-1", "mobile_digest": d}, 3, "no compartment"),
    ],
)
def test_a_malformed_request_is_refused_and_changes_nothing(
    world, app, engine, clock, settings, make, compartment, why
):
    h = reserve_dropoff(world, "XA-LOST-1")
    kiosk = cabinet(app, engine, clock, world.locker_id)
    outcome = kiosk.send(make(_digest(settings, world.locker_id)), compartment=compartment)
    assert outcome.value == "refused"
    stored = event_outcome(engine, kiosk.sent[-1])
    assert stored.startswith("refused: ") and why in stored, stored
    assert reissue_rows(engine) == [] and audit(engine, "code.reissue_declined") == []
    assert handover(engine, h["id"]).code_counter == h["code_counter"]
    # The next good request from the same cabinet still works.
    kiosk.ask("XA-LOST-1", RIGHT)
    assert _outcomes(engine) == [ReissueOutcome.reissued.value]
