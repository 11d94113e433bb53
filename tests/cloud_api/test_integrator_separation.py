"""Integrators are kept apart, and a record's new mobile number gets the code, not the old one.

The attacks, each by a second approval-system key B against the records and handovers of
key A: read them, cancel A's reservation, move A's record, redirect A's applicant's codes to
B's phone by changing the mobile number, reserve a compartment on A's record, and learn A's
record's details by repeating its create. Each answer must be the one for a record or
handover that does not exist (404, not 403: no confirmation that it exists), and change
nothing.
"""

import re

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from cloud_api.core.db import alembic_config, make_engine, migrate
from cloud_api.models.audit import AuditEntry
from cloud_api.models.staff import Scope
from cloud_api.services import bootstrap
from tests.cloud_api.conftest import make_record
from tests.cloud_api.helpers import assert_problem, code_of

MOBILE = "+8613800138000"
NEW_MOBILE = "+8613900139000"
NUMBER = "XA-2025-0001"
WRITE = [Scope.records_write, Scope.handovers_write]


def _key(engine, name, scopes) -> dict:
    _, key = bootstrap.create_api_key(engine, name, scopes)
    return {"X-API-Key": key}


def _dropoff(world, headers, number=NUMBER):
    return world.client.post(
        "/api/v1/handovers/dropoff",
        json={"application_number": number, "locker_id": world.locker_id},
        headers=headers,
    )


@pytest.fixture
def a_dropoff(world):
    """Key A (the world's integrator) has a record and a reserved drop-off."""
    make_record(world.client, world.integrator_headers, number=NUMBER)
    r = _dropoff(world, world.integrator_headers)
    assert r.status_code == 201, r.text
    return r.json()


def _same_as_missing(answer, missing) -> None:
    """Another key's object is answered as a missing one: same status, title and wording."""
    body, absent = assert_problem(answer, 404), assert_problem(missing, 404)
    assert body["title"] == absent["title"]
    assert re.sub(r"'[^']*'|\d+", "X", body["detail"]) == re.sub(
        r"'[^']*'|\d+", "X", absent["detail"]
    )


def test_another_key_cannot_see_or_touch_a_record_or_handover(world, engine, a_dropoff):
    c = world.client
    b = _key(engine, "another approval system", WRITE)
    h = a_dropoff["id"]

    _same_as_missing(
        c.get(f"/api/v1/records/{NUMBER}", headers=b),
        c.get("/api/v1/records/XA-NO-SUCH", headers=b),
    )
    _same_as_missing(
        c.get(f"/api/v1/handovers/{h}", headers=b), c.get("/api/v1/handovers/999999", headers=b)
    )
    _same_as_missing(
        c.post(f"/api/v1/handovers/{h}/cancel", headers=b),
        c.post("/api/v1/handovers/999999/cancel", headers=b),
    )
    _same_as_missing(
        c.post(f"/api/v1/records/{NUMBER}/transitions", json={"status": "withdrawn"}, headers=b),
        c.post("/api/v1/records/XA-NO-SUCH/transitions", json={"status": "withdrawn"}, headers=b),
    )
    # Redirecting the applicant's codes to a phone of B's.
    stolen = {"applicant_name": "王小明", "mobile": NEW_MOBILE, "matter_name": "食品经营许可证"}
    assert_problem(c.put(f"/api/v1/records/{NUMBER}", json=stolen, headers=b), 404)
    # A second reservation on A's record, booked by B.
    answer = _dropoff(world, b)
    assert_problem(answer, 404)
    # Repeating A's create with A's details does not hand B the record.
    repeat = c.post(
        "/api/v1/records",
        json={
            "application_number": NUMBER,
            "applicant_name": "王小明",
            "mobile": MOBILE,
            "matter_name": "食品经营许可证",
            "status": "prereview_passed",
        },
        headers=b,
    )
    assert_problem(repeat, 409)
    assert MOBILE not in repeat.text and "王小明" not in repeat.text

    # Nothing changed for A.
    record = c.get(f"/api/v1/records/{NUMBER}", headers=world.integrator_headers).json()
    assert record["mobile"] == MOBILE and record["status"] == "prereview_passed"
    handover = c.get(f"/api/v1/handovers/{h}", headers=world.integrator_headers).json()
    assert handover["state"] == "reserved"
    assert handover["code_counter"] == a_dropoff["code_counter"]
    # A still reads and cancels its own.
    r = c.post(f"/api/v1/handovers/{h}/cancel", headers=world.integrator_headers)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"


def test_read_all_scope_reads_every_record_but_changes_none(world, engine, a_dropoff):
    c = world.client
    auditor = _key(engine, "supervising system", [*WRITE, Scope.records_read_all])
    h = a_dropoff["id"]
    r = c.get(f"/api/v1/records/{NUMBER}", headers=auditor)
    assert r.status_code == 200 and r.json()["mobile"] == MOBILE
    r = c.get(f"/api/v1/handovers/{h}", headers=auditor)
    assert r.status_code == 200 and r.json()["state"] == "reserved"
    assert_problem(c.post(f"/api/v1/handovers/{h}/cancel", headers=auditor), 404)
    assert_problem(
        c.post(
            f"/api/v1/records/{NUMBER}/transitions", json={"status": "withdrawn"}, headers=auditor
        ),
        404,
    )
    # Staff see everything, as before.
    assert c.get(f"/api/v1/handovers/{h}", headers=world.admin_headers).status_code == 200


