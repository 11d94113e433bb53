"""Idempotency-Key on creates: concurrent repeats and retries after a lost answer get the
first answer, and exactly one thing is created. Over HTTP, on SQLite and PostgreSQL."""

import threading

from sqlalchemy import func, select
from sqlmodel import Session

from cloud_api.models.handover import Handover
from cloud_api.models.idempotency import IdempotentRequest
from cloud_api.models.locker import Compartment
from cloud_api.models.record import ApprovalRecord
from cloud_api.services import audit
from cloud_api.sms.models import SmsMessage
from tests.cloud_api.conftest import make_record
from tests.cloud_api.helpers import assert_problem

RECORD = {
    "application_number": "XA-IDEM-1",
    "applicant_name": "李华",
    "mobile": "+8613800138000",
    "matter_name": "营业执照",
}
THREADS = 6


def _at_once(n, send):
    """``send(i)`` from n threads released together; the responses in thread order."""
    barrier = threading.Barrier(n)
    responses: list = [None] * n

    def run(i):
        barrier.wait()
        responses[i] = send(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return responses


def _count(engine, model, *where) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def test_concurrent_dropoffs_with_one_key_reserve_once(world, engine):
    make_record(world.client, world.integrator_headers)
    headers = world.integrator_headers | {"Idempotency-Key": "dropoff-race-1"}
    body = {"application_number": "XA-2025-0001", "locker_id": world.locker_id}

    url = "/api/v1/handovers/dropoff"
    responses = _at_once(THREADS, lambda _: world.client.post(url, json=body, headers=headers))
    assert [r.status_code for r in responses] == [201] * THREADS, [r.text for r in responses]
    assert len({r.text for r in responses}) == 1  # the same answer, byte for byte
    handover_id = responses[0].json()["id"]
    assert _count(engine, Handover) == 1
    assert _count(engine, Compartment, Compartment.state != "free") == 1
    assert _count(engine, SmsMessage, SmsMessage.handover_id == handover_id) == 1
    assert _count(engine, IdempotentRequest) == 1
    with Session(engine) as s:
        assert audit.verify(s).ok


def test_concurrent_record_creates_with_one_key_answer_alike(world, engine):
    headers = world.integrator_headers | {"Idempotency-Key": "record-race-1"}
    responses = _at_once(
        THREADS, lambda _: world.client.post("/api/v1/records", json=RECORD, headers=headers)
    )
    assert [r.status_code for r in responses] == [201] * THREADS, [r.text for r in responses]
    assert len({r.text for r in responses}) == 1
    assert _count(engine, ApprovalRecord) == 1
    assert _count(engine, IdempotentRequest) == 1


def test_concurrent_record_creates_with_different_keys(world, engine):
    # Different keys, same record: one creates (201), the others see it exist (200).
    responses = _at_once(
        THREADS,
        lambda i: world.client.post(
            "/api/v1/records",
            json=RECORD,
            headers=world.integrator_headers | {"Idempotency-Key": f"record-key-{i}"},
        ),
    )
    assert sorted(r.status_code for r in responses) == [200] * (THREADS - 1) + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert _count(engine, ApprovalRecord) == 1
    assert _count(engine, IdempotentRequest) == THREADS


def test_retry_after_a_lost_answer_replays_it(world, engine):
    make_record(world.client, world.integrator_headers)
    headers = world.integrator_headers | {"Idempotency-Key": "lost-answer-1"}
    body = {"application_number": "XA-2025-0001", "locker_id": world.locker_id}
    # The first answer never reaches the client (a proxy dropped it); it retries.
    world.client.post("/api/v1/handovers/dropoff", json=body, headers=headers)
    retry = world.client.post("/api/v1/handovers/dropoff", json=body, headers=headers)
    assert retry.status_code == 201, retry.text
    assert _count(engine, Handover) == 1
    assert retry.json()["id"] == world.client.get(
        f"/api/v1/handovers/{retry.json()['id']}", headers=world.integrator_headers
    ).json()["id"]
    # Without the key the same request is a second reservation attempt, refused as such.
    again = world.client.post(
        "/api/v1/handovers/dropoff", json=body, headers=world.integrator_headers
    )
    assert "already has an active dropoff" in assert_problem(again, 409)["detail"]


def test_a_create_that_fails_midway_stores_nothing(world, engine, monkeypatch):
    """The answer is written with the create, in one transaction: a crash after the
    reservation but before the answer leaves neither, and the retry reserves once."""
    make_record(world.client, world.integrator_headers)
    headers = world.integrator_headers | {"Idempotency-Key": "crash-1"}
    body = {"application_number": "XA-2025-0001", "locker_id": world.locker_id}
    from cloud_api.services import handovers

    real_public = handovers.public
    crashes = []

    def crash_once(session, handover):
        if not crashes:
            crashes.append(handover.id)
            raise RuntimeError("the process died here")
        return real_public(session, handover)

    monkeypatch.setattr(handovers, "public", crash_once)
    crashed = world.client.post("/api/v1/handovers/dropoff", json=body, headers=headers)
    assert crashed.status_code == 500 and crashes
    assert _count(engine, Handover) == 0
    assert _count(engine, IdempotentRequest) == 0
    assert _count(engine, Compartment, Compartment.state != "free") == 0

    retry = world.client.post("/api/v1/handovers/dropoff", json=body, headers=headers)
    assert retry.status_code == 201, retry.text
    assert _count(engine, Handover) == 1
    assert _count(engine, IdempotentRequest) == 1


def test_a_refused_create_is_not_stored_and_can_be_retried(world, engine):
    make_record(world.client, world.integrator_headers, status="submitted")
    headers = world.integrator_headers | {"Idempotency-Key": "too-early-1"}
    body = {"application_number": "XA-2025-0001", "locker_id": world.locker_id}
    assert_problem(world.client.post("/api/v1/handovers/dropoff", json=body, headers=headers), 409)
    assert _count(engine, IdempotentRequest) == 0
    r = world.client.post(
        "/api/v1/records/XA-2025-0001/transitions",
        json={"status": "prereview_passed"},
        headers=world.integrator_headers,
    )
    assert r.status_code == 200, r.text
    retry = world.client.post("/api/v1/handovers/dropoff", json=body, headers=headers)
    assert retry.status_code == 201, retry.text
