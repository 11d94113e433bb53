"""The bare endpoint bench/api_bench.py compares against: mounted only on request, and it
checks the API key as the measured endpoints do."""

from fastapi.testclient import TestClient

from cloud_api.main import create_app
from tests.cloud_api.helpers import assert_problem


def test_bare_endpoint_checks_the_api_key(world, settings, clock, console):
    assert_problem(world.client.get(f"/api/v1/_bench/lockers/{world.locker_id}"), 404)
    bench_app = create_app(
        settings.model_copy(update={"bench_routes": True}), sms_provider=console, clock=clock
    )
    with TestClient(bench_app, raise_server_exceptions=False) as c:
        url = f"/api/v1/_bench/lockers/{world.locker_id}"
        assert_problem(c.get(url), 401)
        assert_problem(c.get(url, headers={"X-API-Key": "xbk_1_wrong"}), 401)
        r = c.get(url, headers=world.integrator_headers)
        assert r.status_code == 200 and r.json() == {"id": world.locker_id}
        assert_problem(c.get("/api/v1/_bench/lockers/nope", headers=world.integrator_headers), 404)
