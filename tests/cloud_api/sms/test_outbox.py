from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from cloud_api.sms.errors import SmsInputError
from cloud_api.sms.models import SmsMessage, SmsMessagePublic
from cloud_api.sms.outbox import enqueue_sms, normalise_number

PICKUP = {"locker_name": "港务区A柜", "expires_at": "2025-03-05T10:00:00+00:00"}


def _count(engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(SmsMessage))


def _enqueue(session, key="handover:1:pickup_code:c7", **overrides):
    fields = dict(
        dedupe_key=key,
        to_number="+86 138-0013-8000",
        template="pickup_code",
        params=PICKUP,
        locker_id="XA-001",
        code_counter=7,
        handover_id=1,
    )
    fields.update(overrides)
    return enqueue_sms(session, **fields)


def test_enqueue_adds_to_callers_transaction_only(engine):
    with Session(engine) as session:
        message = _enqueue(session)
        assert message.to_number == "+8613800138000"
        session.rollback()
    assert _count(engine) == 0
    with Session(engine) as session:
        _enqueue(session)
        session.commit()
    assert _count(engine) == 1


def test_enqueue_is_idempotent_on_dedupe_key(engine):
    with Session(engine) as session:
        first = _enqueue(session)
        again = _enqueue(session)  # same transaction, not yet flushed
        assert again is first
        session.commit()
        first_id = first.id
    with Session(engine) as session:
        # A later transaction, different params: still the first row, unchanged.
        later = _enqueue(session, params={**PICKUP, "locker_name": "other"})
        assert later.id == first_id and later.params["locker_name"] == "港务区A柜"
        session.commit()
    assert _count(engine) == 1


def test_stored_row_is_pending_with_aware_times(engine):
    with Session(engine) as session:
        _enqueue(session, params={**PICKUP, "expires_at": datetime(2025, 3, 5, 10, tzinfo=UTC)})
        session.commit()
    with Session(engine) as session:
        row = session.exec(select(SmsMessage)).scalars().one()
        public = SmsMessagePublic.model_validate(row)
    assert public.status == "pending" and public.attempts == 0
    assert public.next_attempt_at.tzinfo is not None
    assert row.params["expires_at"] == "2025-03-05T10:00:00+00:00"


@pytest.mark.parametrize(
    "number, message",
    [
        ("13800138000", "international"),
        ("+86 12800138000", "Chinese mobile"),
        ("+86 2988888888", "Chinese mobile"),
        ("+1234", "international"),
        ("+1 (555) 0100", "international"),
        ("+0123456789", "international"),
        (13800138000, "must be text"),
    ],
)
def test_bad_numbers_are_refused_and_nothing_stored(engine, number, message):
    with Session(engine) as session:
        with pytest.raises(SmsInputError, match=message):
            _enqueue(session, to_number=number)
        session.commit()
    assert _count(engine) == 0


def test_numbers_that_pass():
    assert normalise_number("+86 139 1234 5678") == "+8613912345678"
    assert normalise_number("+447700900123") == "+447700900123"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"code_counter": None}, "give locker_id and code_counter"),
        ({"locker_id": None}, "give locker_id and code_counter"),
        ({"code_counter": -1}, "0 or more"),
        ({"template": "nope"}, "unknown SMS template"),
        ({"params": {"locker_name": "A"}}, "needs params: expires_at"),
        ({"params": {**PICKUP, "code": "12345678"}}, "must not contain the code"),
        ({"dedupe_key": ""}, "dedupe_key"),
        ({"dedupe_key": "has space"}, "dedupe_key"),
    ],
)
def test_bad_enqueue_is_refused(engine, overrides, message):
    with Session(engine) as session:
        with pytest.raises(SmsInputError, match=message):
            _enqueue(session, **overrides)
        session.commit()
    assert _count(engine) == 0
