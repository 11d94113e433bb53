"""Brute-force lockout, resend with revocation, and uniqueness among a locker's live codes."""

from sqlmodel import Session, select

from cloud_api.models.audit import AuditEntry
from cloud_api.services import codes as code_service
from tests.cloud_api.conftest import make_record
from tests.cloud_api.helpers import assert_problem, code_of


def _dropoff(world, number="XA-2025-0001", size="M"):
    r = world.client.post(
        "/api/v1/handovers/dropoff",
        headers=world.integrator_headers,
        json={"application_number": number, "locker_id": world.locker_id, "size": size},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _check(world, code, mobile_last4=None):
    body = {"code": code} if mobile_last4 is None else {"code": code, "mobile_last4": mobile_last4}
    return world.client.post(
        f"/api/v1/lockers/{world.locker_id}/codes/check", json=body, headers=world.locker_headers
    )


def _wrong(settings, world, right_counter):
    # A well-formed code that is not the live one.
    wrong = code_of(settings, world.locker_id, right_counter + 1000)
    return wrong


def test_lockout_after_five_wrong_codes_with_backoff(world, settings, engine, clock):
    make_record(world.client, world.integrator_headers)
    h = _dropoff(world)
    right = code_of(settings, world.locker_id, h["code_counter"])
    wrong = _wrong(settings, world, h["code_counter"])
    lefts = [_check(world, wrong).json()["attempts_left"] for _ in range(5)]
    assert lefts == [4, 3, 2, 1, 0]
    # Locked: even the right code is refused, with Retry-After.
    r = _check(world, right)
    body = assert_problem(r, 429)
    assert int(r.headers["Retry-After"]) == 30 and body["retry_after"] == 30
    clock.advance(seconds=31)
    for _ in range(5):
        _check(world, wrong)
    r = _check(world, right)
    assert int(assert_problem(r, 429)["retry_after"]) == 60  # doubled
    clock.advance(seconds=61)
    assert _check(world, right).json()["accepted"] is True
    with Session(engine) as s:
        refused = s.exec(select(AuditEntry).where(AuditEntry.action == "code.refused")).all()
        ended = s.exec(select(AuditEntry).where(AuditEntry.action == "code.lockout_ended")).all()
    # The 10 wrong codes one by one; the refusals during lockouts once per window (issue 11).
    assert len(refused) == 10
    assert [(e.detail["level"], e.detail["refused"]) for e in ended] == [(1, 1), (2, 1)]


def _lock(world, wrong):
    for _ in range(5):
        _check(world, wrong)


def test_a_flood_during_a_lockout_writes_one_audit_line_per_window(world, settings, engine, clock):
    """Issue 11: each refused code during a lockout was an audit row (18 M a day)."""
    make_record(world.client, world.integrator_headers)
    h = _dropoff(world)
    wrong = _wrong(settings, world, h["code_counter"])
    _lock(world, wrong)
    with Session(engine) as s:
        before = len(s.exec(select(AuditEntry)).all())
    for _ in range(300):
        assert _check(world, wrong).status_code == 429
    with Session(engine) as s:
        assert len(s.exec(select(AuditEntry)).all()) == before
    clock.advance(seconds=31)
    _check(world, wrong)  # checked again: the window is reported first
    with Session(engine) as s:
        ended = s.exec(select(AuditEntry).where(AuditEntry.action == "code.lockout_ended")).all()
    assert [e.detail["refused"] for e in ended] == [300]


def test_during_a_lockout_the_code_opens_with_the_mobile_digits(world, settings, clock):
    """Issue 11: an applicant arriving after someone else's guesses was refused."""
    make_record(world.client, world.integrator_headers, mobile="+8613800138000")
    h = _dropoff(world)
    right = code_of(settings, world.locker_id, h["code_counter"])
    wrong = _wrong(settings, world, h["code_counter"])
    _lock(world, wrong)
    assert_problem(_check(world, right), 429)  # the code alone: unchecked
    for code, digits in ((right, "0000"), (wrong, "8000"), (right, "800")):
        r = _check(world, code, digits)
        assert r.status_code in (422, 429), r.text  # nothing opens, whichever part is wrong
    r = _check(world, right, "8000")
    assert r.status_code == 200 and r.json()["accepted"] is True, r.text


def test_an_accepted_code_resets_no_guess_budget(world, settings):
    make_record(world.client, world.integrator_headers)
    h = _dropoff(world)
    make_record(world.client, world.integrator_headers, number="XA-2025-0002")
    other = _dropoff(world, number="XA-2025-0002")
    wrong = _wrong(settings, world, h["code_counter"])
    for _ in range(4):
        _check(world, wrong)
    assert _check(world, code_of(settings, world.locker_id, h["code_counter"])).json()["accepted"]
    assert _check(world, wrong).json()["attempts_left"] == 0  # the fifth locks, pickup or not
    assert_problem(_check(world, code_of(settings, world.locker_id, other["code_counter"])), 429)


def test_malformed_code_counts_as_a_failure(world):
    for bad in ("1234", "abcdefgh", "١٢٣٤٥٦٧٨"):
        assert _check(world, bad).json()["accepted"] is False
    assert _check(world, "12").json()["attempts_left"] == 1


def test_resend_revokes_old_code_and_is_rate_limited(world, settings, clock, engine):
    make_record(world.client, world.integrator_headers)
    h = _dropoff(world)
    old = code_of(settings, world.locker_id, h["code_counter"])
    url = f"/api/v1/handovers/by-ref/{h['ref']}/resend"
    assert_problem(world.client.post(url, json={"mobile": "+8613800138000"}), 429)
    clock.advance(seconds=61)
    assert_problem(world.client.post(url, json={"mobile": "+8613900139000"}), 404)
    r = world.client.post(url, json={"mobile": "+86 138-0013-8000"})
    assert r.status_code == 200, r.text
    new_counter = r.json()["code_counter"]
    assert new_counter > h["code_counter"]
    assert _check(world, old).json()["accepted"] is False
    assert _check(world, code_of(settings, world.locker_id, new_counter)).json()["accepted"]
    # Once used there is nothing to resend.
    clock.advance(seconds=61)
    assert_problem(world.client.post(url, json={"mobile": "+8613800138000"}), 409)
    assert_problem(
        world.client.post(
            "/api/v1/handovers/by-ref/nosuchreference/resend", json={"mobile": "+8613800138000"}
        ),
        404,
    )


def test_resend_limit_per_handover(world, settings, clock):
    make_record(world.client, world.integrator_headers)
    h = _dropoff(world)
    url = f"/api/v1/handovers/by-ref/{h['ref']}/resend"
    for _ in range(settings.resend_max_per_handover):
        clock.advance(seconds=61)
        assert world.client.post(url, json={"mobile": "+8613800138000"}).status_code == 200
    clock.advance(seconds=61)
    assert_problem(world.client.post(url, json={"mobile": "+8613800138000"}), 429)


def test_colliding_code_skips_to_next_counter(world, settings, monkeypatch):
    """Two live codes at one locker are never equal: a clash moves to the next counter."""
    real = code_service.code_for

    def clashing(key, counter, digits):
        # Counters 0 and 1 give the same code, as a real HOTP collision would.
        return real(key, 0 if counter == 1 else counter, digits)

    monkeypatch.setattr(code_service, "code_for", clashing)
    make_record(world.client, world.integrator_headers, number="A-1")
    make_record(world.client, world.integrator_headers, number="A-2")
    assert _dropoff(world, "A-1")["code_counter"] == 0
    assert _dropoff(world, "A-2")["code_counter"] == 2
    actions = [
        e["action"]
        for e in world.client.get("/api/v1/audit?limit=500", headers=world.admin_headers).json()
    ]
    assert "code.counter_skipped" in actions


def test_code_length_from_settings(db_url, clock, console):
    from fastapi.testclient import TestClient

    from cloud_api.core.config import Settings
    from cloud_api.main import create_app

    settings = Settings(demo=True, database_url=db_url, run_background=False, code_digits=6)
    with TestClient(create_app(settings, sms_provider=console, clock=clock)) as c:
        from cloud_api.models.staff import Role
        from cloud_api.services import bootstrap
        from tests.cloud_api.conftest import ADMIN_PASSWORD, login, register_locker

        engine = c.app.state.engine
        bootstrap.create_staff(engine, "admin", ADMIN_PASSWORD, Role.admin)
        admin = login(c, "admin", ADMIN_PASSWORD)
        locker_id, locker_headers = register_locker(c, admin)
        make_record(c, admin)
        h = c.post(
            "/api/v1/handovers/dropoff",
            headers=admin,
            json={"application_number": "XA-2025-0001", "locker_id": locker_id},
        ).json()
        code = code_of(settings, locker_id, h["code_counter"])
        assert len(code) == 6
        r = c.post(
            f"/api/v1/lockers/{locker_id}/codes/check", json={"code": code}, headers=locker_headers
        )
        assert r.json()["accepted"] is True
