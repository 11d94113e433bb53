"""API keys: list, revoke and rotate (admins, audited), and scopes enforced everywhere,
including the nearest-locker search."""

from sqlmodel import Session, select

from cloud_api.models.audit import AuditEntry
from cloud_api.models.staff import ApiKey
from tests.cloud_api.conftest import make_record
from tests.cloud_api.helpers import assert_problem

KEYS = "/api/v1/api-keys"


def _issue(world, name="crm", scopes=("records:write", "lockers:read")) -> dict:
    r = world.client.post(
        KEYS, headers=world.admin_headers, json={"name": name, "scopes": list(scopes)}
    )
    assert r.status_code == 201, r.text
    return r.json()


def _works(world, key: str) -> bool:
    r = world.client.get("/api/v1/lockers", headers={"X-API-Key": key})
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


def test_list_shows_keys_without_secrets(world, engine):
    issued = _issue(world)
    listed = world.client.get(KEYS, headers=world.admin_headers)
    assert listed.status_code == 200, listed.text
    mine = [k for k in listed.json() if k["id"] == issued["id"]]
    assert mine == [{k: v for k, v in issued.items() if k != "key"}]
    assert issued["key"].split("_")[-1] not in listed.text
    with Session(engine) as s:
        digest = s.get(ApiKey, issued["id"]).key_digest
    assert digest not in listed.text
    assert len(listed.json()) == 2  # the world's integrator key and this one
    assert [
        k["id"]
        for k in world.client.get(
            KEYS, params={"offset": 1, "limit": 1}, headers=world.admin_headers
        ).json()
    ] == [issued["id"]]


def test_revoke_stops_the_key_at_once(world, engine):
    issued = _issue(world)
    assert _works(world, issued["key"])
    r = world.client.post(f"{KEYS}/{issued['id']}/revoke", headers=world.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False and r.json()["revoked_at"] is not None
    assert not _works(world, issued["key"])
    again = world.client.post(f"{KEYS}/{issued['id']}/revoke", headers=world.admin_headers)
    assert "revoked" in assert_problem(again, 409)["detail"]
    rotate = world.client.post(f"{KEYS}/{issued['id']}/rotate", headers=world.admin_headers)
    assert_problem(rotate, 409)
    with Session(engine) as s:
        [entry] = s.exec(select(AuditEntry).where(AuditEntry.action == "api_key.revoked")).all()
    assert (entry.actor, entry.subject) == ("staff:admin", f"api_key:{issued['id']}")


def test_rotate_gives_a_new_secret_with_the_same_scopes(world, engine):
    issued = _issue(world)
    r = world.client.post(f"{KEYS}/{issued['id']}/rotate", headers=world.admin_headers)
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["id"] == issued["id"] and rotated["scopes"] == issued["scopes"]
    assert rotated["key"] != issued["key"] and rotated["rotated_at"] is not None
    assert not _works(world, issued["key"])
    assert _works(world, rotated["key"])
    # Still only its scopes.
    denied = world.client.post(
        "/api/v1/handovers/dropoff",
        headers={"X-API-Key": rotated["key"]},
        json={"application_number": "X-1", "locker_id": world.locker_id},
    )
    assert "handovers:write" in assert_problem(denied, 403)["detail"]
    with Session(engine) as s:
        actions = s.exec(select(AuditEntry.action).where(AuditEntry.subject == "api_key:2")).all()
    assert actions == ["api_key.created", "api_key.rotated"]


def test_only_admins_manage_keys(world):
    issued = _issue(world)
    r = world.client.post(
        "/api/v1/staff",
        headers=world.admin_headers,
        json={"username": "clerk", "password": "a long password", "role": "staff"},
    )
    assert r.status_code == 201
    login = world.client.post(
        "/api/v1/staff/login", json={"username": "clerk", "password": "a long password"}
    )
    clerk = {"Authorization": f"Bearer {login.json()['access_token']}"}
    for headers in (clerk, world.integrator_headers, {"X-API-Key": issued["key"]}):
        assert_problem(world.client.get(KEYS, headers=headers), 403)
        assert_problem(world.client.post(f"{KEYS}/{issued['id']}/revoke", headers=headers), 403)
        assert_problem(world.client.post(f"{KEYS}/{issued['id']}/rotate", headers=headers), 403)
    assert_problem(world.client.get(KEYS), 401)
    assert_problem(world.client.post(f"{KEYS}/999/revoke", headers=world.admin_headers), 404)
    assert_problem(world.client.post(f"{KEYS}/0/rotate", headers=world.admin_headers), 422)
    assert _works(world, issued["key"])


def test_nearest_needs_lockers_read(world):
    params = {"latitude": 34.3, "longitude": 109.0}
    writer = _issue(world, "records only", ["records:write"])
    r = world.client.get(
        "/api/v1/lockers/nearest", params=params, headers={"X-API-Key": writer["key"]}
    )
    assert "lockers:read" in assert_problem(r, 403)["detail"]
    reader = _issue(world, "map", ["lockers:read"])
    r = world.client.get(
        "/api/v1/lockers/nearest", params=params, headers={"X-API-Key": reader["key"]}
    )
    assert r.status_code == 200 and r.json()[0]["id"] == world.locker_id
    assert_problem(world.client.get("/api/v1/lockers/nearest", params=params), 401)
    make_record(world.client, world.integrator_headers)  # the integrator key still reads
    r = world.client.get("/api/v1/lockers/nearest", params=params, headers=world.integrator_headers)
    assert r.status_code == 200
