"""One cabinet's controller: wires state, boards, doors, codes, staff, MQTT and the kiosk.

Everything runs on one asyncio loop: uvicorn serves the kiosk as a task of that loop, paho's
network thread hands its callbacks to it, and each RS-485 bus has its one worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import uvicorn

from locker_controller.cabinet import BusOpener, Cabinet, open_lock_bus
from locker_controller.commands import CommandDesk
from locker_controller.config import ControllerConfig
from locker_controller.doors import DoorWatcher
from locker_controller.keypad import Keypad
from locker_controller.kiosk import build_app
from locker_controller.lockout import Lockout
from locker_controller.lost_code import LostCodeDesk
from locker_controller.metrics import ControllerMetrics
from locker_controller.mqtt_link import MqttLink
from locker_controller.operations import Operations
from locker_controller.outbox import EventLog, OutboxPublisher
from locker_controller.staff import StaffDesk
from locker_controller.store import Store
from xinbao.contract import RUNTIME_SETTINGS, BoardHealthReport, Telemetry

log = logging.getLogger(__name__)
VERSION = "0.1.0"


class Controller:
    def __init__(self, config: ControllerConfig, opener: BusOpener = open_lock_bus) -> None:
        self.config = config
        self.store = Store(config.data_dir / "controller.sqlite3")
        self.store.sync_layout(
            (c.number, c.size, c.bus, c.board, c.channel) for c in config.compartments
        )
        self.metrics = ControllerMetrics()
        self.events = EventLog(self.store, self.metrics)
        self.cabinet = Cabinet(config, opener)
        self.operations = Operations(self.store, self.events)
        self.doors = DoorWatcher(config, self.cabinet, self.store, self.events, self.operations)
        self.lockout = Lockout(config, self.store, self.events)
        self.keypad = Keypad(
            config,
            self.store,
            self.events,
            self.doors,
            self.operations,
            self.lockout,
            metrics=self.metrics,
        )
        self.staff = StaffDesk(
            config, self.store, self.events, self.doors, self.operations, self.lockout
        )
        self.commands = CommandDesk(
            config, self.store, self.events, self.doors, self.operations, self.apply_setting
        )
        self.commands.synced = self.keypad.warm
        self.commands.lift_lockout = self.lockout.lift
        self.keypad.warm()
        self.publisher = OutboxPublisher(self.store, self.events)
        self.metrics.watch(self)
        self.link: MqttLink | None = None
        self.lost_code = LostCodeDesk(config, self.events, self.cloud_reachable)
        self.kiosk_url: str | None = None
        self.heartbeats_sent = 0
        self._started = time.monotonic()
        saved = json.loads(self.store.get_meta("runtime_settings", "{}") or "{}")
        for name, value in saved.items():
            if name in RUNTIME_SETTINGS:
                self.apply_setting(name, value)

    def apply_setting(self, name: str, value: Any) -> None:
        if name == "door_left_open_after_s":
            self.doors.left_open_after_s = value
        elif name == "poll_interval_s":
            self.doors.poll_interval_s = value
        elif name == "lockout_threshold":
            self.lockout.threshold = value

    def cloud_reachable(self) -> bool:
        """Connected, and the cloud has spoken on this connection (the outbox flows)."""
        return self.link is not None and self.link.connected and not self.publisher.held

    def status(self) -> dict[str, Any]:
        return {
            "locker_id": self.config.locker_id,
            "online": bool(self.link and self.link.connected),
            "outbox_depth": self.publisher.depth,
            "in_flight": self.publisher.in_flight,
            "outbox_held": self.publisher.held,
            "replies_pending": self.store.replies_depth(),
            "heartbeats_sent": self.heartbeats_sent,
            "out_of_service": self.doors.out_of_service(),
            "busy": self.operations.busy(),
            "locked_for_s": self.lockout.remaining(),
            "lockout_level": self.lockout.level(),
            "lost_code_kept_back": self.lost_code.dropped,
            "doors": {n: d.open for n, d in self.doors.doors.items()},
            # Every door read often enough since start-up to be trusted (debounce_polls).
            "doors_settled": all(d.settled for d in self.doors.doors.values()),
        }

    def telemetry(self) -> Telemetry:
        from datetime import UTC, datetime

        return Telemetry(
            ts=datetime.now(UTC),
            version=VERSION,
            uptime_s=round(time.monotonic() - self._started, 1),
            outbox_depth=self.publisher.depth,
            boards=[
                BoardHealthReport(
                    bus=str(bus),
                    address=h.address,
                    reachable=reachable,
                    consecutive_timeouts=h.consecutive_timeouts,
                )
                for bus, h in self.cabinet.healths()
                for reachable in [self.doors.boards[(bus, h.address)].reachable]
            ],
        )

    async def _telemetry_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.link is not None and self.link.publish_telemetry(self.telemetry()):
                self.heartbeats_sent += 1
            self.commands.prune()

    async def _lockout_loop(self, interval: float = 1.0) -> None:
        """Report each lockout window when it ends, typed at or not (lockout_ended)."""
        while True:
            await asyncio.sleep(interval)
            self.lockout.tick()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self.cabinet.open()
        try:
            if self.config.mqtt is not None:
                self.link = MqttLink(
                    self.config.mqtt,
                    self.config.locker_id,
                    loop,
                    self.commands.received,
                    self._link_up,
                    self.publisher.acknowledged,
                )
                self.publisher.attach(self.link)
                self.commands.cloud_spoke = self.publisher.cloud_spoke
                self.link.start()
            try:
                await self._serve(stop)
            finally:
                await self.commands.drain()
                if self.link is not None:
                    self.link.stop()
        finally:
            self.cabinet.close()
            self.store.close()

    def _link_up(self) -> None:
        # Subscribed to our commands: the next one may be a retained one (commands.py).
        self.commands.subscribed()
        self.publisher.link_up()

    async def _serve(self, stop: asyncio.Event) -> None:
        server = None
        tasks = [
            asyncio.create_task(self.doors.run(), name="doors"),
            asyncio.create_task(self.publisher.run(), name="outbox"),
            asyncio.create_task(self._lockout_loop(), name="lockout"),
        ]
        if self.config.mqtt is not None:
            tasks.append(
                asyncio.create_task(
                    self._telemetry_loop(self.config.mqtt.telemetry_interval_s), name="telemetry"
                )
            )
        if self.config.kiosk.enabled:
            server = uvicorn.Server(
                uvicorn.Config(
                    build_app(self),
                    host=self.config.kiosk.host,
                    port=self.config.kiosk.port,
                    log_level="warning",
                    lifespan="off",
                    access_log=False,
                )
            )
            tasks.append(asyncio.create_task(server.serve(), name="kiosk"))
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            if server is not None:
                while not server.started and not stopper.done():
                    if tasks[-1].done():
                        break
                    await asyncio.sleep(0.02)
                if server.started:
                    host, port = server.servers[0].sockets[0].getsockname()[:2]
                    self.kiosk_url = f"http://{host}:{port}"
                    log.info("kiosk at %s", self.kiosk_url)
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()
        finally:
            if server is not None:
                server.should_exit = True
            for task in [*tasks, stopper]:
                if task.get_name() != "kiosk":
                    task.cancel()
            for task in [*tasks, stopper]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
