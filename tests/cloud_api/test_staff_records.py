"""Approval records for staff (issue 13): search, open, create by hand, approve and reject with
the integrators' rules, roles, and the alarm summary the dashboard polls. SQLite and
PostgreSQL (the ``world`` fixture runs on both). The CSV import: test_record_import.py."""

import pytest
from sqlmodel import Session, func, select

from cloud_api.models.audit import AuditEntry
from cloud_api.models.monitoring import AlarmKind
from cloud_api.models.record import ApprovalRecord
from cloud_api.services import alarms, bootstrap
from tests.cloud_api.conftest import login, make_record, reserve_dropoff
from tests.cloud_api.helpers import assert_problem

PASSWORD = "a long password"
SITE_B = "高新区政务中心"  # the world's locker is at 国际港务区政务中心


def member(world, username: str, role: str, site: str | None = None) -> dict:
    """A staff account made by the admin; headers of its (password) log-in."""
    body = {"username": username, "password": PASSWORD, "role": role}
    if site is not None:
        body["site"] = site
    r = world.client.post("/api/v1/staff", headers=world.admin_headers, json=body)
    assert r.status_code == 201, r.text
    return login(world.client, username, PASSWORD)


def to_status(world, number: str, *steps: str) -> None:
    for status in steps:
        r = world.client.post(
            f"/api/v1/records/{number}/transitions",
            json={"status": status},
            headers=world.integrator_headers,
        )
        assert r.status_code == 200, r.text


def counts(engine) -> tuple[int, int]:
    """(records, audit entries): what a refused request must leave as it was."""
    with Session(engine) as s:
        return (
            s.exec(select(func.count()).select_from(ApprovalRecord)).one(),
            s.exec(select(func.count()).select_from(AuditEntry)).one(),
        )


def search(world, headers=None, **params):
    return world.client.get(
        "/api/v1/staff/records", params=params, headers=headers or world.admin_headers
    )


def test_search_by_number_name_mobile_tail_and_status_in_pages(world):
    c, h = world.client, world.integrator_headers
    make_record(c, h, number="XA-S-1", mobile="+8613800001234")
    make_record(c, h, number="XA-S-2", mobile="+8613900005678")
    make_record(c, h, number="XA-T-3", mobile="+8613700001234", status="submitted")
    r = c.post(
        "/api/v1/records",
        headers=h,
        json={
            "application_number": "XA-T-4",
            "applicant_name": "欧阳娜娜",
            "mobile": "+8613600009999",
            "matter_name": "药品经营许可证",
        },
    )
    assert r.status_code == 201, r.text

    def numbers(**params):
        r = search(world, **params)
        assert r.status_code == 200, r.text
        return sorted(x["application_number"] for x in r.json()["items"]), r.json()["total"]

    assert numbers(q="XA-S") == (["XA-S-1", "XA-S-2"], 2)
    assert numbers(q="欧阳") == (["XA-T-4"], 1)
    assert numbers(mobile="1234") == (["XA-S-1", "XA-T-3"], 2)
    assert numbers(mobile="1234", status="submitted") == (["XA-T-3"], 1)
    assert numbers(q="药品", mobile="9999") == (["XA-T-4"], 1)
    assert numbers(q="%") == ([], 0)  # LIKE wildcards are text, not patterns

    first = search(world, limit=3).json()
    second = search(world, limit=3, offset=3).json()
    assert (first["total"], second["total"], len(first["items"]), len(second["items"])) == (
        4,
        4,
        3,
        1,
    )
    seen = {x["application_number"] for x in first["items"] + second["items"]}
    assert seen == {"XA-S-1", "XA-S-2", "XA-T-3", "XA-T-4"}


@pytest.mark.parametrize(
    "params",
    [{"mobile": "12a4"}, {"mobile": "1" * 12}, {"status": "done"}, {"limit": 0}, {"q": "x\x00"}],
)
def test_bad_search_parameters_are_refused(world, params):
    assert_problem(search(world, **params), 422)


