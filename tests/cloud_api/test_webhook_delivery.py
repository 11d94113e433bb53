"""Webhook delivery against a real HTTP subscriber (http.server in a thread): signed as
docs/integrators.md says (its snippet is run here), in order per record, at least once with
the same event id, through a subscriber's outage, to dead letters and back by replay."""

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, select

from cloud_api.core.config import Settings
from cloud_api.main import create_app
from cloud_api.models.audit import AuditEntry
from cloud_api.models.common import utcnow
from cloud_api.models.webhook import WebhookEvent, WebhookSubscriber
from cloud_api.services import audit
from cloud_api.webhooks.delivery import WebhookDispatcher
from tests.cloud_api.conftest import make_record, reserve_dropoff
from tests.cloud_api.helpers import assert_problem
from tests.cloud_api.webhook_fixtures import (
    EVENTS,
    SUBSCRIBERS,
    deliver_until,
    events,
    receiver,  # noqa: F401 (fixture)
    settings,  # noqa: F401 (fixture)
    subscribe,
    world_key_id,
)
from tests.support.waiting import wait_until
from tests.support.webhook_receiver import WebhookReceiver

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrators.md"


def documented_verifier():
    """The verification snippet of docs/integrators.md, run as a receiver would paste it."""
    text = DOCS.read_text(encoding="utf-8")
    after = text.split("<!-- verification-snippet", 1)[1]
    code = re.search(r"```python\n(.*?)```", after, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # noqa: S102 (our own documentation)
    return namespace["verify_xinbao_webhook"]


def _move(world, number: str, status: str) -> None:
    r = world.client.post(
        f"/api/v1/records/{number}/transitions",
        headers=world.integrator_headers,
        json={"status": status},
    )
    assert r.status_code == 200, r.text


def _outbox(engine) -> list[WebhookEvent]:
    with Session(engine) as s:
        return list(s.exec(select(WebhookEvent).order_by(WebhookEvent.id)))


def _dispatcher(settings, engine, **options) -> WebhookDispatcher:  # noqa: F811
    options = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2, **options}
    return WebhookDispatcher(
        engine, master_secret=settings.master_key, digits=settings.code_digits, **options
    )


def test_events_are_signed_as_documented(world, app, engine, receiver):  # noqa: F811
    secret = subscribe(world, world_key_id(world), receiver.url)["secret"]
    handover = reserve_dropoff(world)
    deliver_until(app, lambda: len(receiver.accepted()) >= 3, "three events")
    assert receiver.accepted_types() == ["record.created", "handover.reserved", "code.issued"]
    verify = documented_verifier()
    for delivery in receiver.accepted():
        body = delivery.json
        headers = {
            "X-Xinbao-Timestamp": delivery.headers["x-xinbao-timestamp"],
            "X-Xinbao-Signature": delivery.headers["x-xinbao-signature"],
        }
        assert verify(secret, headers, delivery.body)
        assert not verify(secret, headers, delivery.body.replace(b"XA-2025", b"XA-2026"))
        assert not verify(secret.replace("whsec_", "whsec_x"), headers, delivery.body)
        stale = headers | {"X-Xinbao-Timestamp": str(int(headers["X-Xinbao-Timestamp"]) - 3600)}
        assert not verify(secret, stale, delivery.body)
        assert delivery.event_id == body["id"]
        assert delivery.headers["x-xinbao-event-type"] == body["type"]
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.path == "/hooks/xinbao"
        assert body["record"]["application_number"] == "XA-2025-0001"
        assert body["actor"] == "integrator"
    reserved, issued = receiver.accepted()[1].json, receiver.accepted()[2].json
    assert reserved["data"] == {
        "kind": "dropoff",
        "locker_id": world.locker_id,
        "compartment": handover["compartment_number"],
        "handover_id": handover["id"],
    }
    # No code for a subscriber that did not opt in; the sequence follows the audit trail.
    assert "code" not in issued["data"] and issued["data"]["counter"] == handover["code_counter"]
    sequences = [d.json["sequence"] for d in receiver.accepted()]
    assert sequences == sorted(sequences)
    with Session(engine) as s:
        seqs = s.exec(
            select(AuditEntry.seq).where(AuditEntry.action.in_(["record.created", "code.issued"]))
        ).all()
    assert {sequences[0], sequences[2]} == set(seqs)


