"""The demo's embedded MQTT broker: amqtt in the demo process, bound to 127.0.0.1.

Production runs Mosquitto with a password file and an ACL (deploy/); the demo must run on a
bare machine, so it embeds amqtt with the same two rules, enforced by two small plugins:

- every client logs in (no anonymous access): the cloud with its account, each locker with
  its own;
- a locker touches only its own subtree ``xinbao/v1/lockers/<its id>/#``; cloud accounts may
  use every locker's topics.

amqtt (0.12) treats ``$share/<group>/<filter>`` as a literal filter that never matches a
topic, so the cloud's shared subscriptions would silently receive nothing. ``EmbeddedBroker``
strips the prefix and subscribes to the plain filter. That is only correct with ONE
subscriber per group, which is what the demo runs (a single API process); several API
processes need a broker that splits shared subscriptions (Mosquitto, EMQX).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from dataclasses import dataclass, field

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import BrokerError
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from xinbao.contract import TOPIC_ROOT

log = logging.getLogger(__name__)

_SHARE_PREFIX = "$share/"


class BrokerStartError(RuntimeError):
    """The embedded broker could not listen (port taken, bad address)."""


def plain_filter(topic_filter: str) -> str:
    """``$share/group/a/+/b`` -> ``a/+/b``; any other filter unchanged."""
    if not topic_filter.startswith(_SHARE_PREFIX):
        return topic_filter
    _, _, rest = topic_filter[len(_SHARE_PREFIX) :].partition("/")
    return rest


class PasswordAuthPlugin(BaseAuthPlugin):
    """Username + password from the plugin config; no anonymous clients."""

    @dataclass
    class Config:
        users: dict[str, str] = field(default_factory=dict)

    async def authenticate(self, *, session: Session) -> bool:
        users: dict[str, str] = self.context.config.users
        expected = users.get(session.username or "")
        given = session.password or ""
        if isinstance(given, bytes):
            given = given.decode("utf-8", "replace")
        # Compare even for an unknown user, so timing does not tell which names exist.
        ok = hmac.compare_digest((expected or "\0").encode(), given.encode())
        if not (ok and expected is not None):
            log.warning("MQTT login refused for %r", session.username)
            return False
        return True


class LockerTopicPlugin(BaseTopicPlugin):
    """The ACL: a locker account sees only ``xinbao/v1/lockers/<username>/...``."""

    @dataclass
    class Config:
        cloud_users: list[str] = field(default_factory=list)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action=None
    ) -> bool:
        if session is None or topic is None:
            return False
        username = session.username or ""
        if username in self.context.config.cloud_users:
            return True
        allowed = f"{TOPIC_ROOT}/{username}/"
        permitted = bool(username) and plain_filter(topic).startswith(allowed)
        if not permitted and action != Action.RECEIVE:
            log.warning("MQTT %s on %r refused for %r", action, topic, username)
        return permitted


class _SharingBroker(Broker):
    """amqtt with ``$share/`` filters mapped to plain ones (see the module docstring)."""

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter, qos = subscription
        return await super().add_subscription((plain_filter(topic_filter), qos), session)

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        return super()._del_subscription(plain_filter(a_filter), session)


class EmbeddedBroker:
    """Start and stop an amqtt broker on this event loop.

    ``users`` maps account names to passwords; ``cloud_users`` names the accounts that may
    use every locker's topics (all others are locker ids, confined to their own subtree).
    """

    def __init__(
        self,
        users: dict[str, str],
        cloud_users: list[str],
        host: str = "127.0.0.1",
        port: int = 1883,
    ) -> None:
        unknown = set(cloud_users) - set(users)
        if unknown:
            raise ValueError(f"cloud accounts without a password: {sorted(unknown)}")
        self.host = host
        self.port = port
        self._config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                f"{__name__}.PasswordAuthPlugin": {"users": dict(users)},
                f"{__name__}.LockerTopicPlugin": {"cloud_users": list(cloud_users)},
            },
        }
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        for name in ("amqtt", "transitions"):
            # amqtt logs every packet and state change at INFO; the demo's output is for people.
            logging.getLogger(name).setLevel(logging.WARNING)
        broker = _SharingBroker(self._config)
        try:
            await broker.start()
        except BrokerError as err:
            cause = err.__cause__ or err
            raise BrokerStartError(
                f"the embedded MQTT broker cannot listen on {self.host}:{self.port}: {cause}"
            ) from None
        self._broker = broker
        if self.port == 0:
            server = broker._servers["default"].instance
            self.port = server.sockets[0].getsockname()[1]
        log.info("embedded MQTT broker on %s", self.url)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        with contextlib.suppress(asyncio.CancelledError, BrokerError):
            await broker.shutdown()
