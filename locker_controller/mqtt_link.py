"""The MQTT link to the cloud: paho-mqtt 2.x in its own network thread, logic on the loop.

paho's thread (``loop_start``) does the socket work, keepalive and the reconnect back-off
that never gives up; every callback is handed to the asyncio loop with
``call_soon_threadsafe``, so all controller logic runs on one thread and exists once.
Presence is retained ``online`` on every connect and ``offline`` as the last will;
subscriptions are made again on every connect (clean session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from locker_controller.config import MqttSettings
from xinbao.contract import (
    PRESENCE_OFFLINE,
    PRESENCE_ONLINE,
    Channel,
    LockerEvent,
    Telemetry,
    topic,
)

log = logging.getLogger(__name__)

CommandHandler = Callable[[bytes, bool], None]


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        locker_id: str,
        loop: asyncio.AbstractEventLoop,
        on_command: CommandHandler,
        on_up: Callable[[], None],
        on_ack: Callable[[int], None],
    ) -> None:
        self._settings = settings
        self._locker_id = locker_id
        self._loop = loop
        self._on_command = on_command
        self._on_up = on_up
        self._on_ack = on_ack
        self.connected = False
        self._last_failure: str | None = None
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self._settings
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            # The broker binds client ids to accounts on the lockers' listener
            # (use_username_as_clientid, deploy/mosquitto): the locker id is both.
            client_id=self._locker_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.client_cert) if s.client_cert else None,
                keyfile=str(s.client_key) if s.client_key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        # paho reports socket errors (a broker's TLS alert read after the handshake, such as
        # "certificate required") only through its logger: route it into ours.
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.will_set(self._topic(Channel.PRESENCE), PRESENCE_OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=int(max(1, s.reconnect_max_s)))
        client.on_connect = self._paho_connect
        client.on_connect_fail = self._paho_connect_fail
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        client.on_publish = self._paho_publish
        return client

    def _topic(self, channel: Channel) -> str:
        return topic(self._locker_id, channel)

    # --- lifecycle (loop thread) --------------------------------------------------------

    def start(self) -> None:
        self._client.connect_async(
            self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s
        )
        self._client.loop_start()

    def stop(self) -> None:
        if self.connected:
            info = self._client.publish(
                self._topic(Channel.PRESENCE), PRESENCE_OFFLINE, qos=1, retain=True
            )
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                info.wait_for_publish(timeout=2.0)
        self.connected = False
        self._client.disconnect()
        self._client.loop_stop()

    # --- paho thread -> loop ------------------------------------------------------------

    def _hand_over(self, fn: Callable[..., None], *args: Any) -> None:
        # RuntimeError: the loop is closing, the controller is shutting down.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    def _paho_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._hand_over(self._connected, not reason_code.is_failure, str(reason_code))

    def _paho_connect_fail(self, client, userdata) -> None:
        # paho calls this from inside its ``except OSError`` without passing the error: read
        # it here, or a refused TLS handshake (wrong CA, expired or missing certificate)
        # would leave no trace in the log while the locker silently stays offline.
        error = sys.exc_info()[1]
        self._hand_over(self._connect_failed, str(error) if error else "unknown error")

    def _paho_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._hand_over(self._disconnected, str(reason_code))

    def _paho_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self._hand_over(self._message, message.topic, bytes(message.payload), message.retain)

    def _paho_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._hand_over(self._on_ack, mid)

    # --- on the loop --------------------------------------------------------------------

    def _connected(self, ok: bool, reason: str) -> None:
        if not ok:
            log.warning("broker refused the connection: %s", reason)
            return
        log.info("connected to %s", self._settings.url)
        self.connected = True
        self._last_failure = None
        # Subscribe before saying online: the broker handles one connection's packets in
        # order, so whoever sees "online" can send a command and it will be delivered.
        self._client.subscribe(self._topic(Channel.COMMANDS), qos=1)
        self._on_up()
        self.announce()

    def _connect_failed(self, reason: str) -> None:
        # Each retry fails the same way while the cause lasts: warn once per new reason.
        level = logging.DEBUG if reason == self._last_failure else logging.WARNING
        log.log(level, "cannot connect to %s: %s", self._settings.url, reason)
        self._last_failure = reason

    def _disconnected(self, reason: str) -> None:
        if self.connected:
            log.warning("lost the broker (%s); paho reconnects with back-off", reason)
        self.connected = False

    def _message(self, name: str, payload: bytes, retained: bool) -> None:
        if name != self._topic(Channel.COMMANDS):
            log.warning("dropped a message on unexpected topic %r", name)
            return
        self._on_command(payload, retained)

    # --- publishing (loop thread) -------------------------------------------------------

    def announce(self) -> None:
        """Retained ``online``; the cloud answers it with a full sync."""
        if self.connected:
            self._client.publish(
                self._topic(Channel.PRESENCE), PRESENCE_ONLINE, qos=1, retain=True
            )

    def publish_event(self, event: LockerEvent) -> int | None:
        return self._publish_kept(Channel.EVENTS, event.to_bytes())

    def publish_reply(self, body: bytes) -> int | None:
        return self._publish_kept(Channel.REPLIES, body)

    def _publish_kept(self, channel: Channel, body: bytes) -> int | None:
        """QoS 1 publish of an outbox row; the mid to match its PUBACK, None if not sent."""
        if not self.connected:
            return None
        info = self._client.publish(self._topic(channel), body, qos=1)
        # NO_CONN: paho keeps the message and sends it after the reconnect, under this mid.
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return info.mid
        return None

    def publish_telemetry(self, telemetry: Telemetry) -> bool:
        if not self.connected:
            return False
        info = self._client.publish(self._topic(Channel.TELEMETRY), telemetry.to_bytes(), qos=0)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
