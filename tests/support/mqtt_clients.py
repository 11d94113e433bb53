"""``FakeLocker``: a paho client that plays one locker towards the cloud.

It publishes events, presence, telemetry and replies exactly as the contract says, and keeps
the commands it receives (verified with the locker key when the test gives one).
"""

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.waiting import wait_until
from xinbao.contract import (
    PRESENCE_OFFLINE,
    PRESENCE_ONLINE,
    Channel,
    Command,
    CommandReply,
    LockerEvent,
    Telemetry,
    topic,
    verify_command,
)


class FakeLocker:
    def __init__(self, port: int, locker_id: str, key: bytes | None = None) -> None:
        self.locker_id = locker_id
        self.key = key
        self.seq = 0
        self.commands: list[Command] = []
        # Called on paho's thread for each verified command; a CommandReply it returns is
        # published as the answer (None: stay silent, as a locker that is busy or gone).
        self.responder: Callable[[Command], CommandReply | None] | None = None
        self.raw_commands: list[bytes] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"fake-{locker_id}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self.client.will_set(topic(locker_id, Channel.PRESENCE), PRESENCE_OFFLINE, 1, True)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self._subscribed = threading.Event()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, 10, f"{locker_id} to connect")

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        client.subscribe(topic(self.locker_id, Channel.COMMANDS), qos=1)
        self._subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        raw = bytes(msg.payload)
        if self.key is not None:
            command = verify_command(self.key, raw, retained=msg.retain)
        else:
            command = Command.model_validate_json(raw)
        with self._lock:
            self.raw_commands.append(raw)
            self.commands.append(command)
        answer = self.responder(command) if self.responder else None
        if answer is not None:
            # No waiting for the PUBACK here: this is paho's own thread.
            client.publish(topic(self.locker_id, Channel.REPLIES), answer.to_bytes(), qos=1)

    def received(self, type_: str | None = None) -> list[Command]:
        with self._lock:
            return [c for c in self.commands if type_ is None or c.type.value == type_]

    def publish(self, channel: Channel, payload: bytes, qos: int = 1, retain: bool = False):
        info = self.client.publish(topic(self.locker_id, channel), payload, qos=qos, retain=retain)
        info.wait_for_publish(5)
        return info

    def publish_raw(self, topic_name: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic_name, payload, qos=qos).wait_for_publish(5)

    def event(self, type_: str, compartment: int | None = None, **data: Any) -> LockerEvent:
        self.seq += 1
        ev = LockerEvent(
            event_id=uuid.uuid4(),
            seq=self.seq,
            ts=datetime.now(UTC),
            type=type_,
            compartment=compartment,
            data=data,
        )
        self.publish(Channel.EVENTS, ev.to_bytes())
        return ev

    def online(self) -> None:
        self.publish(Channel.PRESENCE, PRESENCE_ONLINE, retain=True)

    def offline(self) -> None:
        self.publish(Channel.PRESENCE, PRESENCE_OFFLINE, retain=True)

    def telemetry(self, outbox_depth: int = 0, boards: list[dict] | None = None) -> None:
        report = Telemetry(
            ts=datetime.now(UTC),
            version="fake-1",
            uptime_s=12.5,
            outbox_depth=outbox_depth,
            boards=boards or [],
        )
        self.publish(Channel.TELEMETRY, report.to_bytes(), qos=0)

    def reply(self, request_id, ok: bool = True, result=None, error=None) -> None:
        answer = CommandReply(request_id=request_id, ok=ok, result=result, error=error)
        self.publish(Channel.REPLIES, answer.to_bytes())

    def close(self) -> None:
        # Clear the retained presence so the next test's cloud does not see it.
        self.client.publish(topic(self.locker_id, Channel.PRESENCE), b"", qos=1, retain=True)
        self.client.disconnect()
        self.client.loop_stop()
