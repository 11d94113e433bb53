"""``CloudBridge``: the API process's MQTT client (paho-mqtt 2.x, MQTT 3.1.1).

Threads: paho's network thread (``loop_start``) only receives and queues; one worker thread
takes the messages, lockers taking turns (cloud_api.mqtt.intake: one locker's flood cannot hold
up another locker's messages, and what a locker sends beyond its budget is counted,
acknowledged unapplied and reported as a ``flooding`` alarm), and acknowledges each (manual
PUBACK) only after its transaction committed. So a crash between commit and PUBACK causes a
redelivery, which the event_id constraint turns into a no-op, and a slow or failing database
never stalls the keepalive. The ingest applies each locker's events in seq order
(cloud_api.mqtt.ingest); between messages the worker also releases events held back for a
predecessor (the ingest's own bookkeeping, so the same thread). The sweeps that only read and
write the database (commands nobody answered, staff lists that changed) run on a chores thread
of their own: with a city on line they take long enough that every locker's messages would wait
behind them. Commands are cloud_api.mqtt.sender's, published from whichever thread asks (paho's
publish is thread safe).

Sessions are persistent (clean_session=False, a stable client id) so QoS 1 messages queued
while this process was away are delivered when it comes back; the subscriptions are made again
on every connect anyway, because Mosquitto (2.0) does not keep shared subscriptions across
its own restart. Several API processes split the lockers' messages through shared
subscriptions (``$share/<group>/...``). amqtt (the demo's embedded broker) accepts a ``$share``
filter but never delivers on it, so in ``auto`` mode the bridge probes once: it subscribes to
a shared filter on a probe topic of its own, publishes to it, and falls back to plain
subscriptions (each process then receives everything; event_id dedupe keeps every event
applied once) if the probe does not come back.
"""

import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlmodel import Session

from cloud_api.core.config import Settings
from cloud_api.metrics.instruments import CloudMetrics
from cloud_api.models.common import utcnow
from cloud_api.models.monitoring import LockerCommand
from cloud_api.mqtt.errors import LinkDown, MessageDropped
from cloud_api.mqtt.ingest import Ingest
from cloud_api.mqtt.intake import FairIntake
from cloud_api.mqtt.sender import CommandSender
from cloud_api.services import alarms, policy
from cloud_api.services.handovers import HandoverPolicy
from xinbao.contract import (
    TOPIC_ROOT,
    Channel,
    CommandType,
    ContractError,
    parse_topic,
    shared_subscription,
    topic,
)

log = logging.getLogger(__name__)

_CHANNELS = {Channel.EVENTS: 1, Channel.PRESENCE: 1, Channel.TELEMETRY: 0, Channel.REPLIES: 1}
_PROBE_WAIT_S = 3.0
_DB_RETRY_MAX_S = 5.0
# Timed chores, seconds between rounds: events held back for their predecessor (ingest, on the
# worker thread), commands nobody answered (sender) and staff lists gone stale (chores thread).
_ORDER_SWEEP_S = 0.5
_COMMAND_SWEEP_S = 1.0
_SLOW_CHORE_S = 0.2
# A message that sat this long in the worker's queue is reported (at most every _LAG_LOG_S).
_LAG_WARN_S = 1.0
_LAG_LOG_S = 10.0
# Messages refused over a locker's budget are summarised this often (log and alarm); once a
# locker has had none refused for _FLOOD_QUIET_S, it gets a full sync, whose events_upto mark
# makes an honest cabinet send again what was refused.
_FLOOD_ROUND_S = 1.0
_FLOOD_QUIET_S = 10.0
# An honest cabinet replaying its outbox after a long time off line can go over budget for a
# moment; the flooding alarm is raised once a flood has had this many messages refused.
FLOOD_ALARM_AFTER = 200


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received: float  # monotonic, when paho handed it over


def default_client_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"xinbao-cloud-{host}-{os.getpid()}"