def test_a_subscriber_down_for_a_while_gets_every_event_in_order(
    world,
    engine,
    db_url,
    receiver,  # noqa: F811
):
    """The worker as it runs in the API process (the lifespan's background task) while the
    subscriber is down, then back on the same port."""
    subscribe(world, world_key_id(world), receiver.url)
    receiver.stop()
    settings = Settings(
        demo=True,
        database_url=db_url,
        run_background=True,
        webhook_interval_seconds=0.05,
        webhook_backoff_base_seconds=0.05,
        webhook_backoff_max_seconds=0.3,
        webhook_max_attempts=1000,
        scheduler_interval_seconds=3600,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        world.client = client
        for n in (1, 2):
            make_record(client, world.integrator_headers, number=f"XA-DOWN-{n}", status="submitted")
        _move(world, "XA-DOWN-1", "prereview_passed")
        # Down: the first event of each record is tried again and again; the rest wait.
        wait_until(
            lambda: _outbox(engine)[0].attempts >= 3,
            15,
            "retries while the subscriber is down",
        )
        assert all(e.status != "delivered" for e in _outbox(engine))
        waiting = [e for e in _outbox(engine) if e.type != "record.created"]
        assert waiting and all(e.attempts == 0 for e in waiting), "later events waited"
        _move(world, "XA-DOWN-2", "prereview_passed")
        _move(world, "XA-DOWN-1", "documents_received")
        receiver.start()
        wait_until(
            lambda: all(e.status == "delivered" for e in _outbox(engine)),
            20,
            "every event delivered once the subscriber is back",
        )
    outbox = _outbox(engine)
    accepted = receiver.accepted()
    assert {d.event_id for d in accepted} == {e.event_id for e in outbox}  # none lost
    for number in ("XA-DOWN-1", "XA-DOWN-2"):
        mine = [d.json for d in accepted if d.json["record"]["application_number"] == number]
        assert [m["sequence"] for m in mine] == sorted(m["sequence"] for m in mine)
        assert mine[0]["type"] == "record.created"
    one = [d.json for d in accepted if d.json["record"]["application_number"] == "XA-DOWN-1"]
    assert [(e["type"], e["data"].get("to")) for e in one] == [
        ("record.created", None),
        ("record.status_changed", "prereview_passed"),
        ("record.status_changed", "documents_received"),
    ]


def test_a_repeat_carries_the_same_event_id(world, app, engine, settings, receiver):  # noqa: F811
    """The subscriber took the event but answered too late: it comes again, same id, and the
    record's next event waits until then."""
    subscribe(world, world_key_id(world), receiver.url)
    seen: dict[str, int] = {}

    def slow_first(body: dict) -> int:
        seen[body["id"]] = seen.get(body["id"], 0) + 1
        if body["type"] == "record.created" and seen[body["id"]] <= 2:
            time.sleep(1.0)  # past the worker's timeout: it cannot know we got it
        return 204

    receiver.answer = slow_first
    make_record(world.client, world.integrator_headers, number="XA-DUP-1", status="submitted")
    _move(world, "XA-DUP-1", "prereview_passed")
    dispatcher = _dispatcher(settings, engine, timeout_seconds=0.3)
    try:
        wait_until(
            lambda: (dispatcher.run_once(), len(receiver.accepted()) >= 4)[1],
            20,
            "two late answers, then the event and the next one",
        )
    finally:
        dispatcher.close()
    accepted = receiver.accepted()
    first = [d for d in accepted if d.json["type"] == "record.created"]
    assert len(first) == 3 and len({d.event_id for d in first}) == 1
    assert [d.headers["x-xinbao-attempt"] for d in first] == ["1", "2", "3"]
    assert len({d.body for d in first}) == 1  # the same body each time
    # The status change was not sent before the creation got through (the third attempt).
    [moved] = [d for d in accepted if d.json["type"] == "record.status_changed"]
    assert moved.arrived > first[2].arrived
    assert all(e.status == "delivered" for e in _outbox(engine))


def test_one_records_trouble_holds_back_only_that_record(world, app, engine, receiver):  # noqa: F811
    subscribe(world, world_key_id(world), receiver.url)
    refused = {"XA-A"}
    receiver.answer = lambda body: 500 if body["record"]["application_number"] in refused else 204
    for number in ("XA-A", "XA-B"):
        make_record(world.client, world.integrator_headers, number=number, status="submitted")
        _move(world, number, "prereview_passed")
    deliver_until(
        app,
        lambda: (
            [d.json["record"]["application_number"] for d in receiver.accepted()]
            == ["XA-B", "XA-B"]
        ),
        "record B's events while A's first keeps failing",
    )
    tried_a = [d.json["type"] for d in receiver.all() if d.status == 500]
    assert set(tried_a) == {"record.created"}, "A's second event waits for its first"
    refused.clear()
    deliver_until(app, lambda: len(receiver.accepted()) == 4, "A's events once it is taken")
    a = [d.json for d in receiver.accepted() if d.json["record"]["application_number"] == "XA-A"]
    assert [e["type"] for e in a] == ["record.created", "record.status_changed"]


def test_dead_letter_then_replay(world, app, engine, settings, receiver):  # noqa: F811
    subscribe(world, world_key_id(world), receiver.url)
    receiver.answer = lambda body: 503 if body["type"] == "record.created" else 204
    make_record(world.client, world.integrator_headers, number="XA-DEAD", status="submitted")
    dispatcher = _dispatcher(settings, engine, max_attempts=3)
    try:
        wait_until(
            lambda: (dispatcher.run_once(), any(e.status == "dead" for e in _outbox(engine)))[1],
            15,
            "a dead letter after 3 attempts",
        )
        [dead] = events(world, status="dead")
        assert dead["attempts"] == 3 and dead["last_status_code"] == 503
        assert "gave up after 3 attempts" in dead["last_error"]
        assert dead["application_number"] == "XA-DEAD" and dead["type"] == "record.created"
        assert len(receiver.all()) == 3
        # A dead letter holds its record back no longer.
        _move(world, "XA-DEAD", "prereview_passed")
        wait_until(
            lambda: (
                (dispatcher.run_once(), receiver.accepted_types())[1] == ["record.status_changed"]
            ),
            15,
            "the next event after the dead letter",
        )
        # Only the dead are replayed, by an administrator; audited.
        delivered = next(e for e in events(world) if e["status"] == "delivered")
        assert_problem(
            world.client.post(f"{EVENTS}/{delivered['id']}/replay", headers=world.admin_headers),
            409,
        )
        assert_problem(
            world.client.post(f"{EVENTS}/999999/replay", headers=world.admin_headers), 404
        )
        assert_problem(
            world.client.post(f"{EVENTS}/{dead['id']}/replay", headers=world.integrator_headers),
            403,
        )
        receiver.answer = lambda body: 204
        r = world.client.post(f"{EVENTS}/{dead['id']}/replay", headers=world.admin_headers)
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["attempts"], r.json()["replays"]) == ("pending", 0, 1)
        assert_problem(
            world.client.post(f"{EVENTS}/{dead['id']}/replay", headers=world.admin_headers), 409
        )
        wait_until(
            lambda: (dispatcher.run_once(), len(receiver.accepted()) == 2)[1],
            15,
            "the replayed event",
        )
    finally:
        dispatcher.close()
    replayed = receiver.accepted()[-1]
    assert replayed.event_id == dead["event_id"] and replayed.json["type"] == "record.created"
    assert events(world, status="dead") == []
    with Session(engine) as s:
        [entry] = s.exec(select(AuditEntry).where(AuditEntry.action == "webhook.replayed")).all()
    assert entry.actor == "staff:admin" and entry.subject == f"webhook_event:{dead['id']}"
    assert entry.detail["event_id"] == dead["event_id"]


