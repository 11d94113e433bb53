"""No input produces a 500: every bad request gets a 4xx problem document."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cloud_api.helpers import assert_problem

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "application_number",
    "applicant_name",
    "mobile",
    "matter_name",
    "status",
    "locker_id",
    "size",
    "latitude",
    "longitude",
    "code",
    "compartments",
    "id",
    "site",
]


def _problem_4xx(r):
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")


def test_malformed_json_and_wrong_content(world):
    c, h = world.client, world.integrator_headers
    for raw in (b"{", b"\xff\xfe", b"[1,2", b"null", b'"x"', b'{"a": NaN}'):
        r = c.post("/api/v1/records", content=raw, headers=h | {"Content-Type": "application/json"})
        _problem_4xx(r)
    assert (
        assert_problem(
            c.post(
                "/api/v1/records", content=b"{", headers=h | {"Content-Type": "application/json"}
            ),
            400,
        )["title"]
        == "Malformed JSON"
    )


def test_bad_path_values(world):
    c, h = world.client, world.admin_headers
    for bad in ("0", "-1", "abc", str(10**30), "1.5", "%00"):
        _problem_4xx(c.get(f"/api/v1/handovers/{bad}", headers=world.integrator_headers))
        _problem_4xx(c.post(f"/api/v1/staff/handovers/{bad}/collect", headers=h))
    for bad in ("a" * 65, "-x", "%F0%9F%98%80", "a%00b"):
        _problem_4xx(c.get(f"/api/v1/lockers/{bad}", headers=h))
        _problem_4xx(
            c.post(
                f"/api/v1/lockers/{bad}/codes/check",
                json={"code": "1"},
                headers=world.locker_headers,
            )
        )
    assert_problem(c.get("/api/v1/nowhere"), 404)
    assert_problem(c.delete("/api/v1/records"), 405)


def test_bad_headers(world):
    c = world.client
    for value in (
        "Basic abc",
        "Bearer",
        "Bearer x.y",
        "Bearer " + "A" * 5000,
        "Bearer ..",
        "Bearer e30.AAAA",
    ):
        assert_problem(c.get("/api/v1/lockers", headers={"Authorization": value}), 401)
    for value in ("nope", "xbk_1_", "xbk_99999999999999999999_x", "xbk_-1_x"):
        assert_problem(c.get("/api/v1/lockers", headers={"X-API-Key": value}), 401)
    assert_problem(
        c.post(
            f"/api/v1/lockers/{world.locker_id}/codes/check",
            json={"code": "1"},
            headers={"X-Locker-Key": "k" * 500},
        ),
        401,  # no locker key is that long: not a credential
    )


def test_huge_numbers_nul_bytes_and_nan(world):
    c, h = world.client, world.integrator_headers
    base = {
        "application_number": "N-1",
        "applicant_name": "x",
        "mobile": "+8613800138000",
        "matter_name": "m",
    }
    _problem_4xx(c.post("/api/v1/records", json=base | {"applicant_name": "a\x00b"}, headers=h))
    _problem_4xx(c.post("/api/v1/records", json=base | {"matter_name": "x" * 10_000}, headers=h))
    _problem_4xx(c.post("/api/v1/records", json=base | {"mobile": 10**30}, headers=h))
    _problem_4xx(
        c.get("/api/v1/lockers/nearest", params={"latitude": "nan", "longitude": 1}, headers=h)
    )
    _problem_4xx(
        c.get("/api/v1/lockers/nearest", params={"latitude": 1e308, "longitude": 1}, headers=h)
    )
    body = {
        "id": "big",
        "site": "s",
        "address": "a",
        "latitude": 1,
        "longitude": 1,
        "compartments": [{"number": 10**20, "size": "S", "board": 1, "channel": 1}],
    }
    _problem_4xx(c.post("/api/v1/lockers", json=body, headers=world.admin_headers))
    _problem_4xx(
        c.post(
            "/api/v1/staff/remote-opens",
            headers=world.admin_headers,
            json={"locker_id": world.locker_id, "compartment_number": 2**63, "reason": "x"},
        )
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6))
def test_random_bodies_never_500(world, body):
    c = world.client
    raw = json.dumps(body).encode()
    for method, url, headers in (
        ("POST", "/api/v1/records", world.integrator_headers),
        ("POST", "/api/v1/handovers/dropoff", world.integrator_headers),
        ("POST", "/api/v1/lockers", world.admin_headers),
        ("POST", f"/api/v1/lockers/{world.locker_id}/codes/check", world.locker_headers),
        ("POST", "/api/v1/staff/loads", world.admin_headers),
    ):
        r = c.request(
            method, url, content=raw, headers=headers | {"Content-Type": "application/json"}
        )
        assert r.status_code < 500, (url, body, r.text)


def test_values_the_database_cannot_store_are_refused_first(world):
    """Regressions found by the schemathesis run: on PostgreSQL a NUL byte in text, or an id
    beyond its 32-bit integers, reached the database and came back as a 500."""
    c = world.client
    assert_problem(c.post("/api/v1/staff/login", json={"username": "a\x00b", "password": "x"}), 422)
    staff = world.admin_headers
    for params in ({"to_number": "+86\x00"}, {"handover_id": 2**40}, {"before_id": 2**40}):
        assert_problem(c.get("/api/v1/sms/outbox", params=params, headers=staff), 422)
    assert (
        c.get("/api/v1/sms/outbox", params={"to_number": "+8613800138000"}, headers=staff).json()
        == []
    )


def test_a_database_data_error_is_a_422_problem(world, app):
    """The safety net for a value validation let through and the database refused."""
    from sqlalchemy.exc import DataError

    @app.get("/test-only/data-error")
    def refuse():
        raise DataError("SELECT 1", {}, ValueError("integer out of range"))

    r = world.client.get("/test-only/data-error")
    assert "out of range" in assert_problem(r, 422)["detail"]
