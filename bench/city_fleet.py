"""A city's lockers as lightweight MQTT clients, for bench/city_bench.py.

One asyncio loop holds every connection (paho's thread per client would not scale to 1,353
in one process). Each client speaks just enough MQTT 3.1.1 to be a locker towards the cloud:
CONNECT with ``offline`` as its retained last will, ``online`` retained on connect, its own
``commands`` subscribed and each command answered ``ok`` on ``replies`` (so the cloud's full
syncs are answered as a real cabinet's are), a telemetry heartbeat every ``interval`` seconds
(QoS 0, first one at a random moment so they spread out) and PINGREQ to keep the link.

    python bench/city_fleet.py --port 1883 --count 1353 --prefix XA-CITY --first 2

Each locker starts answering and beating as soon as it is connected: a city of 13,539 takes
minutes to connect, longer than the broker waits (1.5 x keepalive) for a quiet client, and
its first lockers' syncs would otherwise wait for the last one's CONNACK.

On stdout, one line each (city_bench.py reads them):

- ``status connected=N failed=F dropped=D`` every second;
- ``ready N`` once all N are connected and subscribed, or ``ready N of M: F failed`` when some
  could not connect (refused, timed out, out of file descriptors), or ``held N of M`` after
  ``hold`` on stdin (stop opening connections, keep the ones there are);
- ``error ...`` for the first few connections that failed or dropped (no locker reconnects);
- ``done: ...`` when stdin closes, which ends it.

One process holds every connection: it raises its own RLIMIT_NOFILE soft limit to the hard
one (a child inherits its parent's, but the fleet may be run on its own), and asyncio's loop
waits on them with epoll (selectors.DefaultSelector on Linux), not select(), which cannot
watch a descriptor past 1023.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import struct
import sys
import threading
import time
from datetime import UTC, datetime

KEEPALIVE_S = 60
CONNECT_AT_ONCE = 50  # connections opened in parallel: the broker accepts them in batches
CONNECT_TIMEOUT_S = 30.0  # TCP connect to CONNACK: past it the locker counts as failed
ERRORS_SHOWN = 5


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
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

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


class Fleet:
    def __init__(self, port: int, ids: list[str], interval: float) -> None:
        self.lockers = [Locker(i, port, interval) for i in ids]
        self.connected = 0
        self.failed = 0
        self.dropped = 0
        self.errors = 0
        self.tasks: set[asyncio.Task] = set()

    def error(self, text: str) -> None:
        self.errors += 1
        if self.errors <= ERRORS_SHOWN:
            say(f"error {text}")

    async def connect_all(self) -> None:
        gate = asyncio.Semaphore(CONNECT_AT_ONCE)
        total = len(self.lockers)
        try:
            await asyncio.gather(*(self._start(x, gate) for x in self.lockers))
        except asyncio.CancelledError:
            say(f"held {self.connected} of {total}")
            raise
        if self.failed:
            say(f"ready {self.connected} of {total}: {self.failed} failed")
        else:
            say(f"ready {self.connected}")

    async def _start(self, locker: Locker, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                await asyncio.wait_for(locker.connect(), CONNECT_TIMEOUT_S)
            except asyncio.CancelledError:
                locker.close()
                raise
            except (OSError, EOFError, IndexError) as err:  # refused, timed out, EMFILE
                locker.close()
                self.failed += 1
                self.error(f"{locker.id} could not connect: {err!r}")
                return
        self.connected += 1
        task = asyncio.create_task(self._run(locker))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, locker: Locker) -> None:
        parts = [asyncio.create_task(locker.listen()), asyncio.create_task(locker.heartbeat())]
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for part in parts:
                part.cancel()
        err = next(iter(done)).exception()
        self.connected -= 1
        self.dropped += 1
        self.error(f"{locker.id} dropped: {err!r}")
        locker.close()

    async def report(self) -> None:
        while True:
            say(f"status connected={self.connected} failed={self.failed} dropped={self.dropped}")
            await asyncio.sleep(1)


def say(line: str) -> None:
    print(line, flush=True)


def read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(lines.put_nowait, line.strip())
    loop.call_soon_threadsafe(lines.put_nowait, None)


async def run(port: int, ids: list[str], interval: float) -> None:
    fleet = Fleet(port, ids, interval)
    lines: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=read_stdin, args=(loop, lines), daemon=True).start()
    connecting = asyncio.create_task(fleet.connect_all())
    reporting = asyncio.create_task(fleet.report())
    while (line := await lines.get()) is not None:
        if line == "hold":
            connecting.cancel()
    connecting.cancel()
    reporting.cancel()
    replied = sum(x.replied for x in fleet.lockers)
    sent = sum(x.telemetry_sent for x in fleet.lockers)
    say(
        f"done: {sent} telemetry messages, {replied} commands answered; "
        f"{fleet.connected} connected, {fleet.failed} failed, {fleet.dropped} dropped"
    )
    for task in list(fleet.tasks):
        task.cancel()
    for locker in fleet.lockers:
        locker.close()


def raise_fd_limit(count: int) -> None:
    """As many descriptors as the hard limit allows; a warning when that is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < count + 64:
        print(
            f"city_fleet: RLIMIT_NOFILE is {soft}: not enough for {count} connections",
            file=sys.stderr,
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1353)
    parser.add_argument("--prefix", default="XA-CITY")
    parser.add_argument("--first", type=int, default=2)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between heartbeats")
    args = parser.parse_args()
    ids = [f"{args.prefix}-{n:04d}" for n in range(args.first, args.first + args.count)]
    raise_fd_limit(len(ids))
    asyncio.run(run(args.port, ids, args.interval))


if __name__ == "__main__":
    main()
