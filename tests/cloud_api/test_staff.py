"""Staff log-in, TOTP second factor, roles, API keys and remote door opening."""

import pyotp

from tests.cloud_api.conftest import ADMIN_PASSWORD, login
from tests.cloud_api.helpers import assert_problem


def test_wrong_password_and_unknown_user_look_the_same(world):
    a = world.client.post("/api/v1/staff/login", json={"username": "admin", "password": "nope"})
    b = world.client.post("/api/v1/staff/login", json={"username": "ghost", "password": "nope"})
    assert assert_problem(a, 401)["detail"] == assert_problem(b, 401)["detail"]


def test_totp_enrolment_then_login_needs_the_code(world, clock):
    c = world.client
    r = c.post("/api/v1/staff/me/totp", headers=world.admin_headers)
    assert r.status_code == 200
    uri, svg = r.json()["provisioning_uri"], r.json()["qr_svg"]
    assert uri.startswith("otpauth://totp/") and "<svg" in svg
    secret = pyotp.parse_uri(uri).secret
    totp = pyotp.TOTP(secret)
    # Until confirmed, the password alone still works.
    login(c, "admin", ADMIN_PASSWORD)
    assert_problem(
        c.post(
            "/api/v1/staff/me/totp/confirm", json={"code": "000000"}, headers=world.admin_headers
        ),
        422,
    )
    r = c.post(
        "/api/v1/staff/me/totp/confirm",
        json={"code": totp.at(clock.now)},
        headers=world.admin_headers,
    )
    assert r.json()["totp_enabled"] is True
    assert_problem(
        c.post("/api/v1/staff/login", json={"username": "admin", "password": ADMIN_PASSWORD}), 401
    )
    # The confirming code is spent: the log-in takes the next one.
    clock.advance(seconds=30)
    headers = login(c, "admin", ADMIN_PASSWORD, totp.at(clock.now))
    assert c.get("/api/v1/staff/me", headers=headers).json()["username"] == "admin"
    assert_problem(c.post("/api/v1/staff/me/totp", headers=headers), 409)


def test_roles_and_api_key_scopes(world):
    c = world.client
    r = c.post(
        "/api/v1/staff",
        headers=world.admin_headers,
        json={"username": "li.wei", "password": "a long password", "role": "staff"},
    )
    assert r.status_code == 201
    staff = login(c, "li.wei", "a long password")
    assert_problem(
        c.post(
            "/api/v1/staff", headers=staff, json={"username": "x1x", "password": "a long password"}
        ),
        403,
    )
    assert_problem(c.get("/api/v1/audit/verify", headers=staff), 403)
    assert c.get("/api/v1/lockers", headers=staff).status_code == 200
    # Duplicate user name.
    assert_problem(
        c.post(
            "/api/v1/staff",
            headers=world.admin_headers,
            json={"username": "li.wei", "password": "a long password"},
        ),
        409,
    )

    r = c.post(
        "/api/v1/api-keys",
        headers=world.admin_headers,
        json={"name": "reader", "scopes": ["lockers:read"]},
    )
    assert r.status_code == 201
    reader = {"X-API-Key": r.json()["key"]}
    assert c.get("/api/v1/lockers", headers=reader).status_code == 200
    body = assert_problem(
        c.post(
            "/api/v1/records",
            headers=reader,
            json={
                "application_number": "A1",
                "applicant_name": "x",
                "mobile": "+8613800138000",
                "matter_name": "m",
            },
        ),
        403,
    )
    assert "records:write" in body["detail"]
    assert_problem(c.get("/api/v1/lockers", headers={"X-API-Key": r.json()["key"] + "x"}), 401)
    assert_problem(c.get("/api/v1/lockers", headers={"X-API-Key": "xbk_99_nope"}), 401)
    assert_problem(c.get("/api/v1/lockers"), 401)


def test_remote_open_is_recorded_and_audited(world):
    c = world.client
    r = c.post(
        "/api/v1/staff/remote-opens",
        headers=world.admin_headers,
        json={
            "locker_id": world.locker_id,
            "compartment_number": 2,
            "reason": "申请人来电：门未弹开 applicant called, door stuck",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending"
    listed = c.get("/api/v1/staff/remote-opens", headers=world.admin_headers).json()
    assert [x["id"] for x in listed] == [r.json()["id"]]
    entries = c.get("/api/v1/audit?limit=500", headers=world.admin_headers).json()
    opened = [e for e in entries if e["action"] == "door.remote_open_requested"]
    assert opened and opened[0]["detail"]["compartment"] == 2
    assert opened[0]["actor"] == "staff:admin"
    assert_problem(
        c.post(
            "/api/v1/staff/remote-opens",
            headers=world.admin_headers,
            json={"locker_id": world.locker_id, "compartment_number": 99, "reason": "x"},
        ),
        404,
    )
    assert_problem(
        c.post(
            "/api/v1/staff/remote-opens",
            headers=world.admin_headers,
            json={"locker_id": world.locker_id, "compartment_number": 1, "reason": ""},
        ),
        422,
    )
    assert_problem(
        c.post(
            "/api/v1/staff/remote-opens",
            headers=world.integrator_headers,
            json={"locker_id": world.locker_id, "compartment_number": 1, "reason": "x"},
        ),
        403,
    )


def test_first_admin_from_settings(db_url, clock, console):
    from fastapi.testclient import TestClient

    from cloud_api.core.config import Settings
    from cloud_api.main import create_app

    settings = Settings(
        demo=True,
        database_url=db_url,
        run_background=False,
        first_admin_username="root",
        first_admin_password="first password 1",
    )
    with TestClient(create_app(settings, sms_provider=console, clock=clock)) as c:
        headers = login(c, "root", "first password 1")
        assert c.get("/api/v1/staff/me", headers=headers).json()["role"] == "admin"
    # A second start does not create or change anything.
    with TestClient(create_app(settings, sms_provider=console, clock=clock)) as c:
        login(c, "root", "first password 1")


def test_background_dispatcher_sends_queued_sms(db_url, clock, console):
    """The lifespan runs the dispatcher (and scheduler) and stops them on shutdown."""
    import time

    from fastapi.testclient import TestClient
    from sqlmodel import Session

    from cloud_api.core.config import Settings
    from cloud_api.main import create_app
    from cloud_api.sms.outbox import enqueue_sms

    settings = Settings(
        demo=True,
        database_url=db_url,
        run_background=True,
        scheduler_interval_seconds=0.05,
        sms_interval_seconds=0.05,
    )
    app = create_app(settings, sms_provider=console, clock=clock)
    with TestClient(app):
        with Session(app.state.engine) as session:
            enqueue_sms(
                session,
                dedupe_key="test:receipt",
                to_number="+8613800138000",
                template="receipt",
                params={"rating_url": "https://r.example/x"},
            )
            session.commit()
        deadline = time.monotonic() + 10
        while not console.inbox() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "https://r.example/x" in console.inbox()[0].body
