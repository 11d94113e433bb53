"""Issue 11, staff: passes instead of TOTP secrets on cabinets, the staff lifecycle (log-out,
password change, deactivation, TOTP reset), roles and sites, and the cloud's private SQLite.

Each test performs an attack that worked before: a cabinet's staff list carried every TOTP
secret, a deactivated member's cabinets kept them, any staff member could open any door of any
cabinet or change its lockout settings (lockout_threshold 100), and the database was 0644."""

import json
import os
import stat
from datetime import timedelta

import pyotp
import pytest
from sqlmodel import Session, select

from cloud_api.core.db import make_engine, migrate
from cloud_api.models.audit import AuditEntry
from cloud_api.models.staff import Role
from cloud_api.mqtt import commands
from cloud_api.services import bootstrap
from tests.cloud_api.conftest import ADMIN_PASSWORD, login
from tests.cloud_api.helpers import assert_problem
from xinbao import staff_pass
from xinbao.codes import derive_locker_key

PASSWORD = "a long password"
SITE_A = "国际港务区政务中心"  # the site of locker_body's lockers
SITE_B = "高新区政务中心"


def _enrolled(world, clock, username: str, role: str, site: str | None = None):
    """A member created by the admin, enrolled in TOTP; (headers of a full log-in, TOTP)."""
    body = {"username": username, "password": PASSWORD, "role": role}
    if site is not None:
        body["site"] = site
    r = world.client.post("/api/v1/staff", headers=world.admin_headers, json=body)
    assert r.status_code == 201, r.text
    first = login(world.client, username, PASSWORD)
    uri = world.client.post("/api/v1/staff/me/totp", headers=first).json()["provisioning_uri"]
    totp = pyotp.TOTP(pyotp.parse_uri(uri).secret)
    # A code of the step before: the current one is left for the log-in below.
    earlier = totp.at(clock.now - timedelta(seconds=30))
    r = world.client.post("/api/v1/staff/me/totp/confirm", json={"code": earlier}, headers=first)
    assert r.status_code == 200, r.text
    return login(world.client, username, PASSWORD, totp.at(clock.now)), totp, r.json()["id"]


