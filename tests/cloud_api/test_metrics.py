"""``GET /metrics`` on the API (in this process, SQLite and PostgreSQL): the figures move when
the system does (a request, an SMS enqueued and sent, a command unanswered, an alarm, a
lockout), labels are route templates and never carry personal data, and the endpoint is
refused to whoever the gate does not let in."""

import secrets
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update
from sqlmodel import Session

from cloud_api.core.config import Settings
from cloud_api.errors import ConfigError
from cloud_api.main import create_app
from cloud_api.metrics.instruments import OTHER_LOCKER, LockerLabels
from cloud_api.models.monitoring import AlarmKind
from cloud_api.mqtt import commands
from cloud_api.services import alarms
from cloud_api.sms.models import SmsMessage
from tests.cloud_api.conftest import make_record, reserve_dropoff
from tests.cloud_api.helpers import assert_problem, code_of
from tests.support.metrics import samples, value
from xinbao.contract import CommandType, PingPayload

TOKEN = secrets.token_urlsafe(32)
SCRAPE = {"Authorization": f"Bearer {TOKEN}"}
MOBILE = "+8613912345678"


@pytest.fixture
def settings(db_url) -> Settings:
    return Settings(demo=True, database_url=db_url, run_background=False, metrics_token=TOKEN)


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    r = client.get("/metrics", headers=SCRAPE)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def test_a_request_is_counted_under_its_route_template_and_status(world):
    before = scrape(world.client)
    r = world.client.get("/api/v1/records/XA-METRICS-1", headers=world.integrator_headers)
    assert r.status_code == 404
    after = scrape(world.client)
    route = "/api/v1/records/{application_number}"
    labels = {"method": "GET", "route": route, "status": "404"}
    assert value(after, "xinbao_http_requests_total", **labels) == (
        value(before, "xinbao_http_requests_total", **labels) + 1
    )
    assert value(after, "xinbao_http_request_duration_seconds_count", **labels) >= 1
    # The raw path never becomes a label (one series per URL a scanner tries).
    assert not any("XA-METRICS-1" in str(key) for key in after)


def test_unknown_paths_and_methods_share_one_label(world):
    for n in range(5):
        world.client.get(f"/scan/{n}/wp-login.php")
    world.client.request("PROPFIND", "/api/v1/lockers")
    after = scrape(world.client)
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert value(after, "xinbao_http_requests_total", **unmatched) == 5
    assert not any("wp-login" in str(key) for key in after)
    assert (
        value(
            after,
            "xinbao_http_requests_total",
            method="other",
            route="/api/v1/lockers",
            status="405",
        )
        == 1
    )


def test_sms_backlog_rises_with_an_enqueued_sms_and_falls_once_sent(world, app, engine, clock):
    before = scrape(world.client)
    assert value(before, "xinbao_backlog_depth", queue="sms") == 0
    reserve_dropoff(world)  # commits the code SMS with the reservation
    # The outbox stamps rows with the wall clock; this app runs on the test's clock.
    with Session(engine) as session:
        session.execute(update(SmsMessage).values(created_at=clock() - timedelta(seconds=90)))
        session.commit()
    waiting = scrape(world.client)
    assert value(waiting, "xinbao_backlog_depth", queue="sms") == 1
    assert value(waiting, "xinbao_backlog_oldest_age_seconds", queue="sms") >= 89
    assert app.state.dispatcher.run_once() == 1
    sent = scrape(world.client)
    assert value(sent, "xinbao_backlog_depth", queue="sms") == 0
    assert value(sent, "xinbao_backlog_oldest_age_seconds", queue="sms") == 0


def test_unanswered_commands_alarms_and_lockouts_show(world, engine, settings, clock):
    before = scrape(world.client)
    assert value(before, "xinbao_backlog_depth", queue="commands") == 0
    with Session(engine) as session:
        for _ in range(2):
            command = commands.signed(
                settings.master_key,
                world.locker_id,
                CommandType.PING,
                PingPayload(),
                timedelta(minutes=5),
                clock(),
            )
            commands.record(session, world.locker_id, command)
        alarms.raise_alarm(session, world.locker_id, AlarmKind.door_forced, clock(), compartment=2)
        session.commit()
    clock.advance(seconds=30)
    # Five wrong codes at the cloud's code check lock the locker out.
    make_record(world.client, world.integrator_headers)
    r = world.client.post(
        "/api/v1/handovers/dropoff",
        headers=world.integrator_headers,
        json={"application_number": "XA-2025-0001", "locker_id": world.locker_id},
    )
    wrong = code_of(settings, world.locker_id, r.json()["code_counter"] + 1000)
    for _ in range(5):
        world.client.post(
            f"/api/v1/lockers/{world.locker_id}/codes/check",
            json={"code": wrong},
            headers=world.locker_headers,
        )
    after = scrape(world.client)
    assert value(after, "xinbao_backlog_depth", queue="commands") == 2
    assert value(after, "xinbao_backlog_oldest_age_seconds", queue="commands") >= 30
    assert value(after, "xinbao_alarms_open", kind="door_forced") == 1
    assert value(after, "xinbao_alarms_open", kind="door_jammed") == 0
    assert value(after, "xinbao_lockouts_active", scope="locker_codes") == 1
    assert value(after, "xinbao_metrics_database_up") == 1


