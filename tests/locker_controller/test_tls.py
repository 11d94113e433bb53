"""The controller over TLS (``mqtts://``) to a real Mosquitto with a TLS listener.

Certificates are made by ``openssl`` for each test module: a test CA that signs the broker's
certificate (127.0.0.1 / localhost) and a locker's client certificate, and a rogue CA that
signs nothing the broker uses. A paho subscriber playing the cloud connects over TLS too.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.locker_controller.conftest import LOCKER_ID, greeting
from tests.support import mosquitto
from tests.support.cabinet import ControllerProcess
from tests.support.waiting import wait_until
from xinbao.contract import PRESENCE_ONLINE, Channel, LockerEvent, topic

pytestmark = pytest.mark.slow

OPENSSL = shutil.which("openssl")
WRONG_CODE = "00000000"  # eight digits, matches no reservation: refused as "wrong"


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path


def _openssl(*args: str | Path) -> None:
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, f"openssl {args[0]} failed: {done.stderr}"


def _make_ca(d: Path, name: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.crt", d / f"{name}.key"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    _openssl(
        "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "2",
        "-subj", f"/O=Xinbao tests/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _make_leaf(d: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (d / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    _openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/O=Xinbao tests/CN={name}")
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + extensions
    )
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if OPENSSL is None:
        pytest.fail("openssl is not installed: apt-get install -y openssl")
    d = tmp_path_factory.mktemp("pki")
    ca = _make_ca(d, "test-ca")
    server = _make_leaf(
        d, "broker", ca, "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    client = _make_leaf(d, LOCKER_ID, ca, "extendedKeyUsage=clientAuth\n")
    rogue, _ = _make_ca(d, "rogue-ca")
    return Pki(ca[0], server[0], server[1], client[0], client[1], rogue)


# --- a broker with a TLS listener -----------------------------------------------------------


class TlsMosquitto(mosquitto.Mosquitto):
    """The shared helper's broker with its one listener switched to TLS."""

    def __init__(self, directory: Path, pki: Pki, *, require_certificate: bool) -> None:
        super().__init__(directory)
        # Listener options apply to the last ``listener`` line, the helper's only one.
        with self.conf.open("a") as conf:
            conf.write(
                f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
                f"require_certificate {'true' if require_certificate else 'false'}\n"
            )


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Callable[..., TlsMosquitto]]:
    if not mosquitto.available():
        pytest.fail("mosquitto is not installed: apt-get install -y mosquitto (.ci/run does)")
    started: list[TlsMosquitto] = []

    def start(*, require_certificate: bool = False) -> TlsMosquitto:
        broker = TlsMosquitto(tmp_path / "tls-broker", pki, require_certificate=require_certificate)
        started.append(broker)
        broker.start()
        return broker

    yield start
    for broker in started:
        broker.stop()


# --- the cloud's side, over TLS -------------------------------------------------------------


