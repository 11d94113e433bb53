"""Small helpers shared by the SMS tests."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.sms.models import SmsMessage
from cloud_api.sms.outbox import enqueue_sms
from xinbao.codes import code_for, derive_locker_key

PICKUP = {"locker_name": "港务区A柜", "expires_at": "2025-03-05T10:00:00+00:00"}
TO = "+8613800138000"


def add_pickup(engine, key: str = "h1", *, counter: int = 7, to: str = TO) -> int:
    with Session(engine) as session:
        message = enqueue_sms(
            session,
            dedupe_key=key,
            to_number=to,
            template="pickup_code",
            params=PICKUP,
            locker_id="XA-001",
            code_counter=counter,
            handover_id=1,
        )
        session.commit()
        return message.id


def row(engine, message_id: int) -> SmsMessage:
    with Session(engine) as session:
        message = session.get(SmsMessage, message_id)
        session.expunge(message)
        return message


def rows(engine) -> list[SmsMessage]:
    with Session(engine) as session:
        found = list(session.scalars(select(SmsMessage).order_by(SmsMessage.id)))
        session.expunge_all()
        return found


def expected_code(master: bytes, counter: int = 7, digits: int = 8) -> str:
    return code_for(derive_locker_key(master, "XA-001"), counter, digits)
