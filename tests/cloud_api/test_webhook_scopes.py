"""Who receives what: a hostile integrator key gets none of another key's events nor codes;
``records:read:all`` sees everything; ``codes:read`` hands a live code out once, or in the
``code.issued`` event of a subscriber that opted in; the code is stored nowhere."""

import json

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from cloud_api.models.audit import AuditEntry
from cloud_api.models.webhook import WebhookEvent
from cloud_api.services import audit
from tests.cloud_api.conftest import make_record
from tests.cloud_api.helpers import assert_problem, code_of
from tests.cloud_api.webhook_fixtures import (
    INTEGRATOR_SCOPES,
    deliver_until,
    issue_key,
    receiver,  # noqa: F401 (fixture)
    settings,  # noqa: F401 (fixture)
    subscribe,
    world_key_id,
)
from tests.support.webhook_receiver import WebhookReceiver

CENTRE_SCOPES = [*INTEGRATOR_SCOPES, "codes:read"]


def _dropoff(world, headers: dict, number: str) -> dict:
    make_record(world.client, headers, number=number)
    r = world.client.post(
        "/api/v1/handovers/dropoff",
        headers=headers,
        json={"application_number": number, "locker_id": world.locker_id},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _numbers(rx: WebhookReceiver) -> set[str]:
    return {d.json["record"]["application_number"] for d in rx.all()}


@pytest.fixture
def receivers():
    made = []

    def make() -> WebhookReceiver:
        made.append(WebhookReceiver().start())
        return made[-1]

    try:
        yield make
    finally:
        for rx in made:
            rx.stop()


def test_a_hostile_key_receives_none_of_anothers_events(world, app, engine, receivers):
    """Key B subscribes (opted in to codes, with codes:read) and waits for key A's events;
    a supervising key with records:read:all gets both."""
    a_rx, b_rx, all_rx = receivers(), receivers(), receivers()
    hostile = issue_key(world.client, world.admin_headers, "hostile", CENTRE_SCOPES)
    watcher = issue_key(world.client, world.admin_headers, "supervisor", ["records:read:all"])
    subscribe(world, world_key_id(world), a_rx.url)
    subscribe(world, hostile["id"], b_rx.url, include_codes=True)
    subscribe(world, watcher["id"], all_rx.url)

    a_handover = _dropoff(world, world.integrator_headers, "XA-A-1")
    _dropoff(world, hostile["headers"], "XB-B-1")
    app.state.dispatcher.run_once()  # the code SMS: sms.sent events
    deliver_until(
        app,
        lambda: len(all_rx.accepted()) == len(a_rx.accepted()) + len(b_rx.accepted()) >= 8,
        "every event at its subscribers",
    )
    assert _numbers(a_rx) == {"XA-A-1"}
    assert _numbers(b_rx) == {"XB-B-1"}
    assert _numbers(all_rx) == {"XA-A-1", "XB-B-1"}
    # Nothing of A's anywhere in what B received, nor queued for B.
    assert not any(b"XA-A-1" in d.body for d in b_rx.all())
    assert not any(d.json["data"].get("handover_id") == a_handover["id"] for d in b_rx.all())
    with Session(engine) as s:
        for_b = s.exec(select(WebhookEvent).where(WebhookEvent.subscriber_id == 2)).all()
    assert for_b and {e.payload["record"]["application_number"] for e in for_b} == {"XB-B-1"}
    # B's codes:read does not reach A's handover either: answered as a missing one.
    stolen = world.client.get(
        f"/api/v1/handovers/{a_handover['id']}/code", headers=hostile["headers"]
    )
    missing = world.client.get("/api/v1/handovers/99999/code", headers=hostile["headers"])
    assert assert_problem(stolen, 404)["title"] == assert_problem(missing, 404)["title"]
    # Nor can B manage subscribers or replay events.
    assert_problem(world.client.get("/api/v1/webhooks/events", headers=hostile["headers"]), 403)
    assert_problem(
        world.client.post(
            "/api/v1/webhooks/subscribers",
            headers=hostile["headers"],
            json={"api_key_id": world_key_id(world), "name": "x", "url": b_rx.url},
        ),
        403,
    )


def test_a_revoked_key_receives_nothing_more(world, app, engine, receiver):  # noqa: F811
    key = issue_key(world.client, world.admin_headers, "leaving", INTEGRATOR_SCOPES)
    subscribe(world, key["id"], receiver.url)
    make_record(world.client, key["headers"], number="XA-GONE", status="submitted")
    r = world.client.post(f"/api/v1/api-keys/{key['id']}/revoke", headers=world.admin_headers)
    assert r.status_code == 200, r.text
    with Session(engine) as s:  # a change by staff after the revocation
        audit.append(s, "staff:admin", "record.updated", "record:XA-GONE", {"fields": ["x"]})
        s.commit()
    assert app.state.webhooks.run_once() == 1
    assert receiver.all() == []
    with Session(engine) as s:
        [event] = s.exec(select(WebhookEvent)).all()
    assert event.status == "dead" and "revoked" in event.last_error


def test_codes_read_fetches_a_live_code_once(world, engine, settings, clock):  # noqa: F811
    centre = issue_key(world.client, world.admin_headers, "centre", CENTRE_SCOPES)
    handover = _dropoff(world, centre["headers"], "XA-CODE-1")
    path = f"/api/v1/handovers/{handover['id']}/code"
    first = world.client.get(path, headers=centre["headers"])
    assert first.status_code == 200, first.text
    body = first.json()
    expected = code_of(settings, world.locker_id, handover["code_counter"])
    assert body["code"] == expected and body["counter"] == handover["code_counter"]
    assert body["application_number"] == "XA-CODE-1" and body["kind"] == "dropoff"
    assert first.headers["cache-control"] == "no-store"

    again = assert_problem(world.client.get(path, headers=centre["headers"]), 409)
    assert again["reason"] == "code-already-fetched" and again["message_zh"]
    assert expected not in json.dumps(again)

    # A new code (the applicant asked for it again) is handed out once more.
    clock.advance(seconds=120)
    resent = world.client.post(
        f"/api/v1/handovers/by-ref/{handover['ref']}/resend", json={"mobile": "+8613800138000"}
    )
    assert resent.status_code == 200, resent.text
    second = world.client.get(path, headers=centre["headers"])
    assert second.status_code == 200, second.text
    assert second.json()["counter"] == resent.json()["code_counter"] != handover["code_counter"]
    assert_problem(world.client.get(path, headers=centre["headers"]), 409)

    with Session(engine) as s:
        fetched = s.exec(select(AuditEntry).where(AuditEntry.action == "code.fetched")).all()
    assert [(e.actor, e.detail["counter"]) for e in fetched] == [
        (f"api_key:{centre['id']}", handover["code_counter"]),
        (f"api_key:{centre['id']}", resent.json()["code_counter"]),
    ]
    _stored_nowhere(engine, [expected, second.json()["code"]])


def test_codes_read_is_refused_without_the_scope_to_staff_and_for_dead_codes(world, engine):
    centre = issue_key(world.client, world.admin_headers, "centre", CENTRE_SCOPES)
    handover = _dropoff(world, centre["headers"], "XA-CODE-2")
    path = f"/api/v1/handovers/{handover['id']}/code"
    # The world's key reads its own records but lacks codes:read; staff never fetch codes.
    mine = _dropoff(world, world.integrator_headers, "XA-CODE-3")
    assert_problem(
        world.client.get(f"/api/v1/handovers/{mine['id']}/code", headers=world.integrator_headers),
        403,
    )
    assert_problem(world.client.get(path, headers=world.admin_headers), 403)
    assert_problem(world.client.get(path), 401)
    for bad in ("0", "-1", "abc", "99999999999"):
        assert_problem(
            world.client.get(f"/api/v1/handovers/{bad}/code", headers=centre["headers"]), 422
        )
    cancelled = world.client.post(
        f"/api/v1/handovers/{handover['id']}/cancel", headers=centre["headers"]
    )
    assert cancelled.status_code == 200, cancelled.text
    dead = assert_problem(world.client.get(path, headers=centre["headers"]), 409)
    assert dead["reason"] == "code-not-live"
    with Session(engine) as s:
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "code.fetched")).all() == []


