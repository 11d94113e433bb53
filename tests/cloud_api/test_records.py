"""Approval records: idempotent creates, updates, the state machine over HTTP."""

import re

from tests.cloud_api.conftest import make_record
from tests.cloud_api.helpers import assert_problem

RECORD = {
    "application_number": "XA-9",
    "applicant_name": "李华",
    "mobile": "+8613800138000",
    "matter_name": "营业执照",
}


def test_create_is_idempotent_on_application_number(world):
    c, h = world.client, world.integrator_headers
    first = c.post("/api/v1/records", json=RECORD, headers=h)
    assert first.status_code == 201 and first.json()["status"] == "submitted"
    again = c.post("/api/v1/records", json=RECORD, headers=h)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    changed = c.post("/api/v1/records", json=RECORD | {"applicant_name": "李四"}, headers=h)
    assert "PUT" in assert_problem(changed, 409)["detail"]


def test_idempotency_key_header(world):
    c = world.client
    h = world.integrator_headers | {"Idempotency-Key": "abc-1"}
    first = c.post("/api/v1/records", json=RECORD, headers=h)
    replay = c.post("/api/v1/records", json=RECORD, headers=h)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert first.json() == replay.json()
    assert_problem(c.post("/api/v1/records", json=RECORD | {"matter_name": "x"}, headers=h), 422)
    assert_problem(
        c.post(
            "/api/v1/records",
            json=RECORD,
            headers=world.integrator_headers | {"Idempotency-Key": "a b"},
        ),
        422,
    )


def test_put_creates_then_updates(world):
    c, h = world.client, world.integrator_headers
    body = {k: v for k, v in RECORD.items() if k != "application_number"}
    r = c.put("/api/v1/records/XA-10", json=body, headers=h)
    assert r.status_code == 201
    r = c.put("/api/v1/records/XA-10", json=body | {"mobile": "+8613900139000"}, headers=h)
    assert r.status_code == 200 and r.json()["mobile"] == "+8613900139000"


def test_state_machine(world):
    c, h = world.client, world.integrator_headers
    make_record(c, h, number="XA-11", status="submitted")

    def move(status):
        return c.post("/api/v1/records/XA-11/transitions", json={"status": status}, headers=h)

    body = assert_problem(move("approved"), 409)
    assert (body["from"], body["to"]) == ("submitted", "approved")
    assert "submitted" in body["detail"] and "approved" in body["detail"]
    assert move("prereview_passed").json()["status"] == "prereview_passed"
    # Only the locker puts documents in the locker.
    assert_problem(move("documents_in_locker"), 409)
    assert move("documents_received").json()["status"] == "documents_received"  # skip drop-off
    assert move("approved").json()["status"] == "approved"
    assert move("collected").json()["status"] == "collected"  # skip pickup
    assert_problem(move("withdrawn"), 409)
    assert_problem(move("no-such-state"), 422)


def test_withdraw_refused_while_a_handover_is_active(world):
    c, h = world.client, world.integrator_headers
    make_record(c, h, number="XA-12")
    c.post(
        "/api/v1/handovers/dropoff",
        headers=h,
        json={"application_number": "XA-12", "locker_id": world.locker_id},
    )
    r = c.post("/api/v1/records/XA-12/transitions", json={"status": "withdrawn"}, headers=h)
    assert "cancel" in assert_problem(r, 409)["detail"]


def test_bad_mobile_and_unknown_record(world):
    c, h = world.client, world.integrator_headers
    r = c.post("/api/v1/records", json=RECORD | {"mobile": "13800138000"}, headers=h)
    assert "+8613800138000" in assert_problem(r, 422)["detail"]
    assert_problem(c.get("/api/v1/records/NOPE-1", headers=h), 404)
    assert_problem(c.post("/api/v1/records", json=RECORD | {"status": "approved"}, headers=h), 422)


def test_the_schema_refuses_every_text_the_server_strips_to_nothing(world):
    # The server strips what Python calls whitespace before its "at least 1 character"; the
    # schema's pattern must refuse the same texts for a reader whose \s knows only ASCII
    # blanks (JavaScript's lacks U+0085: the schema fuzz test sent it alone and was refused).
    schema = world.client.get("/openapi.json").json()["components"]["schemas"]
    pattern = schema["RecordCreate"]["properties"]["matter_name"]["pattern"]
    blanks = [c for c in map(chr, range(0x110000)) if c.isspace()]
    assert [hex(ord(c)) for c in blanks if re.fullmatch(pattern, c + c, re.ASCII)] == []
    assert re.fullmatch(pattern, " 食品经营许可证 ", re.ASCII)
    for blank in ("\x85", "\u3000", "\xa0"):
        r = world.client.post(
            "/api/v1/records",
            headers=world.integrator_headers,
            json={
                "application_number": "XA-2025-0009",
                "applicant_name": "王小明",
                "mobile": "+8613800138000",
                "matter_name": blank,
            },
        )
        assert_problem(r, 422)