def _locker_b(world) -> str:
    body_site = {"site": SITE_B}
    r = world.client.post(
        "/api/v1/lockers",
        headers=world.admin_headers,
        json={**_body("xa-b-0002"), **body_site},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _body(locker_id: str) -> dict:
    from tests.cloud_api.conftest import locker_body

    return locker_body(locker_id)


def _payload(engine, locker_id: str):
    with Session(engine) as s:
        return commands.staff_payload(s, commands.locker_site(s, locker_id))


def _pass(world, headers, locker_id):
    return world.client.post(
        "/api/v1/staff/me/passes", headers=headers, json={"locker_id": locker_id}
    )


def test_the_staff_list_a_cabinet_gets_holds_no_totp_secret(world, clock, engine):
    headers, totp, _ = _enrolled(world, clock, "li.wei", "staff")
    sent = _payload(engine, world.locker_id)
    assert [m.staff_no for m in sent.staff] == ["li.wei"]
    raw = sent.to_bytes()
    assert totp.secret.encode() not in raw
    assert set(json.loads(raw)["staff"][0]) == {"staff_no", "name", "roles", "pass_floor"}


def test_a_pass_works_at_its_own_cabinet_only(world, clock, settings, engine):
    locker_b = _locker_b(world)
    headers, _, _ = _enrolled(world, clock, "li.wei", "staff")  # every site
    r = _pass(world, headers, world.locker_id)
    assert r.status_code == 201, r.text
    issued = r.json()
    assert issued["staff_no"] == "li.wei" and issued["number"] == 0
    assert staff_pass.is_well_formed(issued["staff_pass"])
    now = clock.now.timestamp()

    def accepted_at(locker_id: str) -> bool:
        key = staff_pass.derive_pass_key(derive_locker_key(settings.master_key, locker_id))
        typed = issued["staff_pass"]
        return staff_pass.match_pass(key, locker_id, "li.wei", typed, now, range(16))

    assert accepted_at(world.locker_id)
    assert not accepted_at(locker_b)
    # The pass itself is not in the audit trail; the issue is.
    with Session(engine) as s:
        rows = s.exec(select(AuditEntry).where(AuditEntry.action == "staff.pass_issued")).all()
    assert [(e.actor, e.subject, e.detail["number"]) for e in rows] == [
        ("staff:li.wei", f"locker:{world.locker_id}", 0)
    ]
    assert issued["staff_pass"] not in json.dumps([e.detail for e in rows])
    assert _pass(world, headers, world.locker_id).json()["number"] == 1


def test_a_pass_needs_a_full_log_in_and_a_site_the_member_covers(world, clock):
    locker_b = _locker_b(world)
    # Password only (never enrolled): no pass.
    world.client.post(
        "/api/v1/staff",
        headers=world.admin_headers,
        json={"username": "no.totp", "password": PASSWORD, "role": "staff"},
    )
    assert_problem(_pass(world, login(world.client, "no.totp", PASSWORD), world.locker_id), 403)
    # A member of site B gets passes for B's lockers, not A's.
    headers, _, _ = _enrolled(world, clock, "zhang.b", "staff", SITE_B)
    assert _pass(world, headers, locker_b).status_code == 201
    assert_problem(_pass(world, headers, world.locker_id), 403)
    assert_problem(_pass(world, headers, "XA-NONE"), 404)
    assert_problem(_pass(world, headers, "bad id!"), 422)
    # An integrator key is no staff log-in.
    assert_problem(_pass(world, world.integrator_headers, world.locker_id), 403)


def test_only_staff_covering_a_site_are_synced_to_its_cabinets(world, clock, engine):
    locker_b = _locker_b(world)
    _enrolled(world, clock, "all.sites", "staff")
    _enrolled(world, clock, "site.a", "technician", SITE_A)
    _enrolled(world, clock, "site.b", "supervisor", SITE_B)
    assert [m.staff_no for m in _payload(engine, world.locker_id).staff] == ["all.sites", "site.a"]
    assert [m.staff_no for m in _payload(engine, locker_b).staff] == ["all.sites", "site.b"]
    assert _payload(engine, "XA-UNKNOWN").staff == []


def test_deactivation_ends_tokens_at_once_and_the_cabinet_list(world, clock, engine, settings):
    headers, _, staff_id = _enrolled(world, clock, "li.wei", "staff")
    issued = _pass(world, headers, world.locker_id).json()
    assert [m.staff_no for m in _payload(engine, world.locker_id).staff] == ["li.wei"]
    r = world.client.post(f"/api/v1/staff/{staff_id}/deactivate", headers=world.admin_headers)
    assert r.status_code == 200 and r.json()["active"] is False
    assert_problem(world.client.get("/api/v1/staff/me", headers=headers), 401)
    assert_problem(_pass(world, headers, world.locker_id), 401)
    assert _payload(engine, world.locker_id).staff == []
    # Reactivated: on the list again, but the passes issued before are void (the floor).
    r = world.client.post(f"/api/v1/staff/{staff_id}/activate", headers=world.admin_headers)
    assert r.status_code == 200 and r.json()["active"] is True
    (entry,) = _payload(engine, world.locker_id).staff
    assert entry.pass_floor > issued["number"]
    assert_problem(world.client.get("/api/v1/staff/me", headers=headers), 401)  # still over
    # Only an admin deactivates, and not themself.
    assert_problem(world.client.post(f"/api/v1/staff/{staff_id}/deactivate", headers=headers), 401)
    me = world.client.get("/api/v1/staff/me", headers=world.admin_headers).json()["id"]
    r = world.client.post(f"/api/v1/staff/{me}/deactivate", headers=world.admin_headers)
    assert_problem(r, 409)
    assert_problem(
        world.client.post("/api/v1/staff/99999/deactivate", headers=world.admin_headers), 404
    )


def test_totp_reset_ends_tokens_and_passes_and_needs_an_admin(world, clock, engine):
    headers, _, staff_id = _enrolled(world, clock, "li.wei", "staff")
    other, _, _ = _enrolled(world, clock, "wang", "supervisor")
    issued = _pass(world, headers, world.locker_id).json()
    assert_problem(world.client.post(f"/api/v1/staff/{staff_id}/totp/reset", headers=other), 403)
    r = world.client.post(f"/api/v1/staff/{staff_id}/totp/reset", headers=world.admin_headers)
    assert r.status_code == 200 and r.json()["totp_enabled"] is False
    assert_problem(world.client.get("/api/v1/staff/me", headers=headers), 401)
    assert _payload(engine, world.locker_id).staff[-1].staff_no == "wang"  # li.wei: no TOTP
    # Re-enrolled: synced again, with a floor above the old pass.
    clock.advance(seconds=60)
    headers = login(world.client, "li.wei", PASSWORD)
    uri = world.client.post("/api/v1/staff/me/totp", headers=headers).json()["provisioning_uri"]
    totp = pyotp.TOTP(pyotp.parse_uri(uri).secret)
    code = totp.at(clock.now)
    assert (
        world.client.post(
            "/api/v1/staff/me/totp/confirm", json={"code": code}, headers=headers
        ).status_code
        == 200
    )
    entry = [m for m in _payload(engine, world.locker_id).staff if m.staff_no == "li.wei"]
    assert entry[0].pass_floor > issued["number"]


def test_password_change_and_log_out_end_tokens(world, clock, engine):
    headers, totp, _ = _enrolled(world, clock, "li.wei", "staff")
    c = world.client
    change = "/api/v1/staff/me/password"
    assert_problem(
        c.post(
            change,
            headers=headers,
            json={"current_password": "wrong one", "new_password": "another long one"},
        ),
        401,
    )
    assert_problem(
        c.post(
            change, headers=headers, json={"current_password": PASSWORD, "new_password": "short"}
        ),
        422,
    )
    assert_problem(
        c.post(
            change, headers=headers, json={"current_password": PASSWORD, "new_password": PASSWORD}
        ),
        422,
    )
    r = c.post(
        change,
        headers=headers,
        json={"current_password": PASSWORD, "new_password": "another long one"},
    )
    assert r.status_code == 204, r.text
    assert_problem(c.get("/api/v1/staff/me", headers=headers), 401)
    clock.advance(seconds=30)
    assert_problem(
        c.post(
            "/api/v1/staff/login",
            json={"username": "li.wei", "password": PASSWORD, "totp": totp.at(clock.now)},
        ),
        401,
    )
    fresh = login(c, "li.wei", "another long one", totp.at(clock.now))
    assert c.get("/api/v1/staff/me", headers=fresh).status_code == 200
    assert c.post("/api/v1/staff/logout", headers=fresh).status_code == 204
    assert_problem(c.get("/api/v1/staff/me", headers=fresh), 401)
    assert_problem(c.post("/api/v1/staff/logout"), 401)
    with Session(engine) as s:
        actions = s.exec(
            select(AuditEntry.action).where(AuditEntry.subject == "staff:li.wei")
        ).all()
    assert "staff.password_changed" in actions and "staff.logout" in actions


def test_wrong_current_passwords_are_throttled_like_log_ins(world, clock):
    headers, _, _ = _enrolled(world, clock, "li.wei", "staff")
    body = {"current_password": "wrong one", "new_password": "another long one"}
    for _ in range(5):
        assert_problem(
            world.client.post("/api/v1/staff/me/password", headers=headers, json=body), 401
        )
    body["current_password"] = PASSWORD
    assert_problem(world.client.post("/api/v1/staff/me/password", headers=headers, json=body), 429)


def _remote_open(world, headers, locker_id):
    return world.client.post(
        "/api/v1/staff/remote-opens",
        headers=headers,
        json={"locker_id": locker_id, "compartment_number": 1, "reason": "applicant called"},
    )


def test_remote_opens_need_a_supervisor_of_the_site_or_an_admin(world, clock):
    locker_b = _locker_b(world)
    staff, _, _ = _enrolled(world, clock, "li.wei", "staff")
    tech, _, _ = _enrolled(world, clock, "tech", "technician")
    sup_a, _, _ = _enrolled(world, clock, "sup.a", "supervisor", SITE_A)
    sup_b, _, _ = _enrolled(world, clock, "sup.b", "supervisor", SITE_B)
    assert_problem(_remote_open(world, staff, world.locker_id), 403)
    assert_problem(_remote_open(world, tech, world.locker_id), 403)
    assert_problem(_remote_open(world, sup_b, world.locker_id), 403)
    assert _remote_open(world, sup_a, world.locker_id).status_code == 201
    assert _remote_open(world, sup_b, locker_b).status_code == 201
    assert _remote_open(world, world.admin_headers, locker_b).status_code == 201
    assert_problem(_remote_open(world, sup_a, "XA-NONE"), 404)


def _configure(world, headers, settings_, locker_id=None):
    return world.client.post(
        f"/api/v1/lockers/{locker_id or world.locker_id}/config",
        headers=headers,
        json={"settings": settings_},
    )


def test_locker_settings_need_a_supervisor_of_the_site_and_stay_in_bounds(world, clock):
    staff, _, _ = _enrolled(world, clock, "li.wei", "staff")
    sup_a, _, _ = _enrolled(world, clock, "sup.a", "supervisor", SITE_A)
    sup_b, _, _ = _enrolled(world, clock, "sup.b", "supervisor", SITE_B)
    assert_problem(_configure(world, staff, {"lockout_threshold": 3}), 403)
    assert_problem(_configure(world, sup_b, {"lockout_threshold": 3}), 403)
    # Allowed; this API runs without MQTT, so nothing can be sent (409, not 403).
    assert_problem(_configure(world, sup_a, {"lockout_threshold": 3}), 409)
    # 99 free guesses: refused whoever asks.
    for who in (staff, sup_a, world.admin_headers):
        body = assert_problem(_configure(world, who, {"lockout_threshold": 100}), 422)
        assert "lockout_threshold" in json.dumps(body)
    for bad in ({"lockout_threshold": 11}, {"lockout_threshold": 0}, {"poll_interval_s": 0}):
        assert_problem(_configure(world, world.admin_headers, bad), 422)


def test_roles_and_sites_are_checked_when_accounts_are_made(world):
    c = world.client
    made = c.post(
        "/api/v1/staff",
        headers=world.admin_headers,
        json={"username": "sup.x", "password": PASSWORD, "role": "supervisor", "site": SITE_B},
    )
    assert made.status_code == 201 and made.json()["site"] == SITE_B
    for bad in (
        {"username": "adm.x", "password": PASSWORD, "role": "admin", "site": SITE_B},
        {"username": "who.x", "password": PASSWORD, "role": "owner"},
        {"username": "sit.x", "password": PASSWORD, "role": "staff", "site": "a\x00b"},
    ):
        assert_problem(c.post("/api/v1/staff", headers=world.admin_headers, json=bad), 422)
    listed = c.get("/api/v1/staff", headers=world.admin_headers).json()
    assert {s["username"]: s["role"] for s in listed} == {"admin": "admin", "sup.x": "supervisor"}
    assert_problem(c.get("/api/v1/staff", headers=login(c, "sup.x", PASSWORD)), 403)


@pytest.mark.parametrize("existing", [False, True])
def test_the_cloud_sqlite_file_is_private(tmp_path, existing):
    path = tmp_path / "data" / "cloud.db"
    if existing:
        path.parent.mkdir(mode=0o755)
        path.touch()
        os.chmod(path, 0o644)
    url = f"sqlite:///{path}"
    migrate(url)
    engine = make_engine(url)
    bootstrap.create_staff(engine, "admin", ADMIN_PASSWORD, Role.admin)
    for name in (path, path.with_name("cloud.db-wal"), path.with_name("cloud.db-shm")):
        if name.exists():
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
    if not existing:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    engine.dispose()


def test_daily_work_needs_a_role_that_does_it_at_a_covered_site(world, clock):
    from tests.cloud_api.conftest import reserve_dropoff

    handover = reserve_dropoff(world)
    tech, _, _ = _enrolled(world, clock, "tech", "technician")
    other_site, _, _ = _enrolled(world, clock, "zhang.b", "staff", SITE_B)
    here, _, _ = _enrolled(world, clock, "li.a", "staff", SITE_A)
    cancel = f"/api/v1/staff/handovers/{handover['id']}/cancel"
    load = {"application_number": "XA-NONE-1", "locker_id": world.locker_id, "size": "S"}
    for who in (tech, other_site):
        assert_problem(world.client.post(cancel, headers=who), 403)
        assert_problem(world.client.post("/api/v1/staff/loads", headers=who, json=load), 403)
    assert world.client.post(cancel, headers=here).status_code == 200
