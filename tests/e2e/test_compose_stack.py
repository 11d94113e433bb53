"""docker-compose.yml's services started as plain processes, against the real Mosquitto
(the repository's mosquitto.conf and ACL) and PostgreSQL on this machine: two ``xinbao api``
processes on one fresh database, the simulator on TCP and the controller. Then what the ACL
promises: a locker cannot publish on another locker's topics nor read its commands, a wrong
password is refused at connect, the cloud account sees every locker; and the controller's
events reach the cloud, split between api-1 and api-2 through the ACL'd broker.

Mosquitto (MQTT 3.1.1) accepts a forbidden PUBLISH and drops it silently, and grants a
forbidden SUBSCRIBE but never delivers on it, so refusal is checked as non-delivery: a marker
sent after the forbidden message, on the same connection, arrives; the forbidden one never did.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.compose import (
    REPO,
    VENV_BIN,
    MqttProbe,
    Stack,
    interpolate,
    load_compose,
    make_env,
    wait_until,
)
from xinbao.contract import CommandType, PingPayload, sign_command

pytestmark = pytest.mark.slow

LOCKER = "XA-0001"
INTRUDER = "XA-0002"
# Two API containers of two workers each (--workers ${XINBAO_API_WORKERS:-2}): a client id
# per worker, the container's plus -w<slot> (cloud_api/workers.py).
API_CLIENT_IDS = ("cloud-api-1-w0", "cloud-api-1-w1", "cloud-api-2-w0", "cloud-api-2-w1")


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return make_env(LOCKER)


# --- the same commands as plain processes --------------------------------------------------


@pytest.fixture(scope="module")
def stack(compose, env):
    if shutil.which("mosquitto_passwd") is None or not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto and mosquitto_passwd are needed (bash .ci/run installs them)")
    # mkdtemp, not tmp_path: mosquitto started as root drops to its own user, which must be
    # able to walk into this directory (pytest's base temp directory is private to root).
    workdir = Path(tempfile.mkdtemp(prefix="xinbao-compose-"))
    workdir.chmod(0o755)
    running = Stack(REPO, interpolate(compose, env), env, workdir)
    try:
        running.add_fleet_account(INTRUDER, "intruder-password")
        running.start()
        yield running
    finally:
        running.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def probes(stack):
    made: list[MqttProbe] = []

    def probe(
        username: str | None,
        password: str | None,
        *,
        port: int | None = None,
        client_id: str | None = None,
    ) -> MqttProbe:
        client = MqttProbe(port or stack.mqtt_port, username, password, client_id)
        made.append(client)
        return client

    yield probe
    for client in made:
        client.close()


def _cloud(stack, probes) -> MqttProbe:
    cloud = probes("cloud", stack.env["MQTT_CLOUD_PASSWORD"], port=stack.cloud_mqtt_port)
    assert not cloud.connect().is_failure
    return cloud


def _intruder(probes) -> MqttProbe:
    intruder = probes(INTRUDER, "intruder-password")
    assert not intruder.connect().is_failure
    return intruder


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_controller_logs_in_with_its_own_account(stack, probes):
    cloud = _cloud(stack, probes)
    cloud.subscribe(f"xinbao/v1/lockers/{LOCKER}/presence")
    topic, payload, retained = cloud.next_message()
    assert (topic, payload, retained) == (f"xinbao/v1/lockers/{LOCKER}/presence", b"online", True)
    assert re.search(rf"as {LOCKER} \(.*u'{LOCKER}'\)", stack.broker_log())
    status = httpx.get(f"http://127.0.0.1:{stack.kiosk_port}/api/status", timeout=5).json()
    assert status["locker_id"] == LOCKER and status["online"] is True


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_wrong_password_and_strangers_are_refused_at_connect(stack, probes):
    for username, password in [
        (LOCKER, "wrong-password"),
        (LOCKER, stack.env["MQTT_CLOUD_PASSWORD"]),  # another account's password
        ("cloud", stack.env["MQTT_LOCKER_PASSWORD"]),
        ("nobody", "whatever"),
        (None, None),  # anonymous
    ]:
        reason = probes(username, password).connect()
        assert reason.is_failure, f"{username!r} got in"
        assert str(reason) in ("Not authorized", "Bad user name or password"), str(reason)
    # Each listener knows only its own accounts: the cloud cannot log in where lockers do
    # (client ids bound to accounts), nor a locker where the cloud does (client ids free).
    for port, username, password in [
        (stack.mqtt_port, "cloud", stack.env["MQTT_CLOUD_PASSWORD"]),
        (stack.cloud_mqtt_port, LOCKER, stack.env["MQTT_LOCKER_PASSWORD"]),
        (stack.cloud_mqtt_port, INTRUDER, "intruder-password"),
    ]:
        reason = probes(username, password, port=port).connect()
        assert reason.is_failure, f"{username!r} got in on port {port}"


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_a_locker_account_cannot_take_over_another_clients_session(stack, probes):
    """XA-0002's account asks for the client ids of XA-0001's controller and of an API
    process: the broker replaces them with "XA-0002", so neither is disconnected (no
    take-over in the broker log, no last will "offline" for XA-0001)."""
    cloud = _cloud(stack, probes)
    cloud.subscribe(f"xinbao/v1/lockers/{LOCKER}/presence")
    assert cloud.next_message() == (f"xinbao/v1/lockers/{LOCKER}/presence", b"online", True)
    wait_until(lambda: "as cloud-api-1-w0 " in stack.broker_log(), "api-1 on the broker")
    controller_connects = re.compile(rf" as {LOCKER} \(")
    connected_before = len(controller_connects.findall(stack.broker_log()))
    for stolen in (LOCKER, f"locker-{LOCKER}", *API_CLIENT_IDS):
        intruder = probes(INTRUDER, "intruder-password", client_id=stolen)
        assert not intruder.connect().is_failure
        # A round trip on the intruder's own topics: the broker has handled its CONNECT.
        marker = f"marker-{uuid.uuid4()}".encode()
        watcher = probes("cloud", stack.env["MQTT_CLOUD_PASSWORD"], port=stack.cloud_mqtt_port)
        assert not watcher.connect().is_failure
        watcher.subscribe(f"xinbao/v1/lockers/{INTRUDER}/events")
        intruder.publish(f"xinbao/v1/lockers/{INTRUDER}/events", marker)
        assert watcher.messages_until(lambda m, k=marker: m[1] == k)[-1][1] == marker
        intruder.close()
    log = stack.broker_log()
    for victim in (LOCKER, f"locker-{LOCKER}", *API_CLIENT_IDS):
        assert f"Client {victim} already connected" not in log, log[-3000:]
    assert re.search(rf"as {INTRUDER} \(.*u'{INTRUDER}'\)", log)
    # The controller never dropped: the broker saw no new connection of it, its presence
    # never went "offline" (a take-over would have sent its last will), and it still says it
    # is on line. ("online" may come again: a controller the cloud has not answered yet
    # announces itself every 15 s, which a loaded machine can show here.)
    status = httpx.get(f"http://127.0.0.1:{stack.kiosk_port}/api/status", timeout=5).json()
    assert status["online"] is True
    log = stack.broker_log()
    assert len(controller_connects.findall(log)) == connected_before, log[-3000:]
    heard = []
    with contextlib.suppress(AssertionError):
        while True:
            heard.append(cloud.next_message(timeout=1.0))
    assert [m for m in heard if m[1] != b"online"] == [], heard


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_locker_cannot_publish_on_another_lockers_topics(stack, probes):
    cloud = _cloud(stack, probes)
    cloud.subscribe("xinbao/v1/lockers/#")
    intruder = _intruder(probes)
    forged = f"forged-{uuid.uuid4()}".encode()
    for leaf in ("events", "presence", "telemetry", "replies", "commands"):
        intruder.publish(f"xinbao/v1/lockers/{LOCKER}/{leaf}", forged, retain=leaf == "presence")
    # Not even commands to itself: only the cloud sends commands.
    intruder.publish(f"xinbao/v1/lockers/{INTRUDER}/commands", forged)
    marker = f"marker-{uuid.uuid4()}".encode()
    intruder.publish(f"xinbao/v1/lockers/{INTRUDER}/events", marker)

    seen = cloud.messages_until(lambda m: m[1] == marker)
    assert [m for m in seen if m[1] == forged] == []
    # The retained presence is still the controller's own, not the forged one.
    fresh = _cloud(stack, probes)
    fresh.subscribe(f"xinbao/v1/lockers/{LOCKER}/presence")
    assert fresh.next_message()[1:] == (b"online", True)


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_locker_cannot_read_another_lockers_commands(stack, probes):
    intruder = _intruder(probes)
    for pattern in (
        f"xinbao/v1/lockers/{LOCKER}/commands",
        "xinbao/v1/lockers/+/commands",
        "#",
        f"$share/steal/xinbao/v1/lockers/{LOCKER}/commands",
    ):
        intruder.subscribe(pattern)
    cloud = _cloud(stack, probes)
    cloud.subscribe(f"xinbao/v1/lockers/{LOCKER}/replies")
    # A correctly signed ping for the real locker: the controller answers it on its replies.
    key = bytes.fromhex(stack.env["XINBAO_LOCKER_KEY_HEX"])
    ping = sign_command(key, CommandType.PING, PingPayload())
    cloud.publish(f"xinbao/v1/lockers/{LOCKER}/commands", ping.to_bytes())
    marker = f"marker-{uuid.uuid4()}".encode()
    cloud.publish(f"xinbao/v1/lockers/{INTRUDER}/commands", marker)

    seen = intruder.messages_until(lambda m: m[1] == marker)
    assert {topic for topic, _, _ in seen} == {f"xinbao/v1/lockers/{INTRUDER}/commands"}
    replies = cloud.messages_until(lambda m: json.loads(m[1])["request_id"] == str(ping.request_id))
    reply = json.loads(replies[-1][1])
    assert reply["ok"] is True, reply


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_cloud_account_sees_every_locker_through_a_shared_subscription(stack, probes):
    cloud = _cloud(stack, probes)
    # A group of its own: the API processes' "cloud" group must not share these messages.
    cloud.subscribe("$share/compose-test/xinbao/v1/lockers/+/events")
    intruder = _intruder(probes)
    marker = f"marker-{uuid.uuid4()}".encode()
    intruder.publish(f"xinbao/v1/lockers/{INTRUDER}/events", marker)
    seen = cloud.messages_until(lambda m: m[1] == marker)
    assert seen[-1][0] == f"xinbao/v1/lockers/{INTRUDER}/events"


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_both_api_processes_answer_on_one_database(stack):
    first, second = (f"http://127.0.0.1:{port}" for port in stack.api_ports)
    # Each worker's MQTT bridge is logged in to the broker as "cloud", under its own id.
    for client_id in API_CLIENT_IDS:
        wait_until(
            lambda c=client_id: re.search(rf"as {c} \(.*u'cloud'\)", stack.broker_log()),
            f"{client_id} connected to the broker",
            timeout=30,
        )
    login = httpx.post(
        f"{first}/api/v1/staff/login",
        json={
            "username": stack.env["XINBAO_FIRST_ADMIN_USERNAME"],
            "password": stack.env["XINBAO_FIRST_ADMIN_PASSWORD"],
        },
        timeout=10,
    )
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    locker = {
        "id": LOCKER,
        "site": "Compose test centre",
        "address": "1 Test Road",
        "latitude": 34.3,
        "longitude": 108.9,
        "compartments": [{"number": 1, "size": "S", "board": 1, "channel": 1}],
    }
    created = httpx.post(f"{second}/api/v1/lockers", json=locker, headers=auth, timeout=10)
    assert created.status_code == 201, created.text
    read = httpx.get(f"{first}/api/v1/lockers/{LOCKER}", headers=auth, timeout=10)
    assert read.status_code == 200, read.text
    assert read.json()["site"] == "Compose test centre"
    # Bad input gets a clear client error from either process, never a 500.
    for url in (first, second):
        bad = httpx.post(
            f"{url}/api/v1/lockers",
            content=b"{not json",
            headers=auth | {"Content-Type": "application/json"},
            timeout=10,
        )
        assert bad.status_code == 400, bad.text
        assert bad.headers["content-type"].startswith("application/problem+json")


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_the_api_processes_run_as_a_role_that_cannot_touch_the_audit_guard(stack):
    """api-1 migrated as the owner and granted the API's role rows-only rights; both API
    processes are connected as that role, and with its credentials the audit triggers can be
    neither disabled nor dropped, nor the trail altered."""
    with psycopg.connect(stack.database_url) as conn:
        users = {
            row[0]
            for row in conn.execute(
                "SELECT usename FROM pg_stat_activity WHERE datname = %s", (stack.database,)
            )
        }
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'audit_entry'"
        ).fetchone()[0]
    assert stack.api_role in users
    assert owner == stack.owner_role
    for statement in (
        "ALTER TABLE audit_entry DISABLE TRIGGER ALL",
        "DROP TRIGGER audit_entry_no_update ON audit_entry",
        "TRUNCATE audit_entry",
        "UPDATE audit_entry SET actor = 'someone-else'",
    ):
        with (
            psycopg.connect(stack.role_url(stack.api_role)) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(statement)


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_the_api_processes_checkpoint_the_audit_head_outside_the_database(stack):
    marks = stack.workdir / "var" / "audit-checkpoints.jsonl"  # /var/lib/xinbao/ mapped
    first = f"http://127.0.0.1:{stack.api_ports[0]}"
    _admin(first, stack)  # a log-in: the trail is not empty
    wait_until(marks.exists, "the first checkpoint", timeout=30)
    assert marks.stat().st_mode & 0o777 == 0o600
    verify = subprocess.run(
        [str(VENV_BIN / "xinbao"), "audit", "verify", "--checkpoint", str(marks)],
        env={
            "PATH": os.environ["PATH"],
            "DATABASE_URL": stack.database_url,
            "XINBAO_MASTER_SECRET": stack.env["XINBAO_MASTER_SECRET"],
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "signed checkpoints match" in verify.stdout


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_controller_events_reach_both_api_processes_through_the_acl(stack):
    """Doors moved at the simulated cabinet: the controller's events go through the ACL'd
    broker (its own account, its own topics) and the shared subscription splits them between
    api-1 and api-2; each is stored once, and either process shows all of them."""
    first, second = (f"http://127.0.0.1:{port}" for port in stack.api_ports)
    auth = _admin(first, stack)
    if httpx.get(f"{first}/api/v1/lockers/{LOCKER}", headers=auth, timeout=10).status_code == 404:
        created = httpx.post(f"{first}/api/v1/lockers", json=CABINET, headers=auth, timeout=10)
        assert created.status_code == 201, created.text
    wait_until(
        lambda: httpx.get(f"{second}/api/v1/lockers/{LOCKER}", headers=auth).json()["online"],
        "the controller on line in the cloud",
        timeout=60,
    )
    control = f"http://127.0.0.1:{stack.control_port}"
    kiosk = f"http://127.0.0.1:{stack.kiosk_port}/api/status"
    channels = (1, 2, 3, 4)
    for channel in channels:
        forced = httpx.post(
            f"{control}/faults",
            json={"board": 1, "channel": channel, "fault": "forced_open"},
            timeout=10,
        )
        assert forced.status_code == 201, forced.text
        wait_until(
            lambda c=channel: httpx.get(kiosk, timeout=5).json()["doors"][str(c)] is True,
            f"the controller seeing door {channel} open",
        )
        closed = httpx.post(
            f"{control}/boards/1/channels/{channel}/door", json={"action": "close"}, timeout=10
        )
        assert closed.status_code == 200, closed.text
        wait_until(
            lambda c=channel: httpx.get(kiosk, timeout=5).json()["doors"][str(c)] is False,
            f"the controller seeing door {channel} shut",
        )
    httpx.request("DELETE", f"{control}/faults", timeout=10)

    def door_rows() -> list[tuple]:
        with psycopg.connect(stack.database_url) as conn:
            return conn.execute(
                "SELECT event_id, type, compartment, received_by FROM locker_event "
                "WHERE locker_id = %s AND type IN ('door_forced', 'door_closed') ORDER BY seq",
                (LOCKER,),
            ).fetchall()

    wait_until(lambda: len(door_rows()) == 2 * len(channels), "eight door events stored")
    rows = door_rows()
    assert len({r[0] for r in rows}) == len(rows)
    assert [(r[1], r[2]) for r in rows] == [
        (kind, c) for c in channels for kind in ("door_forced", "door_closed")
    ]
    # Split between the two containers (and within each, between its workers).
    assert {r[3] for r in rows} <= set(API_CLIENT_IDS)
    assert {r[3].rsplit("-w", 1)[0] for r in rows} == {"cloud-api-1", "cloud-api-2"}
    for url in (first, second):
        events = httpx.get(f"{url}/api/v1/lockers/{LOCKER}/events", headers=auth).json()
        assert {e["event_id"] for e in events} >= {r[0] for r in rows}
        alarms = httpx.get(f"{url}/api/v1/alarms", headers=auth).json()
        assert sorted(a["compartment"] for a in alarms if a["kind"] == "door_forced") == [
            1,
            2,
            3,
            4,
        ]


CABINET = {
    "id": LOCKER,
    "site": "Compose test centre",
    "address": "1 Test Road",
    "latitude": 34.3,
    "longitude": 108.9,
    "compartments": [
        {"number": n, "size": s, "board": b, "channel": c}
        for n, s, b, c in [(1, "S", 1, 1), (2, "S", 1, 2), (3, "M", 1, 3), (4, "M", 1, 4)]
    ],
}


def _admin(url: str, stack) -> dict:
    login = httpx.post(
        f"{url}/api/v1/staff/login",
        json={
            "username": stack.env["XINBAO_FIRST_ADMIN_USERNAME"],
            "password": stack.env["XINBAO_FIRST_ADMIN_PASSWORD"],
        },
        timeout=10,
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}
