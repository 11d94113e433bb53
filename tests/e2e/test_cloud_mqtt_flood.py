"""One locker account floods the cloud's event intake (real Mosquitto): another locker's event
is still applied promptly, the junk is counted rather than stored row by row, and the flooding
locker gets an alarm and, once its flood is over, a full sync (so an honest cabinet would send
again what was refused). bench/flood_bench.py measures the delay; this checks the facts."""

import json
import time
import uuid
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session, func, select

from cloud_api.models.monitoring import Alarm, LockerEventRecord
from tests.e2e.conftest import LOCKER_ID
from tests.support.cabinet import locker_body
from tests.support.mqtt_clients import FakeLocker
from tests.support.waiting import wait_until
from xinbao.contract import Channel, LockerEvent, topic

pytestmark = pytest.mark.slow

FLOODER = "XA-E2E-FLOOD"
JUNK = 3000
RATE, BURST = 20.0, 40


def _junk(seq: int) -> bytes:
    return LockerEvent(
        event_id=uuid.uuid4(),
        seq=seq,
        ts=datetime.now(UTC),
        type="door_closed",
        compartment=1,
        data={"junk": "x" * 200},
    ).to_bytes()


def _stored(cloud, locker_id: str) -> int:
    with Session(cloud.engine) as s:
        return s.exec(
            select(func.count())
            .select_from(LockerEventRecord)
            .where(LockerEventRecord.locker_id == locker_id)
        ).one()


def _flood_alarm(cloud) -> Alarm | None:
    with Session(cloud.engine) as s:
        return s.exec(
            select(Alarm).where(Alarm.locker_id == FLOODER, Alarm.kind == "flooding")
        ).first()


def test_a_flood_from_one_locker_does_not_hold_up_another(make_cloud, db_url, broker):
    cloud = make_cloud(db_url, broker.url(), mqtt_locker_rate=RATE, mqtt_locker_burst=BURST)
    r = cloud.client.post("/api/v1/lockers", json=locker_body(FLOODER), headers=cloud.admin)
    assert r.status_code == 201, r.text
    victim = FakeLocker(broker.port, LOCKER_ID, cloud.locker_key())
    commands: list[bytes] = []
    flooder = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=FLOODER, protocol=mqtt.MQTTv311
    )
    flooder.on_message = lambda c, u, m: commands.append(bytes(m.payload))
    flooder.max_inflight_messages_set(200)
    flooder.connect("127.0.0.1", broker.port)
    flooder.loop_start()
    try:
        flooder.subscribe(topic(FLOODER, Channel.COMMANDS), qos=1)
        started = time.monotonic()
        infos = [
            flooder.publish(topic(FLOODER, Channel.EVENTS), _junk(seq), qos=1)
            for seq in range(1, JUNK + 1)
        ]
        for info in infos:
            info.wait_for_publish(30)
        flood_s = time.monotonic() - started
        # The broker holds the whole flood; the cloud is somewhere in it. Now a real event.
        sent = time.monotonic()
        event = victim.event("door_closed", 1)
        row = wait_until(
            lambda: cloud.stored_event(event.event_id), 5, "the other locker's event"
        )
        delay = time.monotonic() - sent
        with Session(cloud.engine) as s:
            ahead = s.exec(
                select(func.count())
                .select_from(LockerEventRecord)
                .where(LockerEventRecord.locker_id == FLOODER, LockerEventRecord.id < row.id)
            ).one()
        # Order, not the clock: only what the flooder's budget let in can have been applied
        # before the other locker's event, never the thousands it sent.
        assert ahead <= BURST + RATE * (flood_s + delay) + 1, (ahead, flood_s, delay)

        # Junk summarised: every junk message is either a stored row (within the budget) or
        # counted in the flooding alarm, and almost all of them were only counted.
        def accounted() -> bool:
            alarm = _flood_alarm(cloud)
            return alarm is not None and _stored(cloud, FLOODER) + alarm.data["refused"] == JUNK

        wait_until(accounted, 30, "every junk message stored or counted")
        stored = _stored(cloud, FLOODER)
        assert stored <= BURST + RATE * (time.monotonic() - started) + 1, stored
        alarm = _flood_alarm(cloud)
        assert alarm.cleared_at is None and alarm.data["refused"] >= JUNK - stored
        listed = cloud.get(f"/api/v1/alarms?locker_id={FLOODER}").json()
        assert [a["kind"] for a in listed] == ["flooding"]
        # The flood over, the flooder gets a full sync: its events_upto mark is what an honest
        # cabinet uses to send again what was refused.
        wait_until(
            lambda: any(json.loads(c)["type"] == "sync_reservations" for c in commands),
            30,
            "a full sync to the flooder after its flood",
        )
    finally:
        flooder.loop_stop()
        flooder.disconnect()
        victim.close()
