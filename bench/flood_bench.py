"""One locker account floods the cloud's event intake: how long does another locker's event wait?

A real Mosquitto, the cloud's MQTT bridge (cloud_api.mqtt.CloudBridge, as in an API process) on
a fresh SQLite (or --database-url PostgreSQL) database with two registered lockers. The flooder
publishes --junk valid but meaningless events at --rate a second (QoS 1, the broker's PUBACK
paces nothing: the issue's attack was 5,000 at 2,135/s); the victim publishes one real event
before the flood (the baseline), one in the middle of it and one just after its last message.
For each, the time from its publish to its row in the database.

    .venv/bin/python bench/flood_bench.py            # with the per-locker budget and turns
    .venv/bin/python bench/flood_bench.py --fifo     # one FIFO, no budget: the code before

``--fifo`` swaps the bridge's intake for a single FIFO queue with no budget, which is what the
bridge had before (a ``queue.Queue`` in arrival order).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlmodel import Session, func, select  # noqa: E402

from cloud_api.core.config import Settings  # noqa: E402
from cloud_api.core.db import make_engine, migrate  # noqa: E402
from cloud_api.models.locker import LockerCreate  # noqa: E402
from cloud_api.models.monitoring import Alarm, LockerEventRecord  # noqa: E402
from cloud_api.mqtt import CloudBridge  # noqa: E402
from cloud_api.services import lockers  # noqa: E402
from tests.support.cabinet import locker_body  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402
from xinbao.contract import Channel, LockerEvent, topic  # noqa: E402

FLOODER, VICTIM = "XA-BENCH-FLOOD", "XA-BENCH-0001"


class FifoIntake:
    """The bridge's queue before fair queuing: arrival order, no budget."""

    def __init__(self) -> None:
        self.rate, self.burst = 0, 0
        self._items: deque = deque()
        self._cond = threading.Condition()
        self.closed = False

    def put(self, key, item) -> bool:
        with self._cond:
            self._items.append(item)
            self._cond.notify()
        return True

    def get(self, timeout: float):
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        self.closed = False

    def qsize(self) -> int:
        return len(self._items)

    def take_refused(self) -> dict:
        return {}


def event(seq: int, junk: bool) -> LockerEvent:
    return LockerEvent(
        event_id=uuid.uuid4(),
        seq=seq,
        ts=datetime.now(UTC),
        type="door_closed",
        compartment=1,
        data={"junk": "x" * 200} if junk else {},
    )


