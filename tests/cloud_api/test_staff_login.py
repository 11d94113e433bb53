"""Staff log-in: a TOTP code works once, and repeated failures for one user name are
throttled with a growing back-off, audited, whether or not the name exists."""

import threading

import pyotp
from sqlmodel import Session, select

from cloud_api.models.audit import AuditEntry
from cloud_api.models.staff import LoginThrottle
from tests.cloud_api.conftest import ADMIN_PASSWORD
from tests.cloud_api.helpers import assert_problem

URL = "/api/v1/staff/login"


def _enrol(world, clock) -> pyotp.TOTP:
    c = world.client
    uri = c.post("/api/v1/staff/me/totp", headers=world.admin_headers).json()["provisioning_uri"]
    totp = pyotp.TOTP(pyotp.parse_uri(uri).secret)
    r = c.post(
        "/api/v1/staff/me/totp/confirm",
        json={"code": totp.at(clock.now)},
        headers=world.admin_headers,
    )
    assert r.status_code == 200, r.text
    return totp


def _try(world, password=ADMIN_PASSWORD, totp=None, username="admin"):
    body = {"username": username, "password": password}
    if totp is not None:
        body["totp"] = totp
    return world.client.post(URL, json=body)


def _actions(engine, subject="staff:admin") -> list:
    with Session(engine) as s:
        rows = s.exec(
            select(AuditEntry.action, AuditEntry.detail)
            .where(AuditEntry.subject == subject, AuditEntry.action.like("staff.login%"))
            .order_by(AuditEntry.seq)
        ).all()
    return [(action, detail) for action, detail in rows]


def test_a_totp_code_logs_in_once(world, clock):
    totp = _enrol(world, clock)
    clock.advance(seconds=30)
    code = totp.at(clock.now)
    assert _try(world, totp=code).status_code == 200
    assert_problem(_try(world, totp=code), 401)  # replayed within its window
    older = totp.at(clock.now, counter_offset=-1)  # still inside the drift window
    assert_problem(_try(world, totp=older), 401)
    clock.advance(seconds=30)
    assert _try(world, totp=totp.at(clock.now)).status_code == 200


def test_the_confirming_code_is_spent_too(world, clock):
    """A step spent anywhere is spent everywhere: the code that confirmed the enrolment (seen
    by whoever watched it typed) does not log in, nor does an older one."""
    totp = _enrol(world, clock)
    assert_problem(_try(world, totp=totp.at(clock.now)), 401)
    assert_problem(_try(world, totp=totp.at(clock.now, counter_offset=-1)), 401)
    clock.advance(seconds=30)
    assert _try(world, totp=totp.at(clock.now)).status_code == 200


def test_a_code_spent_at_log_in_does_not_confirm_a_new_enrolment(world, clock, engine):
    """After a TOTP reset, the member enrols again: a step already spent at a log-in (of the
    old secret) is not taken by the confirmation either."""
    from cloud_api.models.staff import Staff

    totp = _enrol(world, clock)
    clock.advance(seconds=30)
    token = _try(world, totp=totp.at(clock.now)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    with Session(engine) as s:
        # As a TOTP reset leaves it, without ending this token (the reset route would).
        staff = s.exec(select(Staff).where(Staff.username == "admin")).one()
        spent = staff.totp_last_step
        staff.totp_confirmed, staff.totp_secret = False, None
        s.commit()
    uri = world.client.post("/api/v1/staff/me/totp", headers=headers).json()["provisioning_uri"]
    fresh = pyotp.TOTP(pyotp.parse_uri(uri).secret)
    assert fresh.timecode(clock.now) == spent
    r = world.client.post(
        "/api/v1/staff/me/totp/confirm", json={"code": fresh.at(clock.now)}, headers=headers
    )
    assert_problem(r, 422)
    clock.advance(seconds=30)
    r = world.client.post(
        "/api/v1/staff/me/totp/confirm", json={"code": fresh.at(clock.now)}, headers=headers
    )
    assert r.status_code == 200, r.text


def test_concurrent_logins_with_one_code_let_one_in(world, clock):
    totp = _enrol(world, clock)
    clock.advance(seconds=30)
    code = totp.at(clock.now)
    n = 4
    barrier = threading.Barrier(n)
    statuses: list = [None] * n

    def attempt(i):
        barrier.wait()
        statuses[i] = _try(world, totp=code).status_code

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(statuses) == [200] + [401] * (n - 1)


def test_throttle_after_five_failures_with_growing_backoff(world, clock, engine):
    for _ in range(5):
        assert_problem(_try(world, password="wrong password"), 401)
    # Locked: even the right password is refused, without being checked.
    r = _try(world)
    body = assert_problem(r, 429)
    assert r.headers["Retry-After"] == "30" and body["retry_after"] == 30
    clock.advance(seconds=31)
    for _ in range(5):
        assert_problem(_try(world, password="wrong password"), 401)
    assert assert_problem(_try(world), 429)["retry_after"] == 60  # doubled
    clock.advance(seconds=61)
    assert _try(world).status_code == 200
    with Session(engine) as s:
        assert s.get(LoginThrottle, "admin") is None  # a success clears the slate

    actions = _actions(engine)
    failed = [d for a, d in actions if a == "staff.login_failed"]
    assert [d["failures"] for d in failed] == [1, 2, 3, 4, 5] * 2
    assert [d.get("lockout_seconds") for d in failed if "lockout_seconds" in d] == [30, 60]
    assert [a for a, _ in actions].count("staff.login_throttled") == 2
    assert actions[-1][0] == "staff.login"
    # After the success the back-off starts again from the bottom.
    for _ in range(5):
        _try(world, password="wrong password")
    assert assert_problem(_try(world), 429)["retry_after"] == 30


def test_unknown_names_are_throttled_alike(world, engine):
    answers = [_try(world, username="ghost", password="x") for _ in range(6)]
    assert [r.status_code for r in answers] == [401] * 5 + [429]
    assert answers[0].json()["detail"] == _try(world, password="wrong").json()["detail"]
    # Another name is not affected.
    assert _try(world).status_code == 200
    assert [a for a, _ in _actions(engine, "staff:ghost")].count("staff.login_failed") == 5


def test_concurrent_guesses_cannot_outrun_the_throttle(world, engine):
    n = 8
    barrier = threading.Barrier(n)
    statuses: list = [None] * n

    def guess(i):
        barrier.wait()
        statuses[i] = _try(world, password=f"guess {i}").status_code

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(statuses) == [401] * 5 + [429] * 3
    failed = [d for a, d in _actions(engine) if a == "staff.login_failed"]
    assert sorted(d["failures"] for d in failed) == [1, 2, 3, 4, 5]


def test_stale_throttle_rows_are_forgotten(world, clock, engine, app):
    """Guesses at made-up names leave rows; a day after the last failure, with no lockout
    running, the scheduler forgets them (and the back-off with them)."""
    for name in ("nobody-1", "nobody-2"):
        assert_problem(_try(world, password="wrong", username=name), 401)
    for _ in range(5):
        assert_problem(_try(world, password="wrong", username="nobody-3"), 401)
    assert app.state.scheduler.run_once().throttles_forgotten == 0  # too recent
    clock.advance(hours=23)
    assert_problem(_try(world, password="wrong", username="nobody-2"), 401)  # fresh again
    clock.advance(hours=2)
    assert app.state.scheduler.run_once().throttles_forgotten == 2  # nobody-1 and nobody-3
    with Session(engine) as s:
        assert [t.username for t in s.exec(select(LoginThrottle))] == ["nobody-2"]
