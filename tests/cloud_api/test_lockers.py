"""Locker registration from a board layout, listing with occupancy, out-of-service flags."""

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlmodel import Session

from cloud_api.core.config import Settings
from cloud_api.main import create_app
from cloud_api.models.locker import Compartment, Locker
from cloud_api.services import audit
from tests.cloud_api.conftest import locker_body, make_record
from tests.cloud_api.helpers import assert_problem
from tests.support.waiting import free_port


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


def test_concurrent_registrations_of_one_id(world, engine):
    """Regression: on PostgreSQL the loser's INSERT waited, then failed outside the service's
    try block, and answered 500 beside the winner's 201."""
    n = 6
    barrier = threading.Barrier(n)
    responses: list = [None] * n

    def register(i):
        barrier.wait()
        responses[i] = world.client.post(
            "/api/v1/lockers", json=locker_body("race-1"), headers=world.admin_headers
        )

    threads = [threading.Thread(target=register, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * (n - 1), [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert "already registered" in assert_problem(r, 409)["detail"]
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Locker).where(Locker.id == "race-1")) == 1
        compartments = select(func.count()).select_from(Compartment)
        assert s.scalar(compartments.where(Compartment.locker_id == "race-1")) == 5
        assert audit.verify(s).ok


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-directory/xinbao.db",
        # A port nothing listens on: PostgreSQL is down.
        "postgresql://postgres@127.0.0.1:{port}/xinbao",
    ],
)
def test_database_down_is_a_503_with_retry_after(url, clock, console):
    settings = Settings(demo=True, database_url=url.format(port=free_port()), run_background=False)
    app = create_app(settings, sms_provider=console, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as c:
        for method, path, kw in (
            ("GET", "/api/v1/lockers", {"headers": {"X-API-Key": "xbk_1_secret"}}),
            ("POST", "/api/v1/staff/login", {"json": {"username": "a", "password": "b"}}),
            (
                "POST",
                "/api/v1/lockers/xa-1/codes/check",
                {"json": {"code": "12345678"}, "headers": {"X-Locker-Key": "k"}},
            ),
        ):
            r = c.request(method, path, **kw)
            body = assert_problem(r, 503)
            assert r.headers["Retry-After"] == "5" and body["retry_after"] == 5
            assert "retry" in body["detail"]
