"""The dashboard's server side (create_app mounts it): its static files and its JSON views,
on SQLite and PostgreSQL (the browser tests are in test_dashboard_browser.py)."""

import pytest

from cloud_api.models.staff import Role
from cloud_api.services import bootstrap
from tests.cloud_api.conftest import login, make_record
from tests.cloud_api.helpers import assert_problem


def _dropoff(world, number):
    r = world.client.post(
        "/api/v1/handovers/dropoff",
        headers=world.integrator_headers,
        json={"application_number": number, "size": "S", "locker_id": world.locker_id},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _records(world, **params):
    r = world.client.get("/api/v1/dashboard/records", params=params, headers=world.admin_headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_records_come_with_their_handovers(world):
    make_record(world.client, world.integrator_headers, number="XA-D-1")
    make_record(world.client, world.integrator_headers, number="XA-D-2", status="submitted")
    handover = _dropoff(world, "XA-D-1")

    by_number = {r["application_number"]: r for r in _records(world)}
    assert set(by_number) == {"XA-D-1", "XA-D-2"}
    [shown] = by_number["XA-D-1"]["handovers"]
    assert shown["id"] == handover["id"]
    assert (shown["kind"], shown["state"]) == ("dropoff", "reserved")
    assert shown["compartment_number"] == handover["compartment_number"]
    assert by_number["XA-D-1"]["status"] == "prereview_passed"
    assert by_number["XA-D-2"]["handovers"] == []
    assert "code_digest" not in shown


def test_records_filter_by_status_and_search(world):
    make_record(world.client, world.integrator_headers, number="XA-F-1")
    make_record(world.client, world.integrator_headers, number="XA-F-2", status="submitted")
    assert [r["application_number"] for r in _records(world, status="submitted")] == ["XA-F-2"]
    assert [r["application_number"] for r in _records(world, q="f-1")] == ["XA-F-1"]
    assert len(_records(world, q="王小明")) == 2
    # LIKE wildcards typed by staff are literal text, not "match everything".
    assert _records(world, q="%") == []
    assert _records(world, q="_") == []


def test_records_paging(world):
    for i in range(3):
        make_record(world.client, world.integrator_headers, number=f"XA-P-{i}")
    first = _records(world, limit=2)
    rest = _records(world, limit=2, offset=2)
    assert len(first) == 2 and len(rest) == 1
    shown = {r["application_number"] for r in first + rest}
    assert shown == {"XA-P-0", "XA-P-1", "XA-P-2"}


@pytest.mark.parametrize(
    "params",
    [{"status": "lost"}, {"q": "a\x00b"}, {"q": "x" * 65}, {"limit": 0}, {"offset": -1}],
)
def test_records_bad_query_is_a_422(world, params):
    r = world.client.get("/api/v1/dashboard/records", params=params, headers=world.admin_headers)
    assert_problem(r, 422)


def test_records_need_a_staff_login(world):
    assert_problem(world.client.get("/api/v1/dashboard/records"), 401)
    r = world.client.get("/api/v1/dashboard/records", headers=world.integrator_headers)
    assert_problem(r, 403)


def test_latest_audit_entries_newest_first_for_admins_only(world, engine):
    r = world.client.get("/api/v1/dashboard/audit/latest?limit=3", headers=world.admin_headers)
    assert r.status_code == 200, r.text
    seqs = [e["seq"] for e in r.json()]
    assert len(seqs) == 3 and seqs == sorted(seqs, reverse=True)
    everything = world.client.get("/api/v1/audit?limit=500", headers=world.admin_headers).json()
    assert seqs[0] == everything[-1]["seq"]

    bootstrap.create_staff(engine, "clerk", "clerk password 1", Role.staff)
    clerk = login(world.client, "clerk", "clerk password 1")
    assert_problem(world.client.get("/api/v1/dashboard/audit/latest", headers=clerk), 403)
    r = world.client.get("/api/v1/dashboard/audit/latest?limit=201", headers=world.admin_headers)
    assert_problem(r, 422)


def test_pages_are_served_from_the_package(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="login-form"' in page.text
    for asset, kind in [
        ("app.js", "javascript"),
        ("api.js", "javascript"),
        ("views/lockers.js", "javascript"),
        ("dashboard.css", "text/css"),
    ]:
        r = client.get(f"/dashboard/{asset}")
        assert r.status_code == 200, asset
        assert kind in r.headers["content-type"], asset


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/__init__.py",
        "/dashboard/views/__init__.py",
        "/dashboard/../main.py",
        "/dashboard/%2e%2e/main.py",
        "/dashboard/nothing.js",
    ],
)
def test_no_source_or_outside_file_is_served(client, path):
    r = client.get(path)
    assert r.status_code == 404, path
    assert "import" not in r.text
