"""Locker registration from a board layout, listing with occupancy, out-of-service flags."""

from tests.cloud_api.conftest import locker_body, make_record
from tests.cloud_api.helpers import assert_problem


def test_register_list_and_detail(world):
    c = world.client
    listed = c.get("/api/v1/lockers", headers=world.integrator_headers).json()
    assert [lk["id"] for lk in listed] == [world.locker_id]
    occupancy = {o["size"]: (o["total"], o["free"]) for o in listed[0]["occupancy"]}
    assert occupancy == {"L": (1, 1), "M": (2, 2), "S": (2, 2)}
    detail = c.get(f"/api/v1/lockers/{world.locker_id}", headers=world.admin_headers).json()
    assert [(x["number"], x["board"], x["channel"]) for x in detail["compartments"]][:2] == [
        (1, 1, 1),
        (2, 1, 2),
    ]
    assert "locker_key" not in detail and "key_digest" not in detail
    assert_problem(c.get("/api/v1/lockers/nope", headers=world.admin_headers), 404)


def test_register_refuses_duplicates_and_bad_layouts(world):
    c, h = world.client, world.admin_headers
    assert_problem(c.post("/api/v1/lockers", json=locker_body(), headers=h), 409)
    body = locker_body("dup-numbers")
    body["compartments"][1]["number"] = 1
    assert_problem(c.post("/api/v1/lockers", json=body, headers=h), 422)
    body = locker_body("dup-wiring")
    body["compartments"][1]["channel"] = 1
    assert_problem(c.post("/api/v1/lockers", json=body, headers=h), 422)
    assert_problem(c.post("/api/v1/lockers", json=locker_body("bad id!"), headers=h), 422)
    # Integrators without lockers:write cannot register.
    assert_problem(
        c.post("/api/v1/lockers", json=locker_body("x2"), headers=world.integrator_headers), 403
    )


def test_out_of_service_compartment_is_never_reserved(world):
    c = world.client
    r = c.patch(
        f"/api/v1/lockers/{world.locker_id}/compartments/5",
        json={"out_of_service": True},
        headers=world.admin_headers,
    )
    assert r.status_code == 200 and r.json()["out_of_service"] is True
    make_record(c, world.integrator_headers)
    r = c.post(
        "/api/v1/handovers/dropoff",
        headers=world.integrator_headers,
        json={"application_number": "XA-2025-0001", "locker_id": world.locker_id, "size": "L"},
    )
    assert_problem(r, 409)
    assert_problem(
        c.patch(
            f"/api/v1/lockers/{world.locker_id}/compartments/42",
            json={"out_of_service": True},
            headers=world.admin_headers,
        ),
        404,
    )