class CloudBridge:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        handover_policy: HandoverPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        metrics: CloudMetrics | None = None,
    ) -> None:
        endpoint = settings.mqtt_endpoint
        if endpoint is None:
            raise LinkDown("XINBAO_MQTT_URL is not set")
        self._endpoint = endpoint
        self._settings = settings
        self._engine = engine
        self._clock = clock
        self._policy = handover_policy or policy.from_settings(settings)
        self.client_id = settings.mqtt_client_id or default_client_id()
        self._group = settings.mqtt_group
        self._staff_round_s = settings.mqtt_staff_round_seconds
        self._view_round_s = settings.mqtt_view_round_seconds
        self._ingest = Ingest(engine, self._policy, self.client_id, clock, metrics=metrics)
        self.commands = CommandSender(settings, engine, self._publish_command, clock)
        self._ingest.resync = self.sync_handovers
        self._queue: FairIntake[_Message] = FairIntake(
            settings.mqtt_locker_rate, settings.mqtt_locker_burst
        )
        # Lockers over budget lately -> (monotonic time of the last refusal, refused in all).
        self._flooding: dict[str, tuple[float, int]] = {}
        self._stopping = threading.Event()
        self.connected = threading.Event()
        # Set once the broker granted this connection's subscriptions (SUBACK).
        self.subscribed = threading.Event()
        self._sub_mid: int | None = None
        self._lock = threading.Lock()
        # None: not probed yet (auto); True/False: shared subscriptions work / do not.
        self.shared: bool | None = {"on": True, "off": False}.get(settings.mqtt_shared)
        self._probe_deadline: float | None = None
        self._probe_topic = f"xinbao/v1/probe/{self.client_id}"
        self._worker: threading.Thread | None = None
        self._chores: threading.Thread | None = None
        self._lag_logged = float("-inf")
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        if self._endpoint.username is not None:
            client.username_pw_set(self._endpoint.username, self._endpoint.password)
        if self._endpoint.tls:
            client.tls_set(tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._queue.reopen()
        self._worker = threading.Thread(target=self._work, name="mqtt-ingest", daemon=True)
        self._worker.start()
        self._chores = threading.Thread(target=self._do_chores, name="mqtt-chores", daemon=True)
        self._chores.start()
        self._client.connect_async(self._endpoint.host, self._endpoint.port, keepalive=30)
        self._client.loop_start()
        log.info(
            "MQTT bridge %s connecting to %s:%s",
            self.client_id,
            self._endpoint.host,
            self._endpoint.port,
        )

    def stop(self) -> None:
        self._stopping.set()
        self._queue.close()
        for thread in (self._worker, self._chores):
            if thread is not None:
                thread.join(30)
        self._worker = self._chores = None
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        """True once connected and subscribed (after the $share probe in auto mode)."""
        return self.subscribed.wait(timeout)

    # --- paho's thread ------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        with self._lock:
            shared = self.shared
            if shared is None:
                self._probe_deadline = time.monotonic() + _PROBE_WAIT_S
        if shared is None:
            client.subscribe(f"$share/{self._group}/{self._probe_topic}", qos=1)
            client.publish(self._probe_topic, b"probe", qos=1)
        else:
            self._subscribe(client, shared)
        self.connected.set()

    def _subscribe(self, client: mqtt.Client, shared: bool) -> None:
        filters = [
            (shared_subscription(ch, self._group) if shared else f"{TOPIC_ROOT}/+/{ch.value}", qos)
            for ch, qos in _CHANNELS.items()
        ]
        with self._lock:
            _, self._sub_mid = client.subscribe(filters)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            ours, shared = mid == self._sub_mid, self.shared
        if not ours:
            return
        if any(rc.is_failure for rc in reason_codes):
            if shared:
                log.warning(
                    "the broker refused the shared subscriptions ($share/%s/...): falling back "
                    "to plain subscriptions (event_id dedupe keeps each event applied once)",
                    self._group,
                )
                with self._lock:
                    self.shared = False
                self._subscribe(client, False)
                return
            log.error("the broker refused our subscriptions: %s", reason_codes)
            return
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set() and not self._stopping.is_set():
            log.warning("lost the broker (%s); reconnecting", reason_code)
        self.connected.clear()
        self.subscribed.clear()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._probe_topic:
            self._probe_answered(client)
            client.ack(message.mid, message.qos)
            return
        parts = message.topic.split("/")
        locker = parts[3] if len(parts) == 5 else ""
        taken = self._queue.put(
            locker,
            _Message(
                message.topic, bytes(message.payload), message.mid, message.qos, time.monotonic()
            ),
        )
        if not taken:
            # Over the locker's budget: counted (FairIntake.take_refused), never applied.
            client.ack(message.mid, message.qos)

    def _probe_answered(self, client: mqtt.Client) -> None:
        with self._lock:
            if self.shared is not None:
                return
            self.shared = True
        log.info("the broker delivers shared subscriptions ($share/%s/...)", self._group)
        client.unsubscribe(f"$share/{self._group}/{self._probe_topic}")
        self._subscribe(client, True)

    def _probe_expired(self) -> None:
        with self._lock:
            due = self.shared is None and self._probe_deadline is not None
            if not due or time.monotonic() < self._probe_deadline:
                return
            self.shared = False
        log.warning(
            "the broker does not deliver on $share/%s/... (amqtt accepts the filter and ignores "
            "it): falling back to plain subscriptions; every API process now receives every "
            "message and event_id dedupe keeps each event applied once",
            self._group,
        )
        self._client.unsubscribe(f"$share/{self._group}/{self._probe_topic}")
        self._subscribe(self._client, False)

    # --- the worker thread --------------------------------------------------------------

    def _work(self) -> None:
        due = {
            self._ingest.apply_held_back: (time.monotonic(), _ORDER_SWEEP_S),
            self._note_floods: (time.monotonic(), _FLOOD_ROUND_S),
        }
        while True:
            message = self._queue.get(timeout=0.25)
            if message is None and self._queue.closed:
                return
            if message is not None:
                self._note_lag(message)
                if self._process(message):
                    self._client.ack(message.mid, message.qos)
                elif self._stopping.is_set():
                    return  # not acknowledged: the broker hands it out again
            # Checked after every message too: a busy queue must not starve the held events.
            self._probe_expired()
            _run_due(due, self._queue)

    def _note_lag(self, message: _Message) -> None:
        now = time.monotonic()
        lag = now - message.received
        if lag > _LAG_WARN_S and now >= self._lag_logged + _LAG_LOG_S:
            self._lag_logged = now
            log.warning(
                "messages wait %.1f s in the queue before they are applied (%d queued)",
                lag,
                self._queue.qsize(),
            )

    def _note_floods(self) -> None:
        """Summarise the messages refused over budget since the last round: one log line
        and the locker's flooding alarm (with the count) per locker, not a row per message."""
        now = time.monotonic()
        refused = self._queue.take_refused()
        if refused:
            at = self._clock()
            with Session(self._engine) as session:
                for locker_id, count in sorted(refused.items()):
                    _, before = self._flooding.get(locker_id, (now, 0))
                    total = before + count
                    self._flooding[locker_id] = (now, total)
                    log.warning(
                        "locker %r is over its ingest budget (%s/s, burst %d): %d messages "
                        "refused in the last round, %d in this flood",
                        locker_id,
                        self._queue.rate,
                        self._queue.burst,
                        count,
                        total,
                    )
                    if locker_id and total >= FLOOD_ALARM_AFTER:
                        # The first time: the whole flood so far; then each round's count.
                        counted = total if before < FLOOD_ALARM_AFTER else count
                        alarms.note_flood(session, locker_id, counted, at)
                session.commit()
        for locker_id, (last, total) in list(self._flooding.items()):
            if now - last < _FLOOD_QUIET_S:
                continue
            del self._flooding[locker_id]
            log.warning("locker %r flood over: %d messages refused in all", locker_id, total)
            if locker_id and self.subscribed.is_set():
                try:
                    # Its events_upto mark makes an honest cabinet send again what was refused.
                    self.sync_locker(locker_id)
                except (LinkDown, MessageDropped, ContractError) as err:
                    log.warning("no full sync to %r after its flood: %s", locker_id, err)

    # --- the chores thread --------------------------------------------------------------

    def _do_chores(self) -> None:
        start = time.monotonic()
        due = {
            self.commands.expire_unanswered: (start, _COMMAND_SWEEP_S),
            self._push_staff: (start + self._staff_round_s, self._staff_round_s),
            self._ask_views: (start + self._view_round_s, min(self._view_round_s, 60.0)),
        }
        while not self._stopping.wait(0.25):
            _run_due(due)

    def _push_staff(self) -> None:
        if self.subscribed.is_set():
            self.commands.push_changed_staff()

    def _ask_views(self) -> None:
        if self.subscribed.is_set():
            self.commands.ask_views(timedelta(seconds=self._view_round_s))

    def _process(self, message: _Message) -> bool:
        """Apply one message; False only if it must not be acknowledged (we are stopping
        while the database is unreachable)."""
        delay = 0.1
        while True:
            try:
                self._dispatch(message)
                return True
            except (ContractError, MessageDropped) as err:
                log.warning("dropped a message on %r: %s", message.topic[:200], err)
                return True
            except OperationalError as err:
                log.warning("database unavailable, will retry: %s", str(err).splitlines()[0])
            except SQLAlchemyError as err:
                # Not the database being away: the data itself cannot be stored. Retrying would
                # block every locker behind this one message.
                log.error("dropped a message on %r the database refused: %s", message.topic, err)
                return True
            if self._stopping.wait(delay):
                return False
            delay = min(delay * 2, _DB_RETRY_MAX_S)

    def _dispatch(self, message: _Message) -> None:
        locker_id, channel = parse_topic(message.topic)
        if channel is Channel.EVENTS:
            self._ingest.event(locker_id, message.payload)
        elif channel is Channel.PRESENCE:
            if self._ingest.presence(locker_id, message.payload):
                self.sync_locker(locker_id)
        elif channel is Channel.TELEMETRY:
            if self._ingest.telemetry(locker_id, message.payload):
                self.sync_locker(locker_id)
        elif channel is Channel.REPLIES:
            outcome = self._ingest.reply(locker_id, message.payload)
            if outcome is not None:
                self.commands.wake(outcome.request_id)
        else:
            raise ContractError(f"the cloud does not take {channel.value} messages")

    # --- commands (cloud_api.mqtt.sender) ------------------------------------------------

    def _publish_command(self, locker_id: str, payload: bytes) -> None:
        name = topic(locker_id, Channel.COMMANDS)
        info = self._client.publish(name, payload, qos=1, retain=False)
        # NO_CONN: paho keeps a QoS 1 message and sends it after the reconnect.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise LinkDown(f"cannot publish to the broker: {mqtt.error_string(info.rc)}")

    def send(self, locker_id: str, type_: CommandType, payload, **kw) -> str:
        return self.commands.send(locker_id, type_, payload, **kw)

    def sync_handovers(self, locker_id: str, handover_ids: list[int]) -> str | None:
        return self.commands.sync_handovers(locker_id, handover_ids)

    def sync_locker(self, locker_id: str) -> None:
        self.commands.sync_locker(locker_id)

    def remote_open(self, remote_open_id: int, timeout: float | None = None) -> None:
        self.commands.remote_open(remote_open_id, timeout)

    def configure(self, locker_id: str, settings: dict, actor: str) -> LockerCommand:
        return self.commands.configure(locker_id, settings, actor)

    def lift_lockout(self, locker_id: str, actor: str, reason: str) -> LockerCommand:
        return self.commands.lift_lockout(locker_id, actor, reason)

    def wait_reply(self, request_id: str, timeout: float) -> LockerCommand:
        return self.commands.wait_reply(request_id, timeout)


def _run_due(
    due: dict[Callable[[], object], tuple[float, float]], waiting: FairIntake | None = None
) -> None:
    """Run the chores whose time has come (chore -> (next run, interval), monotonic) and
    plan their next round. ``waiting``: the messages a slow chore holds up, if it does."""
    now = time.monotonic()
    for chore, (at, every) in list(due.items()):
        if now < at:
            continue
        due[chore] = (now + every, every)
        started = time.monotonic()
        try:
            chore()
        except OperationalError as err:
            log.warning("database unavailable (%s): %s", chore.__name__, str(err)[:200])
        except SQLAlchemyError as err:
            log.error("%s failed: %s", chore.__name__, err)
        except Exception:
            # A bug in one round must not end the thread: the next round tries again.
            log.exception("%s failed", chore.__name__)
        took = time.monotonic() - started
        if took > _SLOW_CHORE_S:
            # On the message thread every locker's messages wait behind it: say how many.
            held = f" ({waiting.qsize()} messages waited)" if waiting is not None else ""
            log.warning("%s took %.2f s%s", chore.__name__, took, held)