def test_a_scrape_after_a_journey_holds_no_personal_data(world, app, settings):
    make_record(world.client, world.integrator_headers, number="XA-PII-0001", mobile=MOBILE)
    r = world.client.post(
        "/api/v1/handovers/dropoff",
        headers=world.integrator_headers,
        json={"application_number": "XA-PII-0001", "locker_id": world.locker_id},
    )
    assert r.status_code == 201, r.text
    code = code_of(settings, world.locker_id, r.json()["code_counter"])
    app.state.dispatcher.run_once()
    world.client.get(f"/api/v1/records/XA-PII-0001?mobile={MOBILE}", headers=world.admin_headers)
    world.client.post(
        f"/api/v1/lockers/{world.locker_id}/codes/check",
        json={"code": code},
        headers=world.locker_headers,
    )
    text = world.client.get("/metrics", headers=SCRAPE).text
    for secret in (MOBILE, MOBILE[-4:], MOBILE[3:], code, "XA-PII-0001", TOKEN):
        assert secret not in text, secret


# --- the gate ----------------------------------------------------------------------------


def test_with_a_token_a_scrape_without_it_or_with_another_is_refused(client):
    for headers in ({}, {"Authorization": "Bearer " + "x" * 43}, {"Authorization": TOKEN}):
        r = client.get("/metrics", headers=headers)
        body = assert_problem(r, 401)
        assert body["reason"] == "metrics_token"
        assert body["message_zh"] and body["message_en"]
        assert "xinbao_" not in r.text
    assert client.get("/metrics", headers=SCRAPE).status_code == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_a_token_only_loopback_may_scrape(db_url):
    app = create_app(Settings(demo=True, database_url=db_url, run_background=False))
    with TestClient(app, client=("192.0.2.7", 50000)) as outside:
        body = assert_problem(outside.get("/metrics"), 403)
        assert body["reason"] == "metrics_address"
    with TestClient(app, client=("127.0.0.1", 50000)) as local:
        assert local.get("/metrics").status_code == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_allow_list_and_a_token_must_both_match(db_url):
    settings = Settings(
        demo=True,
        database_url=db_url,
        run_background=False,
        metrics_token=TOKEN,
        metrics_allow="10.1.0.0/16, 192.0.2.1",
    )
    app = create_app(settings)
    with TestClient(app, client=("10.1.2.3", 50000)) as prometheus:
        assert prometheus.get("/metrics", headers=SCRAPE).status_code == 200
        assert assert_problem(prometheus.get("/metrics"), 401)["reason"] == "metrics_token"
    with TestClient(app, client=("10.2.0.1", 50000)) as stranger:
        body = assert_problem(stranger.get("/metrics", headers=SCRAPE), 403)
        assert body["reason"] == "metrics_address"


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"metrics_token": "short"}, "at least 32"),
        ({"metrics_token": "a" * 40}, "not a strong secret"),
        ({"metrics_allow": "10.0.0.0/8, intranet"}, "'intranet' is not an address"),
    ],
)
def test_a_weak_token_or_a_bad_allow_list_is_refused_at_start(overrides, said):
    with pytest.raises(ConfigError, match=said):
        Settings(demo=True, **overrides)


def test_the_token_may_not_be_a_secret_that_opens_more():
    master = secrets.token_urlsafe(32)
    with pytest.raises(ConfigError, match="must differ"):
        Settings(demo=True, master_secret=master, metrics_token=master)


def test_lockers_past_the_label_limit_share_one_label():
    labels = LockerLabels(2)
    assert [labels(x) for x in ("a", "b", "c", "a", "d")] == ["a", "b", OTHER_LOCKER, "a", "_other"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_database_it_cannot_read_gives_database_up_0_not_a_failed_scrape(world, engine):
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE sms_message RENAME TO sms_message_away"))
    found = scrape(world.client)
    assert value(found, "xinbao_metrics_database_up") == 0
    assert ("xinbao_backlog_depth", (("queue", "sms"),)) not in found
    # What the API did is still there.
    assert any(name == "xinbao_http_requests_total" for name, _ in found)