def test_an_event_older_than_the_maximum_age_dies_untried(world, engine, settings, receiver):  # noqa: F811
    subscribe(world, world_key_id(world), receiver.url)
    make_record(world.client, world.integrator_headers, number="XA-OLD", status="submitted")
    later = _dispatcher(
        settings,
        engine,
        max_age_seconds=3600,
        clock=lambda: utcnow() + timedelta(hours=2),
    )
    try:
        assert later.run_once() == 1
    finally:
        later.close()
    [dead] = events(world, status="dead")
    assert "older than" in dead["last_error"]
    assert receiver.all() == []


def test_sms_outcomes_are_events(world, app, engine, receiver):  # noqa: F811
    subscribe(world, world_key_id(world), receiver.url)
    handover = reserve_dropoff(world)
    assert app.state.dispatcher.run_once() == 1  # the console provider "sends" the code SMS
    deliver_until(app, lambda: "sms.sent" in receiver.accepted_types(), "the sms.sent event")
    sms = next(d for d in receiver.accepted() if d.json["type"] == "sms.sent")
    assert sms.json["data"] == {
        "template": "dropoff_code",
        "status": "sent",
        "handover_id": handover["id"],
        "message_id": sms.json["data"]["message_id"],
    }
    assert b"+86138" not in sms.body  # no phone number, no body, no code
    with Session(engine) as s:
        [entry] = s.exec(select(AuditEntry).where(AuditEntry.action == "sms.status")).all()
    assert entry.actor == "sms" and entry.detail["status"] == "sent"


