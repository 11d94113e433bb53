"""``xinbao demo`` as a newcomer runs it: a real subprocess, its printed addresses, Ctrl-C.

Also the embedded broker's own rules (log-in, per-locker ACL, ``$share/`` filters), since the
demo relies on them and amqtt does none of that by itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.demo_run import FREE_PORTS, SCENARIO_TIMEOUT_S, START_TIMEOUT_S
from xinbao.broker import EmbeddedBroker, plain_filter
from xinbao.demo_scenario import FullJourney


def _children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _address(output: str, label: str) -> str:
    found = re.search(rf"^\s+{label}\s+(http://\S+)", output, re.M)
    assert found, f"no {label!r} address in:\n{output}"
    return found.group(1).rstrip("/")


@pytest.mark.slow
def test_plain_demo_prints_addresses_serves_them_and_stops_cleanly(run_demo, tmp_path):
    data = tmp_path / "data"
    demo = run_demo("--data-dir", str(data), *FREE_PORTS)
    demo.wait_for_line(r"running; press Ctrl-C", START_TIMEOUT_S)
    out = demo.output
    assert "starting fresh in" in out
    for label in ("staff dashboard", "cabinet kiosk", "simulator panel", "API docs"):
        _address(out, label)
    password = re.search(r"^\s+password\s+(\S+)", out, re.M).group(1)
    secret = re.search(r"^\s+TOTP secret\s+([A-Z2-7]{16,})", out, re.M).group(1)
    assert f"secret={secret}" in re.search(r"otpauth://\S+", out).group(0)

    with httpx.Client(timeout=10) as http:
        kiosk = http.get(_address(out, "cabinet kiosk") + "/")
        assert kiosk.status_code == 200 and "<html" in kiosk.text.lower()
        panel = http.get(_address(out, "simulator panel") + "/")
        assert panel.status_code == 200 and "<html" in panel.text.lower()
        boards = http.get(_address(out, "simulator panel") + "/boards").json()["boards"]
        assert sorted(b["protocol"] for b in boards) == ["bcc-8a", "kerong-cu16"]
        api = _address(out, "API docs").removesuffix("/docs")
        assert http.get(api + "/openapi.json").status_code == 200
        assert http.get(api + "/docs").status_code == 200
        dashboard = http.get(_address(out, "staff dashboard") + "/")
        assert dashboard.status_code == 200 and "<html" in dashboard.text.lower()
        status = http.get(_address(out, "cabinet kiosk") + "/api/status").json()
        assert status["locker_id"] == "XA-DEMO-1"
        # The printed credentials work: the staff log in with password + TOTP.
        import pyotp

        login = http.post(
            api + "/api/v1/staff/login",
            json={"username": "demo", "password": password, "totp": pyotp.TOTP(secret).now()},
        )
        assert login.status_code == 200, login.text
        locker = http.get(
            api + "/api/v1/lockers/XA-DEMO-1",
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        ).json()
        assert (locker["latitude"], locker["longitude"]) == (34.3712, 109.0406)
        assert {c["size"] for c in locker["compartments"]} == {"S", "M", "L"}
        # The records page is not empty: a handful of records in different states.
        seeded = http.get(
            api + "/api/v1/staff/records",
            params={"q": "XA-2026-"},
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        ).json()
        assert seeded["total"] >= 5
        assert len({r["status"] for r in seeded["items"]}) >= 5
    assert "demo approval records" in out

    # The databases (and the secrets beside them) are the demo user's alone.
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    databases = [data / "cloud.db", *data.rglob("controller.sqlite3")]
    assert len(databases) == 2, databases
    for found in databases:
        assert stat.S_IMODE(found.stat().st_mode) == 0o600, found
        assert stat.S_IMODE(found.parent.stat().st_mode) == 0o700, found.parent

    children = _children_of(demo.process.pid)
    assert len(children) == 2, children  # the API and the controller
    demo.process.send_signal(signal.SIGINT)
    assert demo.finish(timeout=60) == 0, demo.output
    assert "stopped" in demo.lines[-1]
    assert "Traceback" not in demo.output
    left = [pid for pid in children if _alive(pid)]
    assert not left, f"processes left behind: {left}"

    # A second run reuses the data directory: same accounts, the same TOTP app keeps working.
    again = run_demo("--data-dir", str(data), *FREE_PORTS)
    again.wait_for_line(r"running; press Ctrl-C", START_TIMEOUT_S)
    assert "reusing the demo data in" in again.output
    assert "demo approval records" not in again.output  # seeded once
    assert re.search(rf"^\s+password\s+{re.escape(password)}$", again.output, re.M)
    again.process.send_signal(signal.SIGTERM)
    assert again.finish(timeout=60) == 0, again.output


@pytest.mark.slow
def test_full_scenario_drives_the_whole_journey(run_demo, tmp_path):
    demo = run_demo("--scenario", "full", "--data-dir", str(tmp_path / "data"), *FREE_PORTS)
    code = demo.finish(timeout=SCENARIO_TIMEOUT_S)
    assert code == 0, demo.output
    journey = FullJourney.__new__(FullJourney)
    names = [name for name, _ in FullJourney.steps(journey)]
    for index, name in enumerate(names, start=1):
        assert f"[{index:2}/{len(names)}] {name} ... ok" in demo.output, demo.output
    assert "full journey completed" in demo.output
    assert "Traceback" not in demo.output


def _busy_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--api-port", "70000"], "65535"),
        (["--scenario", "half"], "half"),
        (["--mqtt-url", "http://nowhere"], "--mqtt-url must look like"),
        (
            ["--kiosk-port", "0", "--sim-port", "0", "--mqtt-port", "0", "--api-port", "BUSY"],
            "in use",
        ),
        (["--data-dir", "NOT_OURS", *FREE_PORTS], "not a demo data directory"),
    ],
)
@pytest.mark.slow
def test_bad_arguments_get_a_clear_error_and_change_nothing(run_demo, tmp_path, args, message):
    busy = _busy_port()
    not_ours = tmp_path / "not-ours"
    not_ours.mkdir()
    (not_ours / "thesis.txt").write_text("keep me")
    args = [
        str(busy.getsockname()[1]) if a == "BUSY" else str(not_ours) if a == "NOT_OURS" else a
        for a in args
    ]
    try:
        demo = run_demo(*args)
        code = demo.finish(timeout=60)
    finally:
        busy.close()
    assert code == 2, demo.output
    assert message in demo.output
    assert "Traceback" not in demo.output
    assert (not_ours / "thesis.txt").read_text() == "keep me"
    assert sorted(p.name for p in not_ours.iterdir()) == ["thesis.txt"]
    assert not (tmp_path / "xinbao-data").exists()


@pytest.mark.slow
def test_help_says_how_to_use_it():
    result = subprocess.run(
        [sys.executable, "-m", "xinbao.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "xinbao demo --scenario full" in text
    assert "--data-dir" in text and "--fresh" in text


# --- the embedded broker ---------------------------------------------------------------------


def _client(user: str, password: str, got: list) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"test-{user}-{password[:3]}",
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set(user, password)
    client.on_connect = lambda c, u, f, rc, p: got.append(("connect", str(rc)))
    client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    return client


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_embedded_broker_logs_in_confines_lockers_and_maps_shared_subscriptions():
    async def scenario() -> tuple[list, list, list]:
        broker = EmbeddedBroker({"cloud": "c-pw", "L1": "l1-pw", "L2": "l2-pw"}, ["cloud"], port=0)
        await broker.start()
        try:
            return await asyncio.to_thread(_drive, broker.port)
        finally:
            await broker.stop()

    def _drive(port: int) -> tuple[list, list, list]:
        cloud_got, l1_got, bad_got = [], [], []
        cloud = _client("cloud", "c-pw", cloud_got)
        l1 = _client("L1", "l1-pw", l1_got)
        bad = _client("L1", "guess", bad_got)
        clients = [cloud, l1, bad]
        try:
            for c in clients:
                c.connect("127.0.0.1", port)
                c.loop_start()
            _wait(lambda: cloud_got and l1_got and bad_got)
            cloud.subscribe("$share/cloud/xinbao/v1/lockers/+/events", qos=1)
            l1.subscribe("xinbao/v1/lockers/L2/commands", qos=1)  # another locker's: refused
            l1.subscribe("xinbao/v1/lockers/L1/commands", qos=1)
            time.sleep(0.3)
            l1.publish("xinbao/v1/lockers/L1/events", b"own", qos=1).wait_for_publish(5)
            l1.publish("xinbao/v1/lockers/L2/events", b"forged", qos=1).wait_for_publish(5)
            cloud.publish("xinbao/v1/lockers/L2/commands", b"for-L2", qos=1).wait_for_publish(5)
            cloud.publish("xinbao/v1/lockers/L1/commands", b"for-L1", qos=1).wait_for_publish(5)
            _wait(lambda: ("xinbao/v1/lockers/L1/commands", b"for-L1") in l1_got)
            _wait(lambda: ("xinbao/v1/lockers/L1/events", b"own") in cloud_got)
            time.sleep(0.3)  # let a wrongly forwarded message arrive, if one were coming
        finally:
            for c in clients:
                c.loop_stop()
                c.disconnect()
        return cloud_got, l1_got, bad_got

    cloud_got, l1_got, bad_got = asyncio.run(scenario())
    assert bad_got and set(bad_got) == {("connect", "Not authorized")}
    assert ("xinbao/v1/lockers/L2/events", b"forged") not in cloud_got
    assert [m for m in cloud_got if m[0] != "connect"] == [("xinbao/v1/lockers/L1/events", b"own")]
    assert [m for m in l1_got if m[0] != "connect"] == [
        ("xinbao/v1/lockers/L1/commands", b"for-L1")
    ]


def test_plain_filter():
    assert plain_filter("$share/cloud/xinbao/v1/lockers/+/events") == "xinbao/v1/lockers/+/events"
    assert plain_filter("xinbao/v1/lockers/+/events") == "xinbao/v1/lockers/+/events"