def test_open_a_record_with_its_handovers_audit_and_moves(world):
    handover = reserve_dropoff(world, number="XA-O-1")
    r = world.client.get("/api/v1/staff/records/XA-O-1", headers=world.admin_headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["record"]["status"] == "prereview_passed"
    assert [h["id"] for h in body["handovers"]] == [handover["id"]]
    subjects = {e["subject"] for e in body["audit"]}
    assert subjects == {"record:XA-O-1", f"handover:{handover['id']}"}
    seqs = [e["seq"] for e in body["audit"]]
    assert seqs == sorted(seqs, reverse=True)
    # A drop-off is reserved: the locker owns documents_in_locker; the API may still skip it.
    assert body["moves"] == ["documents_received", "rejected", "withdrawn"]
    assert_problem(
        world.client.get("/api/v1/staff/records/XA-NONE", headers=world.admin_headers), 404
    )


def test_create_by_hand_is_audited_with_the_staff_member(world, engine):
    headers = member(world, "clerk", "staff")
    body = {
        "application_number": "XA-H-1",
        "applicant_name": "陈静",
        "mobile": "+86 138-0013-8000",
        "matter_name": "个体工商户营业执照",
    }
    r = world.client.post("/api/v1/staff/records", json=body, headers=headers)
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["mobile"]) == ("submitted", "+8613800138000")
    again = world.client.post("/api/v1/staff/records", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    before = counts(engine)
    other = world.client.post(
        "/api/v1/staff/records", json=body | {"applicant_name": "陈晶"}, headers=headers
    )
    assert_problem(other, 409)
    bad = world.client.post(
        "/api/v1/staff/records", json=body | {"mobile": "12345"}, headers=headers
    )
    assert_problem(bad, 422)
    assert counts(engine) == before
    with Session(engine) as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.subject == "record:XA-H-1")).one()
        assert (entry.actor, entry.action) == ("staff:clerk", "record.created")
        assert (
            s.exec(
                select(ApprovalRecord.created_by).where(
                    ApprovalRecord.application_number == "XA-H-1"
                )
            ).one()
            == "staff:clerk"
        )


def test_approve_and_reject_follow_the_api_rules_and_are_audited(world, engine):
    headers = member(world, "clerk", "staff")
    c = world.client
    make_record(c, world.integrator_headers, number="XA-M-1")
    to_status(world, "XA-M-1", "documents_received")

    def move(number, status, reason=None):
        body = {"status": status} | ({"reason": reason} if reason else {})
        return c.post(f"/api/v1/staff/records/{number}/transitions", json=body, headers=headers)

    r = move("XA-M-1", "approved")
    assert r.status_code == 200, r.text
    assert r.json()["record"]["status"] == "approved"
    assert r.json()["moves"] == ["collected"]  # licence_in_locker is the locker's to set

    before = counts(engine)
    refused = assert_problem(move("XA-M-1", "rejected"), 409)
    assert (refused["from"], refused["to"]) == ("approved", "rejected")
    # The lockers own the *_in_locker states, for staff as for integrators.
    assert_problem(move("XA-M-1", "licence_in_locker"), 409)
    assert counts(engine) == before

    # No reject while a drop-off is reserved: the applicant holds a code for it.
    reserve_dropoff(world, number="XA-M-2")
    assert "active handover" in assert_problem(move("XA-M-2", "rejected"), 409)["detail"]
    opened = c.get("/api/v1/staff/records/XA-M-2", headers=headers).json()
    assert opened["record"]["status"] == "prereview_passed"

    make_record(c, world.integrator_headers, number="XA-M-3")
    r = move("XA-M-3", "rejected", "材料不全 papers missing")
    assert r.status_code == 200 and r.json()["moves"] == []
    with Session(engine) as s:
        moves = s.exec(
            select(AuditEntry)
            .where(AuditEntry.action == "record.status", AuditEntry.actor == "staff:clerk")
            .order_by(AuditEntry.seq)
        ).all()
    assert [(e.subject, e.detail) for e in moves] == [
        ("record:XA-M-1", {"from": "documents_received", "to": "approved"}),
        (
            "record:XA-M-3",
            {"from": "prereview_passed", "to": "rejected", "reason": "材料不全 papers missing"},
        ),
    ]


def test_a_technician_reads_and_changes_no_record(world, engine):
    """Attack: a technician's account (it maintains cabinets) lists applicants' names and
    mobiles, or approves, creates or imports records. Before issue 13 any staff log-in read
    every record through /api/v1/dashboard/records."""
    make_record(world.client, world.integrator_headers, number="XA-A-1")
    tech = member(world, "tech", "technician")
    before = counts(engine)
    c = world.client
    for response in (
        search(world, headers=tech),
        c.get("/api/v1/dashboard/records", headers=tech),
        c.get("/api/v1/staff/records/XA-A-1", headers=tech),
        c.post(
            "/api/v1/staff/records/XA-A-1/transitions", json={"status": "rejected"}, headers=tech
        ),
        c.post(
            "/api/v1/staff/records",
            headers=tech,
            json={
                "application_number": "XA-A-2",
                "applicant_name": "x",
                "mobile": "+8613800138000",
                "matter_name": "y",
            },
        ),
        c.post(
            "/api/v1/staff/records/import",
            headers=tech | {"Content-Type": "text/csv"},
            content="application_number,applicant,mobile,matter\nXA-A-3,x,13800138000,y\n",
        ),
    ):
        assert_problem(response, 403)
    assert counts(engine) == before