class TlsSubscriber:
    """A paho client subscribed to everything of the test locker, connected over TLS."""

    def __init__(self, port: int, pki: Pki, *, with_client_cert: bool) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"tls-cloud-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.tls_set(
            ca_certs=str(pki.ca),
            certfile=str(pki.client_cert) if with_client_cert else None,
            keyfile=str(pki.client_key) if with_client_cert else None,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, 10, "the TLS subscriber to subscribe")

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        client.subscribe(f"xinbao/v1/lockers/{LOCKER_ID}/#", qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))
        if msg.topic == topic(LOCKER_ID, Channel.PRESENCE) and msg.payload == PRESENCE_ONLINE:
            client.publish(topic(LOCKER_ID, Channel.COMMANDS), greeting(), qos=1)

    def on(self, channel: Channel) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic(LOCKER_ID, channel)]

    def everything(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def event_types(self) -> list[str]:
        return [LockerEvent.from_bytes(p).type.value for p in self.on(Channel.EVENTS)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribe(pki: Pki) -> Iterator[Callable[..., TlsSubscriber]]:
    made: list[TlsSubscriber] = []

    def make(port: int, *, with_client_cert: bool = False) -> TlsSubscriber:
        made.append(TlsSubscriber(port, pki, with_client_cert=with_client_cert))
        return made[-1]

    yield make
    for sub in made:
        sub.close()


# --- the controller with an mqtts:// config -------------------------------------------------


@pytest.fixture
def tls_controller(make_controller) -> Callable[..., ControllerProcess]:
    """A controller (not yet started) whose ``[mqtt]`` is ``mqtts://`` with the given files."""

    def make(port: int, ca: Path, cert: Path | None = None, key: Path | None = None):
        ctl = make_controller(mqtt_port=port)
        text = ctl.config.read_text()
        plain = f'url = "mqtt://127.0.0.1:{port}"\n'
        assert plain in text
        tls = f'url = "mqtts://127.0.0.1:{port}"\nca_file = "{ca}"\n'
        if cert is not None:
            tls += f'client_cert = "{cert}"\nclient_key = "{key}"\n'
        ctl.config.write_text(text.replace(plain, tls))
        return ctl

    return make


def locker_sessions(broker: TlsMosquitto) -> list[str]:
    """Broker log lines of MQTT sessions the controller opened (client id = the locker id)."""
    return [
        line
        for line in broker.log_text().splitlines()
        if "New client connected" in line and f" as {LOCKER_ID} " in line
    ]


def refused_handshakes(broker: TlsMosquitto, reason: str) -> int:
    """Handshakes the broker logged as failed for ``reason`` (OpenSSL's wording)."""
    return sum(reason in line for line in broker.log_text().splitlines())


def check_works_over_tls(ctl: ControllerProcess, sub: TlsSubscriber) -> None:
    wait_until(lambda: PRESENCE_ONLINE in sub.on(Channel.PRESENCE), 15, "presence online")
    refused = ctl.code(WRONG_CODE)
    assert refused.status_code == 400 and refused.json()["reason"] == "wrong", refused.text
    wait_until(lambda: "code_refused" in sub.event_types(), 10, "code_refused over TLS")
    wait_until(lambda: ctl.status()["outbox_depth"] == 0, 10, "the outbox to drain")


# --- tests ----------------------------------------------------------------------------------


def test_presence_and_events_reach_a_tls_subscriber(tls_broker, subscribe, tls_controller, pki):
    broker = tls_broker()
    sub = subscribe(broker.port)
    ctl = tls_controller(broker.port, pki.ca)
    ctl.start()
    check_works_over_tls(ctl, sub)
    assert locker_sessions(broker), broker.log_text()[-2000:]


def test_a_ca_that_did_not_sign_the_broker_never_connects(
    tls_broker, subscribe, tls_controller, pki
):
    broker = tls_broker()
    sub = subscribe(broker.port)
    ctl = tls_controller(broker.port, pki.rogue_ca)
    ctl.start()
    assert ctl.code(WRONG_CODE).status_code == 400  # an event that must stay in the outbox
    wait_until(lambda: "certificate verify failed" in ctl.log.read_text(), 15, "the log line")
    # Two refused handshakes: the reconnect after the first failure fails the same way.
    wait_until(lambda: refused_handshakes(broker, "unknown ca") >= 2, 15, "a retried handshake")
    assert sub.everything() == []
    assert locker_sessions(broker) == []
    assert ctl.status()["outbox_depth"] >= 1
    assert "Traceback" not in ctl.log.read_text()


def test_a_broker_requiring_client_certificates(tls_broker, subscribe, tls_controller, pki):
    broker = tls_broker(require_certificate=True)
    sub = subscribe(broker.port, with_client_cert=True)

    anonymous = tls_controller(broker.port, pki.ca)
    anonymous.start()
    no_cert = "peer did not return a certificate"
    wait_until(lambda: refused_handshakes(broker, no_cert) >= 2, 15, "two refused handshakes")
    assert "certificate required" in anonymous.log.read_text()
    assert locker_sessions(broker) == []
    assert sub.everything() == []
    anonymous.stop()

    ctl = tls_controller(broker.port, pki.ca, pki.client_cert, pki.client_key)
    ctl.start()
    check_works_over_tls(ctl, sub)
    assert len(locker_sessions(broker)) == 1
