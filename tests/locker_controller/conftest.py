"""Fixtures for the controller: simulator over a pty, a real Mosquitto, the controller as a
child process, and a paho client playing the cloud.

Each fixture stops what it starts (the suite's health check fails tests that leak threads or
child processes).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulator import BoardSpec, Simulator
from tests.support.cabinet import ControllerProcess
from tests.support.mosquitto import Mosquitto, available
from tests.support.waiting import free_port, wait_until
from xinbao.codes import derive_locker_key
from xinbao.contract import (
    CommandReply,
    CommandType,
    LockerEvent,
    PingPayload,
    sign_command,
)

MASTER_HEX = "11" * 32
LOCKER_ID = "XA-TEST-1"
LOCKER_KEY = derive_locker_key(bytes.fromhex(MASTER_HEX), LOCKER_ID)


# --- simulator ------------------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """Two kerong-cu16 boards (1 and 2), IR sensors on, fast (no wire pacing)."""
    boards = [
        BoardSpec(protocol="kerong-cu16", address=1, channels=16, pulse_ms=100),
        BoardSpec(protocol="kerong-cu16", address=2, channels=16, pulse_ms=100),
    ]
    with Simulator(boards, wire_timing=False, reply_delay=0.001) as s:
        yield s


def controller_toml(
    data_dir: Path,
    port: str,
    *,
    kiosk_port: int,
    mqtt_port: int | None = None,
    extra: str = "",
    lockout_base_s: float = 1.0,
    protocol: str = "kerong-cu16",
    channels: int = 16,
    poll_interval_s: float = 0.05,
    debounce_polls: int = 2,
) -> str:
    mqtt_section = (
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\nusername = "{LOCKER_ID}"\n'
        f'password = "pw"\ntelemetry_interval_s = 1.0\nreconnect_max_s = 2\n'
        if mqtt_port
        else ""
    )
    compartments = "".join(
        f'[[compartments]]\nnumber = {n}\nsize = "{"S" if n <= 2 else "M"}"\n'
        f"board = {1 if n <= 4 else 2}\nchannel = {(n - 1) % 4 + 1}\n\n"
        for n in range(1, 9)
    )
    return f"""locker_id = "{LOCKER_ID}"
master_key_hex = "{MASTER_HEX}"
data_dir = "{data_dir}"
poll_interval_s = {poll_interval_s}
debounce_polls = {debounce_polls}
door_left_open_after_s = 2.0
lockout_base_s = {lockout_base_s}
{extra}
{mqtt_section}
[kiosk]
host = "127.0.0.1"
port = {kiosk_port}

[[buses]]
port = "{port}"
protocol = "{protocol}"
timeout_s = 0.15
  [[buses.boards]]
  address = 1
  channels = {channels}
  pulse_ms = 100
  [[buses.boards]]
  address = 2
  channels = {channels}
  pulse_ms = 100

{compartments}"""


# --- mosquitto ------------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if not available():
        pytest.fail("mosquitto is not installed: apt-get install -y mosquitto (.ci/run does)")
    b = Mosquitto(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


def greeting() -> bytes:
    """What the cloud sends a locker it sees ``online`` (the real one sends a full sync): a
    signed command, which tells the controller the cloud is listening, so it sends its
    outbox (locker_controller/outbox.py)."""
    return sign_command(LOCKER_KEY, CommandType.PING, PingPayload()).to_bytes()


class Cloud:
    """A paho client standing in for the cloud: records events/replies, sends commands, and
    greets the locker whenever it says ``online`` (``greets=False``: a cloud not there)."""

    def __init__(self, port: int, client_id: str = "test-cloud", greets: bool = True) -> None:
        self.greets = greets
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        # A persistent session, so QoS 1 events published while this client is briefly
        # disconnected (broker restart) are kept for it.
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(0.2, 1)
        self.connected = threading.Event()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self.connected.is_set, 10, "the cloud client to connect")

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        client.subscribe(f"xinbao/v1/lockers/{LOCKER_ID}/#", qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
        if self.greets and msg.topic.endswith("/presence") and msg.payload == b"online":
            # On paho's own thread: publish, never wait for the PUBACK here.
            client.publish(f"xinbao/v1/lockers/{LOCKER_ID}/commands", greeting(), qos=1)

    def on(self, leaf: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith("/" + leaf)]

    def events(self) -> list[LockerEvent]:
        return [LockerEvent.from_bytes(p) for p in self.on("events")]

    def event_types(self) -> list[str]:
        return [e.type.value for e in self.events()]

    def replies(self) -> list[CommandReply]:
        return [CommandReply.from_bytes(p) for p in self.on("replies")]

    def reply_to(self, request_id, timeout: float = 10.0) -> CommandReply:
        return wait_until(
            lambda: next((r for r in self.replies() if r.request_id == request_id), None),
            timeout,
            f"a reply to {request_id}",
        )

    def send(self, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(
            f"xinbao/v1/lockers/{LOCKER_ID}/commands", payload, qos=1, retain=retain
        )
        info.wait_for_publish(5)

    def command(self, type_: CommandType, payload, **kw):
        cmd = sign_command(LOCKER_KEY, type_, payload, **kw)
        self.send(cmd.to_bytes())
        return cmd

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def cloud(broker: Mosquitto) -> Iterator[Cloud]:
    c = Cloud(broker.port)
    yield c
    c.close()


# --- the controller as a child process ------------------------------------------------------


@pytest.fixture
def make_controller(tmp_path: Path, sim: Simulator):
    started: list[ControllerProcess] = []

    def make(
        mqtt_port: int | None = None,
        extra: str = "",
        lockout_base_s: float = 1.0,
        protocol: str = "kerong-cu16",
        **board_args,
    ) -> ControllerProcess:
        dev = sim.start_pty() if not hasattr(sim, "_test_pty") else sim._test_pty
        sim._test_pty = dev
        kiosk_port = free_port()
        path = tmp_path / "controller.toml"
        path.write_text(
            controller_toml(
                tmp_path / "data",
                dev,
                kiosk_port=kiosk_port,
                mqtt_port=mqtt_port,
                extra=extra,
                lockout_base_s=lockout_base_s,
                protocol=protocol,
                **board_args,
            )
        )
        proc = ControllerProcess(path, kiosk_port, tmp_path / "controller.log")
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


def db_events(data_dir: Path) -> list[dict]:
    """Rows still in the controller's outbox (read-only, straight from SQLite); ``acked``: the
    broker has it, kept until the cloud confirms."""
    import sqlite3

    db = sqlite3.connect(f"file:{data_dir / 'controller.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT seq, type, compartment, data, acked_at FROM outbox ORDER BY seq")
        return [
            {
                "seq": r[0],
                "type": r[1],
                "compartment": r[2],
                "data": json.loads(r[3]),
                "acked": r[4] is not None,
            }
            for r in rows
        ]
    finally:
        db.close()