def client(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(200)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def stored(engine, event_id) -> bool:
    with Session(engine) as s:
        return (
            s.exec(
                select(LockerEventRecord.id).where(LockerEventRecord.event_id == str(event_id))
            ).first()
            is not None
        )


def count(engine, locker_id: str) -> int:
    with Session(engine) as s:
        return s.exec(
            select(func.count())
            .select_from(LockerEventRecord)
            .where(LockerEventRecord.locker_id == locker_id)
        ).one()


def flood(port: int, junk: int, rate: float, half, done) -> None:
    """The flooder, in a process of its own (so the cloud's bridge does not share its GIL):
    ``junk`` events paced at ``rate`` a second; ``half`` is set mid-flood, ``done`` once the
    broker acknowledged the last one."""
    payloads = [event(n, True).to_bytes() for n in range(1, junk + 1)]
    flooder = client(port, FLOODER)
    name = topic(FLOODER, Channel.EVENTS)
    started = time.monotonic()
    infos = []
    for n, payload in enumerate(payloads, 1):
        infos.append(flooder.publish(name, payload, qos=1))
        if n == junk // 2:
            half.set()
        ahead = n / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    for info in infos:
        info.wait_for_publish(60)
    done.value = time.monotonic() - started
    flooder.loop_stop()
    flooder.disconnect()


class Victim:
    """Publishes one event at a time and notes how long each took to reach the database."""

    def __init__(self, port: int, engine) -> None:
        self.client = client(port, VICTIM)
        self.engine = engine
        self.seq = 0
        self.results: dict[str, float] = {}
        self._threads: list[threading.Thread] = []

    def send(self, label: str) -> None:
        self.seq += 1
        ev = event(self.seq, junk=False)
        sent = time.monotonic()
        self.client.publish(topic(VICTIM, Channel.EVENTS), ev.to_bytes(), qos=1)

        def watch() -> None:
            while not stored(self.engine, ev.event_id):
                if time.monotonic() - sent > 300:
                    self.results[label] = float("inf")
                    return
                time.sleep(0.01)
            self.results[label] = time.monotonic() - sent

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        self._threads.append(thread)

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="xinbao-flood-"))
    broker = Mosquitto(work / "broker")
    broker.start()
    db_url = args.database_url or f"sqlite:///{work / 'cloud.db'}"
    migrate(db_url)
    engine = make_engine(db_url)
    with Session(engine) as session:
        for locker_id in (FLOODER, VICTIM):
            lockers.register(session, LockerCreate.model_validate(locker_body(locker_id)), "bench")
    settings = Settings(
        demo=True,
        database_url=db_url,
        run_background=False,
        mqtt_url=broker.url(),
        mqtt_client_id="bench-cloud",
        mqtt_shared="on",
    )
    bridge = CloudBridge(settings, engine)
    if args.fifo:
        bridge._queue = FifoIntake()
    bridge.start()
    assert bridge.wait_connected(10), "the bridge did not connect"
    victim = Victim(broker.port, engine)
    half, done = multiprocessing.Event(), multiprocessing.Value("d", 0.0)
    flooder = multiprocessing.Process(
        target=flood, args=(broker.port, args.junk, args.rate, half, done)
    )
    try:
        for _ in range(5):  # the baseline: no flood
            victim.send("baseline")
            victim.wait()
            base = victim.results.pop("baseline")
            victim.results.setdefault("baselines", []).append(base)
        flooder.start()
        half.wait(120)
        started = time.monotonic() - args.junk / 2 / args.rate  # about when it began
        victim.send("mid-flood")
        flooder.join(300)
        flood_s = done.value
        victim.send("after the flood")
        victim.wait()
        # Until the cloud has worked the flood off: every junk message stored or refused.
        refused = 0
        while True:
            with Session(engine) as s:
                alarm = s.exec(select(Alarm).where(Alarm.locker_id == FLOODER)).first()
                refused = alarm.data.get("refused", 0) if alarm else 0
            junk_rows = count(engine, FLOODER)
            if junk_rows + refused >= args.junk or bridge._queue.qsize() == 0 and (
                time.monotonic() - started > flood_s + 15
            ):
                break
            time.sleep(0.05)
        worked_off = time.monotonic() - started
    finally:
        if flooder.is_alive():
            flooder.kill()
        victim.client.loop_stop()
        victim.client.disconnect()
        bridge.stop()
        engine.dispose()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "mode": "fifo, no budget (before)" if args.fifo else "turns + budget (after)",
        "flood": f"{args.junk} events in {flood_s:.2f} s ({args.junk / flood_s:.0f}/s)",
        "baseline latency": statistics.median(victim.results["baselines"]),
        "mid-flood latency": victim.results["mid-flood"],
        "after-flood latency": victim.results["after the flood"],
        "flood worked off after": worked_off,
        "junk rows stored": junk_rows,
        "junk counted (flooding alarm)": refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junk", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=2135.0, help="junk events a second")
    parser.add_argument("--fifo", action="store_true", help="the intake before (one FIFO)")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    # One line per gap or refused round would cost the bridge more than the bench measures.
    logging.basicConfig(level=logging.ERROR)
    result = run(args)
    for name, value in result.items():
        shown = f"{value:.3f} s" if isinstance(value, float) else value
        print(f"{name:32} {shown}")


if __name__ == "__main__":
    main()
