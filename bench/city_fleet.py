"""A city's lockers as lightweight MQTT clients, for bench/city_bench.py.

One asyncio loop holds every connection (paho's thread per client would not scale to 1,353
in one process). Each client speaks just enough MQTT 3.1.1 to be a locker towards the cloud:
CONNECT with ``offline`` as its retained last will, ``online`` retained on connect, its own
``commands`` subscribed and each command answered ``ok`` on ``replies`` (so the cloud's full
syncs are answered as a real cabinet's are), a telemetry heartbeat every ``interval`` seconds
(QoS 0, first one at a random moment so they spread out) and PINGREQ to keep the link.

    python bench/city_fleet.py --port 1883 --count 1353 --prefix XA-CITY --first 2

prints ``ready N`` once all N are connected and subscribed, then runs until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import sys
import time
from datetime import UTC, datetime

KEEPALIVE_S = 60
CONNECT_AT_ONCE = 50  # connections opened in parallel: the broker accepts them in batches


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _length(len(body)) + body


def connect_packet(client_id: str, will_topic: str) -> bytes:
    # clean session | will | will QoS 1 | will retain
    flags = 0x02 | 0x04 | 0x08 | 0x20
    head = _text("MQTT") + bytes([4, flags]) + struct.pack("!H", KEEPALIVE_S)
    return _packet(0x10, head + _text(client_id) + _text(will_topic) + _text("offline"))


def publish_packet(topic: str, payload: bytes, qos: int = 0, retain: bool = False, mid=0):
    header = 0x30 | (qos << 1) | int(retain)
    body = _text(topic) + (struct.pack("!H", mid) if qos else b"") + payload
    return _packet(header, body)


class Locker:
    def __init__(self, locker_id: str, port: int, interval: float) -> None:
        self.id = locker_id
        self.port = port
        self.interval = interval
        self.root = f"xinbao/v1/lockers/{locker_id}"
        self.started = time.monotonic()
        self.mid = 0
        self.replied = 0
        self.telemetry_sent = 0

    def _next_mid(self) -> int:
        self.mid = self.mid % 65535 + 1
        return self.mid

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(connect_packet(self.id, f"{self.root}/presence"))
        kind, body = await self._read()
        if kind >> 4 != 2 or body[1] != 0:
            raise ConnectionError(f"{self.id}: CONNACK refused ({body!r})")
        sub = struct.pack("!H", self._next_mid()) + _text(f"{self.root}/commands") + b"\x01"
        self.writer.write(_packet(0x82, sub))
        self.writer.write(
            publish_packet(f"{self.root}/presence", b"online", 1, True, self._next_mid())
        )
        await self.writer.drain()

    async def _read(self) -> tuple[int, bytes]:
        first = (await self.reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await self.reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, await self.reader.readexactly(length)

    async def listen(self) -> None:
        while True:
            kind, body = await self._read()
            if kind >> 4 != 3:
                continue  # PUBACK, SUBACK, PINGRESP
            qos = (kind >> 1) & 3
            topic_len = struct.unpack("!H", body[:2])[0]
            at = 2 + topic_len
            if qos:
                self.writer.write(_packet(0x40, body[at : at + 2]))
                at += 2
            try:
                request_id = json.loads(body[at:])["request_id"]
            except (ValueError, KeyError, TypeError):
                continue
            reply = json.dumps({"request_id": request_id, "ok": True, "result": {}}).encode()
            self.writer.write(
                publish_packet(f"{self.root}/replies", reply, 1, False, self._next_mid())
            )
            self.replied += 1

    async def heartbeat(self) -> None:
        await asyncio.sleep(random.uniform(0, self.interval))
        while True:
            telemetry = {
                "ts": datetime.now(UTC).isoformat(),
                "version": "fleet-1",
                "uptime_s": round(time.monotonic() - self.started, 1),
                "outbox_depth": 0,
                "boards": [],
            }
            self.writer.write(
                publish_packet(f"{self.root}/telemetry", json.dumps(telemetry).encode())
            )
            self.writer.write(_packet(0xC0, b""))  # PINGREQ as well: keepalive
            self.telemetry_sent += 1
            await self.writer.drain()
            await asyncio.sleep(self.interval)


async def run(port: int, ids: list[str], interval: float) -> None:
    lockers = [Locker(i, port, interval) for i in ids]
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def start(locker: Locker) -> None:
        async with gate:
            await locker.connect()

    await asyncio.gather(*(start(x) for x in lockers))
    tasks = [asyncio.create_task(x.listen()) for x in lockers]
    tasks += [asyncio.create_task(x.heartbeat()) for x in lockers]
    print(f"ready {len(lockers)}", flush=True)
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    done, _ = await asyncio.wait([*tasks, stdin_closed], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stdin_closed and task.exception() is not None:
            raise task.exception()
    replied = sum(x.replied for x in lockers)
    sent = sum(x.telemetry_sent for x in lockers)
    print(f"done: {sent} telemetry messages, {replied} commands answered", flush=True)
    for task in tasks:
        task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1353)
    parser.add_argument("--prefix", default="XA-CITY")
    parser.add_argument("--first", type=int, default=2)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between heartbeats")
    args = parser.parse_args()
    ids = [f"{args.prefix}-{n:04d}" for n in range(args.first, args.first + args.count)]
    asyncio.run(run(args.port, ids, args.interval))


if __name__ == "__main__":
    main()
