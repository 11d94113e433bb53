"""Helpers for the lost-code tests: what a cabinet sends (through the cloud's real ingest,
without a broker), and what the cloud then holds."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, select

from cloud_api.models.audit import AuditEntry
from cloud_api.models.code_reissue import CodeReissue
from cloud_api.models.handover import Handover
from cloud_api.mqtt.ingest import Ingest, Ingested
from cloud_api.sms.models import SmsMessage
from xinbao.codes import derive_locker_key
from xinbao.contract import LockerEvent
from xinbao.lost_code import request_data


@dataclass
class Cabinet:
    """One locker's side of the MQTT link, feeding the cloud's ingest directly."""

    ingest: Ingest
    master: bytes
    locker_id: str
    clock: object
    seq: int = 0
    sent: list[LockerEvent] = field(default_factory=list)

    def send(self, data: dict, *, ts: datetime | None = None, compartment=None) -> Ingested:
        self.seq += 1
        event = LockerEvent(
            event_id=uuid.uuid4(),
            seq=self.seq,
            ts=ts or self.clock.now,
            type="code_reissue_requested",
            compartment=compartment,
            data=data,
        )
        self.sent.append(event)
        return self.ingest.event(self.locker_id, event.to_bytes())

    def ask(self, number: str, last4: str, *, key_of: str | None = None, **kw) -> Ingested:
        """What the kiosk sends for what was typed; ``key_of``: digest with another locker's
        key (a cabinet that stole it)."""
        key = derive_locker_key(self.master, key_of or self.locker_id)
        return self.send(request_data(key, number, last4), **kw)


def cabinet(app, engine, clock, locker_id: str) -> Cabinet:
    ingest = Ingest(engine, app.state.policy, "test-ingest", clock)
    return Cabinet(ingest, app.state.settings.master_key, locker_id, clock)


def handover(engine, handover_id: int) -> Handover:
    with Session(engine) as s:
        return s.get(Handover, handover_id)


def audit(engine, action: str) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


def reissue_rows(engine) -> list[CodeReissue]:
    with Session(engine) as s:
        return list(s.exec(select(CodeReissue).order_by(CodeReissue.id)).all())


def sms(engine, handover_id: int) -> list[SmsMessage]:
    with Session(engine) as s:
        query = select(SmsMessage).where(SmsMessage.handover_id == handover_id)
        return list(s.exec(query.order_by(SmsMessage.id)).all())


def event_outcome(engine, event: LockerEvent) -> str:
    from cloud_api.models.monitoring import LockerEventRecord

    with Session(engine) as s:
        query = select(LockerEventRecord.outcome).where(
            LockerEventRecord.event_id == str(event.event_id)
        )
        return s.exec(query).one()