def test_staff_import_nothing_and_api_keys_use_no_staff_route(world, engine):
    """A staff member (not a supervisor) cannot import a batch; an integrator's key, even with
    records:write, cannot use the staff routes to read others' records or import."""
    clerk = member(world, "clerk", "staff")
    make_record(world.client, world.integrator_headers, number="XA-K-1")
    before = counts(engine)
    csv = "application_number,applicant,mobile,matter\nXA-K-2,x,13800138000,y\n"
    r = world.client.post(
        "/api/v1/staff/records/import",
        headers=clerk | {"Content-Type": "text/csv"},
        content=csv,
    )
    assert "supervisor" in assert_problem(r, 403)["detail"]
    key = world.integrator_headers
    assert_problem(search(world, headers=key), 403)
    assert_problem(world.client.get("/api/v1/staff/records/XA-K-1", headers=key), 403)
    assert_problem(
        world.client.post(
            "/api/v1/staff/records/import", headers=key | {"Content-Type": "text/csv"}, content=csv
        ),
        403,
    )
    assert counts(engine) == before
    supervisor = member(world, "boss", "supervisor", SITE_B)
    r = world.client.post(
        "/api/v1/staff/records/import",
        headers=supervisor | {"Content-Type": "text/csv"},
        content=csv,
    )
    assert r.status_code == 200 and r.json()["created"] == 1, r.text


def test_records_are_city_wide_but_their_handovers_stay_with_their_site(world, engine):
    """Records are not site-scoped (docs/security.md): a member of site B finds and approves a
    record whose drop-off is at a site A locker. What the site does guard stays guarded: the
    handover at site A's locker cannot be collected or cancelled by them (403, unchanged)."""
    handover = reserve_dropoff(world, number="XA-C-1")
    b = member(world, "b.staff", "staff", SITE_B)
    found = search(world, headers=b, q="XA-C-1").json()
    assert [x["application_number"] for x in found["items"]] == ["XA-C-1"]
    opened = world.client.get("/api/v1/staff/records/XA-C-1", headers=b).json()
    assert opened["handovers"][0]["locker_id"] == world.locker_id
    for action in ("cancel", "collect"):
        r = world.client.post(f"/api/v1/staff/handovers/{handover['id']}/{action}", headers=b)
        assert "do not cover" in assert_problem(r, 403)["detail"]
    again = world.client.get("/api/v1/staff/records/XA-C-1", headers=b).json()
    assert again["handovers"][0]["state"] == "reserved"


def test_alarm_summary_counts_open_alarms_per_locker(world, engine, clock):
    r = world.client.get("/api/v1/dashboard/alarm-summary", headers=world.admin_headers)
    assert r.json() == {"open": 0, "lockers": {}}
    with Session(engine) as s:
        alarms.raise_alarm(s, world.locker_id, AlarmKind.door_forced, clock.now, compartment=2)
        alarms.raise_alarm(s, world.locker_id, AlarmKind.door_jammed, clock.now, compartment=3)
        s.commit()
    r = world.client.get("/api/v1/dashboard/alarm-summary", headers=world.admin_headers)
    assert r.json() == {"open": 2, "lockers": {world.locker_id: 2}}
    first = world.client.get("/api/v1/alarms?open=true", headers=world.admin_headers).json()[0]
    world.client.post(f"/api/v1/alarms/{first['id']}/ack", headers=world.admin_headers)
    r = world.client.get("/api/v1/dashboard/alarm-summary", headers=world.admin_headers)
    assert r.json() == {"open": 1, "lockers": {world.locker_id: 1}}
    assert_problem(
        world.client.get("/api/v1/dashboard/alarm-summary", headers=world.integrator_headers), 403
    )


def test_the_demo_seeds_records_in_several_states_once(engine):
    assert bootstrap.seed_demo_records(engine) == len(bootstrap.DEMO_RECORDS)
    assert bootstrap.seed_demo_records(engine) == 0
    with Session(engine) as s:
        statuses = s.exec(select(ApprovalRecord.status)).all()
        actors = set(s.exec(select(AuditEntry.actor)).all())
    assert len(statuses) == len(bootstrap.DEMO_RECORDS)
    assert {"submitted", "prereview_passed", "documents_received", "approved"} <= set(statuses)
    assert {"rejected", "collected"} <= set(statuses)
    assert actors == {"demo"}