def test_a_key_sees_the_pickup_staff_loaded_for_its_record(world):
    """A pickup is created by staff, for the integrator's record: the integrator sees it."""
    c = world.client
    make_record(c, world.integrator_headers, number=NUMBER, status="prereview_passed")
    r = _dropoff(world, world.integrator_headers)
    h = r.json()["id"]
    deposited = f"/api/v1/lockers/{world.locker_id}/handovers/{h}/deposited"
    c.post(deposited, headers=world.locker_headers)
    c.post(f"/api/v1/staff/handovers/{h}/collect", headers=world.admin_headers)
    r = c.post(
        f"/api/v1/records/{NUMBER}/transitions",
        json={"status": "approved"},
        headers=world.integrator_headers,
    )
    assert r.status_code == 200, r.text
    r = c.post(
        "/api/v1/staff/loads",
        json={"application_number": NUMBER, "locker_id": world.locker_id},
        headers=world.admin_headers,
    )
    assert r.status_code == 201, r.text
    pickup = r.json()["id"]
    assert c.get(f"/api/v1/handovers/{pickup}", headers=world.integrator_headers).status_code == 200


def _inbox(console, to):
    return [m.body for m in console.inbox(to)]


def _codes_in(bodies):
    return {m for b in bodies for m in re.findall(r"(?<!\d)\d{8}(?!\d)", b)}


def test_new_mobile_revokes_the_code_and_sends_a_new_one(
    world, app, settings, engine, console, a_dropoff
):
    """The attack: the code went to a number that is no longer the applicant's (a lost
    phone, a typo). After the record's mobile changes, the old code must not open the
    compartment, and the new one must go to the new number only."""
    c = world.client
    app.state.dispatcher.run_once()
    old_code = code_of(settings, world.locker_id, a_dropoff["code_counter"])
    assert old_code in _codes_in(_inbox(console, MOBILE))

    body = {"applicant_name": "王小明", "mobile": NEW_MOBILE, "matter_name": "食品经营许可证"}
    r = c.put(f"/api/v1/records/{NUMBER}", json=body, headers=world.integrator_headers)
    assert r.status_code == 200, r.text
    assert r.json()["mobile"] == NEW_MOBILE
    app.state.dispatcher.run_once()

    handover = c.get(f"/api/v1/handovers/{a_dropoff['id']}", headers=world.admin_headers).json()
    assert handover["code_counter"] != a_dropoff["code_counter"]
    new_code = code_of(settings, world.locker_id, handover["code_counter"])
    assert _codes_in(_inbox(console, NEW_MOBILE)) == {new_code}
    assert new_code not in _codes_in(_inbox(console, MOBILE))

    check = f"/api/v1/lockers/{world.locker_id}/codes/check"
    refused = c.post(check, json={"code": old_code}, headers=world.locker_headers)
    assert refused.json()["accepted"] is False
    opened = c.post(check, json={"code": new_code}, headers=world.locker_headers)
    assert opened.json()["accepted"] is True

    with Session(engine) as s:
        entries = s.exec(
            select(AuditEntry).where(AuditEntry.subject == f"handover:{a_dropoff['id']}")
        ).all()
    revoked = [e for e in entries if e.action == "code.revoked"]
    assert [(e.detail["counter"], e.detail["reason"]) for e in revoked] == [
        (a_dropoff["code_counter"], "mobile changed")
    ]
    assert revoked[0].actor.startswith("api_key:")


def test_other_changes_leave_the_code_alone(world, app, console, a_dropoff):
    body = {"applicant_name": "王小明", "mobile": MOBILE, "matter_name": "另一个事项"}
    r = world.client.put(f"/api/v1/records/{NUMBER}", json=body, headers=world.integrator_headers)
    assert r.status_code == 200, r.text
    handover = world.client.get(
        f"/api/v1/handovers/{a_dropoff['id']}", headers=world.integrator_headers
    ).json()
    assert handover["code_counter"] == a_dropoff["code_counter"]


def test_migration_gives_existing_records_their_creator(db_url):
    """Records made before the owner column get it from the audit trail's record.created."""
    from alembic import command

    command.downgrade(alembic_config(db_url), "0007")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for i, (number, actor) in enumerate([("XA-OLD-1", "api_key:7"), ("XA-OLD-2", None)]):
                conn.execute(
                    text(
                        "INSERT INTO approval_record (id, application_number, applicant_name,"
                        " mobile, matter_name, status, created_at, updated_at) VALUES"
                        " (:id, :n, 'x', :m, 'y', 'submitted', :t, :t)"
                    ),
                    {"id": i + 1, "n": number, "m": MOBILE, "t": "2026-01-01 00:00:00+00:00"},
                )
                if actor:
                    conn.execute(
                        text(
                            "INSERT INTO audit_entry (seq, at, actor, action, subject, detail,"
                            " prev_hash, hash) VALUES (:s, :t, :a, 'record.created', :subj,"
                            " '{}', :h, :h)"
                        ),
                        {
                            "s": 100 + i,
                            "t": "2026-01-01 00:00:00+00:00",
                            "a": actor,
                            "subj": f"record:{number}",
                            "h": "0" * 64,
                        },
                    )
        migrate(db_url, "head")
        with engine.connect() as conn:
            owners = dict(
                conn.execute(
                    text("SELECT application_number, created_by FROM approval_record")
                ).all()
            )
        assert owners == {"XA-OLD-1": "api_key:7", "XA-OLD-2": None}
    finally:
        engine.dispose()