def test_a_disabled_subscriber_gets_nothing_more(world, app, engine, receiver):  # noqa: F811
    created = subscribe(world, world_key_id(world), receiver.url)
    make_record(world.client, world.integrator_headers, number="XA-OFF", status="submitted")
    r = world.client.patch(
        f"{SUBSCRIBERS}/{created['id']}", headers=world.admin_headers, json={"active": False}
    )
    assert r.status_code == 200 and r.json()["active"] is False
    _move(world, "XA-OFF", "prereview_passed")
    assert len(_outbox(engine)) == 1  # nothing queued for a disabled subscriber
    app.state.webhooks.run_once()
    [dead] = events(world, status="dead")
    assert dead["last_error"] == "the subscriber is disabled"
    assert_problem(
        world.client.post(f"{EVENTS}/{dead['id']}/replay", headers=world.admin_headers), 409
    )
    assert receiver.all() == []


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_an_event_commits_with_its_audit_entry_or_not_at_all(world, engine, outcome, receiver):  # noqa: F811
    subscribe(world, world_key_id(world), receiver.url)
    make_record(world.client, world.integrator_headers, number="XA-TX", status="submitted")
    with Session(engine) as s:
        before = s.scalar(select(func.count()).select_from(WebhookEvent))
        audit.append(s, "staff:admin", "record.updated", "record:XA-TX", {"fields": ["mobile"]})
        s.commit() if outcome == "commit" else s.rollback()
    with Session(engine) as s:
        after = s.scalar(select(func.count()).select_from(WebhookEvent))
        entries = s.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "record.updated")
        )
    assert (after - before, entries) == ((1, 1) if outcome == "commit" else (0, 0))


def test_unmapped_actions_make_no_events(world, engine, receiver: WebhookReceiver):  # noqa: F811
    subscribe(world, world_key_id(world), receiver.url)
    make_record(world.client, world.integrator_headers, number="XA-QUIET", status="submitted")
    with Session(engine) as s:
        audit.append(s, "staff:admin", "staff.login", "record:XA-QUIET", {})
        audit.append(s, "system", "code.counter_skipped", "record:XA-QUIET", {})
        s.commit()
    assert [e.type for e in _outbox(engine)] == ["record.created"]


def test_a_url_the_client_cannot_use_makes_a_dead_letter_not_a_dead_worker(world, app, engine):
    """A row from before the host check (written here directly): the worker goes on."""
    created = subscribe(world, world_key_id(world), "https://approval.example.cn/hook")
    with Session(engine) as s:
        row = s.get(WebhookSubscriber, created["id"])
        row.url = "http://a..b/hook"
        s.commit()
    make_record(world.client, world.integrator_headers, number="XA-BADURL", status="submitted")
    assert app.state.webhooks.run_once() == 1
    [dead] = events(world, status="dead")
    assert "cannot be used" in dead["last_error"]
