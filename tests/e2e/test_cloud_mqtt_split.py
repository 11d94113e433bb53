"""Two API processes (two bridges) on one PostgreSQL split the lockers' events through the
shared subscription; every event is stored and applied exactly once."""

import pytest
from sqlmodel import Session, func, select

from cloud_api.models.audit import AuditEntry
from cloud_api.models.monitoring import LockerEventRecord
from tests.e2e.conftest import LOCKER_ID
from tests.support.mqtt_clients import FakeLocker
from tests.support.waiting import wait_until
from xinbao.contract import Channel

pytestmark = pytest.mark.slow


def test_two_bridges_share_200_events(make_cloud, pg_url, broker):
    # No per-locker ingest budget: this fake locker publishes its 220 messages back to back and,
    # unlike a controller, does not send again what a budget refused (test_cloud_mqtt_flood).
    a = make_cloud(pg_url, broker.url(), "cloud-a", mqtt_locker_rate=0)
    b = make_cloud(pg_url, broker.url(), "cloud-b", first=False, mqtt_locker_rate=0)
    assert a.bridge.shared is True and b.bridge.shared is True  # Mosquitto honours $share
    locker = FakeLocker(broker.port, LOCKER_ID, a.locker_key())
    try:
        sent = []
        for i in range(200):
            # code_refused: each application appends exactly one audit entry.
            ev = locker.event("code_refused", None, reason="wrong", failures=i % 5)
            sent.append(ev)
            if i % 10 == 0:  # a redelivery, as after a lost PUBACK
                locker.publish(Channel.EVENTS, ev.to_bytes())

        def applied() -> int:
            # Stored is not enough: an event may wait a moment for its predecessor (seq
            # order), applied by whichever process applies that one.
            with Session(a.engine) as s:
                return s.exec(
                    select(func.count())
                    .select_from(LockerEventRecord)
                    .where(LockerEventRecord.outcome != "pending")
                ).one()

        wait_until(lambda: applied() >= 200, 60, "200 events applied")
    finally:
        locker.close()
    with Session(a.engine) as s:
        by = dict(
            s.exec(
                select(LockerEventRecord.received_by, func.count()).group_by(
                    LockerEventRecord.received_by
                )
            ).all()
        )
        ids = s.exec(select(LockerEventRecord.event_id)).all()
        audited = s.exec(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "locker.code_refused")
        ).one()
    assert sorted(ids) == sorted(str(e.event_id) for e in sent)
    assert set(by) == {"cloud-a", "cloud-b"} and sum(by.values()) == 200
    assert audited == 200
    r = a.get("/api/v1/audit/verify")
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