def test_records_read_all_with_codes_read_follows_the_visibility_rule(world, settings):  # noqa: F811
    handover = _dropoff(world, world.integrator_headers, "XA-CODE-4")
    supervisor = issue_key(
        world.client, world.admin_headers, "supervisor", ["records:read:all", "codes:read"]
    )
    r = world.client.get(f"/api/v1/handovers/{handover['id']}/code", headers=supervisor["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["code"] == code_of(settings, world.locker_id, handover["code_counter"])


def test_an_opted_in_subscriber_receives_the_live_code(
    world, app, engine, settings, clock, receivers
):  # noqa: F811
    centre = issue_key(world.client, world.admin_headers, "centre", CENTRE_SCOPES)
    with_codes, without = receivers(), receivers()
    subscribe(world, centre["id"], with_codes.url, include_codes=True)
    subscribe(world, centre["id"], without.url)
    handover = _dropoff(world, centre["headers"], "XA-CODE-5")
    # Replaced before the first code.issued went out: that one is withheld, the new one sent.
    clock.advance(seconds=120)
    resent = world.client.post(
        f"/api/v1/handovers/by-ref/{handover['ref']}/resend", json={"mobile": "+8613800138000"}
    )
    assert resent.status_code == 200, resent.text
    deliver_until(
        app,
        lambda: (
            with_codes.accepted_types().count("code.issued") == 2
            and without.accepted_types().count("code.issued") == 2
        ),
        "both code.issued events at both subscribers",
    )
    old, new = [d.json["data"] for d in with_codes.accepted() if d.json["type"] == "code.issued"]
    assert old["code"] is None and "replaced" in old["code_withheld"]
    assert new["counter"] == resent.json()["code_counter"]
    assert new["code"] == code_of(settings, world.locker_id, new["counter"])
    assert all("code" not in d.json["data"] for d in without.accepted())
    _stored_nowhere(
        engine,
        [new["code"], code_of(settings, world.locker_id, handover["code_counter"])],
    )


def test_the_other_helpers_actions_become_events_for_the_owner_only(world, app, engine, receivers):
    """``rating.submitted`` and ``code.reissued`` are written by features on other branches;
    their mapping is here."""
    mine, other = receivers(), receivers()
    stranger = issue_key(world.client, world.admin_headers, "stranger", INTEGRATOR_SCOPES)
    subscribe(world, world_key_id(world), mine.url)
    subscribe(world, stranger["id"], other.url)
    handover = _dropoff(world, world.integrator_headers, "XA-RATE-1")
    with Session(engine) as s:
        record_id = s.execute(
            text("SELECT id FROM approval_record WHERE application_number = 'XA-RATE-1'")
        ).scalar_one()
        audit.append(
            s,
            "applicant",
            "rating.submitted",
            f"handover:{handover['id']}",
            {
                "handover_id": handover["id"],
                "record_id": record_id,
                "application_no": "XA-RATE-1",
                "score": 5,
                "scale": 5,
                "comment": "很快 quick",
            },
        )
        audit.append(
            s,
            "staff:admin",
            "code.reissued",
            f"handover:{handover['id']}",
            {"handover_id": handover["id"], "record_id": record_id, "via": "dashboard"},
        )
        s.commit()
    deliver_until(app, lambda: "code.reissued" in mine.accepted_types(), "the two events")
    rating = next(d.json for d in mine.accepted() if d.json["type"] == "rating.created")
    assert rating["data"] == {
        "score": 5,
        "scale": 5,
        "comment": "很快 quick",
        "handover_id": handover["id"],
    }
    assert rating["actor"] == "applicant"
    reissued = next(d.json for d in mine.accepted() if d.json["type"] == "code.reissued")
    assert reissued["data"] == {"via": "dashboard", "handover_id": handover["id"]}
    assert reissued["actor"] == "staff"  # never the staff member's name
    assert other.all() == []


def _stored_nowhere(engine, codes: list[str]) -> None:
    """No table holds any of ``codes`` as text (every column of every row, as JSON)."""
    with Session(engine) as s:
        tables = [
            t
            for t in s.execute(
                text(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    if engine.dialect.name == "sqlite"
                    else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            ).scalars()
        ]
        for table in tables:
            for row in s.execute(text(f'SELECT * FROM "{table}"')).all():
                dumped = json.dumps([str(v) for v in row], ensure_ascii=False)
                for code in codes:
                    assert code not in dumped, f"a code is stored in {table}"
