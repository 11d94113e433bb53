"""docker-compose.yml: its structure, then the same commands run as plain processes.

No Docker engine runs here. The first half parses the compose file and checks what compose
itself would enforce (health checks, ``depends_on`` conditions, secrets that fail when unset,
files that the bind mounts need). The second half starts every service's own command, entry
point and health check, with only host names, ports and container paths mapped to this
machine: the real Mosquitto with the repository's mosquitto.conf and ACL, two ``xinbao api``
processes on one fresh PostgreSQL database, the simulator on TCP and the controller. Then it
checks what the ACL promises: a locker cannot publish on another locker's topics nor read its
commands, a wrong password is refused at connect, the cloud account sees every locker.

Mosquitto (MQTT 3.1.1) accepts a forbidden PUBLISH and drops it silently, and grants a
forbidden SUBSCRIBE but never delivers on it, so refusal is checked as non-delivery: a marker
sent after the forbidden message, on the same connection, arrives; the forbidden one never did.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from xinbao.contract import CommandType, PingPayload, sign_command

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
VENV_BIN = Path(sys.executable).parent
LOCKER = "XA-0001"
INTRUDER = "XA-0002"
SERVICES = {"mosquitto", "postgres", "api-1", "api-2", "sim", "controller"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[?-]|)")


# --- compose's variable substitution, as `docker compose config` does it ------------------

_SUBSTITUTION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[?-])([^}]*))?\}")


class UnsetVariable(Exception):
    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``$$`` -> ``$``; ``${V}``, ``${V:-default}``; ``${V:?error}`` refuses unset or empty."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        current = env.get(name)
        empty = not current if operator and operator.startswith(":") else current is None
        if operator in (":?", "?") and empty:
            raise UnsetVariable(name, argument)
        if operator in (":-", "-") and empty:
            return argument
        return current or ""

    return _SUBSTITUTION.sub(substitute, value)


def load_env(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: value for name, value in pairs}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- an MQTT client that records what the broker does with it -----------------------------

Message = tuple[str, bytes, bool]  # topic, payload, retained


class MqttProbe:
    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        self._port = port
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._connacks: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: queue.Queue[int] = queue.Queue()
        self._messages: queue.Queue[Message] = queue.Queue()
        self._client.on_connect = lambda c, u, f, reason, p: self._connacks.put(reason)
        self._client.on_subscribe = lambda c, u, mid, codes, p: self._subacks.put(mid)
        self._client.on_message = lambda c, u, m: self._messages.put(
            (m.topic, bytes(m.payload), bool(m.retain))
        )
        self._running = False

    def connect(self) -> ReasonCode:
        self._client.connect("127.0.0.1", self._port, keepalive=30)
        self._client.loop_start()
        self._running = True
        reason = self._connacks.get(timeout=10)
        if reason.is_failure:
            self.close()  # or paho would keep trying to reconnect
        return reason

    def subscribe(self, pattern: str) -> None:
        _, mid = self._client.subscribe(pattern, qos=1)
        assert self._subacks.get(timeout=10) == mid

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"no PUBACK for {topic}"

    def next_message(self, timeout: float = 10.0) -> Message:
        try:
            return self._messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message arrived") from None

    def messages_until(self, last: Callable[[Message], bool], timeout: float = 15.0) -> list:
        """Every message received, up to and including the first for which ``last`` is true."""
        seen: list[Message] = []
        deadline = time.monotonic() + timeout
        while not seen or not last(seen[-1]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the awaited message never came; got {seen}")
            seen.append(self.next_message(remaining))
        return seen

    def close(self) -> None:
        if self._running:
            self._running = False
            self._client.disconnect()
            self._client.loop_stop()


# --- the compose services as plain processes ----------------------------------------------


class Stack:
    """Each service's own command, entry point and health check, mapped to this machine.

    Host names and ports become 127.0.0.1 and free ports, container paths become paths under
    ``workdir``, ``xinbao``/``python`` the virtualenv's; nothing else in a command changes.
    """

    def __init__(self, repo: Path, compose: dict, env: dict[str, str], workdir: Path) -> None:
        self.services = compose["services"]
        self.env = env
        self.workdir = workdir
        self.mqtt_port, self.sim_port, self.control_port = free_port(), free_port(), free_port()
        self.kiosk_port = free_port()
        self.api_ports = (free_port(), free_port())
        self.database = f"xinbao_compose_{uuid.uuid4().hex[:10]}"
        self.fleet_passwd = workdir / "fleet.passwd"
        self._procs: list[tuple[str, subprocess.Popen, IO[bytes]]] = []
        self._database_created = False
        self._common = [
            ("mosquitto:1883", f"127.0.0.1:{self.mqtt_port}"),
            ("-p 1883", f"-p {self.mqtt_port}"),
            ("sim:7000", f"127.0.0.1:{self.sim_port}"),
            ("0.0.0.0:7000", f"127.0.0.1:{self.sim_port}"),
            ("0.0.0.0:8700", f"127.0.0.1:{self.control_port}"),
            ("127.0.0.1:8700", f"127.0.0.1:{self.control_port}"),
            ("/app/", f"{repo}/"),
            ("/run/xinbao/", f"{workdir}/run/"),
            ("/var/lib/xinbao/", f"{workdir}/var/"),
            ("/mosquitto/config/mosquitto.conf", f"{workdir}/mosquitto.conf"),
        ]
        self._own = {
            "api-1": [("127.0.0.1:8000", f"127.0.0.1:{self.api_ports[0]}")],
            "api-2": [("127.0.0.1:8000", f"127.0.0.1:{self.api_ports[1]}")],
            "controller": [("127.0.0.1:8080", f"127.0.0.1:{self.kiosk_port}")],
        }
        mounts = (v.split(":")[:2] for v in self.services["mosquitto"]["volumes"])
        self._broker_mounts = {inside: repo / host for host, inside in mounts if host[0] == "."}

    # mapping ------------------------------------------------------------------------------

    def _map(self, service: str, text: str) -> str:
        if text == "0.0.0.0":
            return "127.0.0.1"  # the same service, reachable from this machine only
        for old, new in self._common + self._own.get(service, []):
            text = text.replace(old, new)
        return text

    def _argv(self, service: str, words: list[str]) -> list[str]:
        programs = {"xinbao": str(VENV_BIN / "xinbao"), "python": sys.executable}
        argv = [programs.get(words[0], words[0])]
        for before, word in zip(words, words[1:], strict=False):
            if before == "--port" and word == "8000":
                argv.append(str(self.api_ports[service == "api-2"]))
            else:
                argv.append(self._map(service, word))
        return argv

    def _environment(self, service: str) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.workdir),
            "PYTHONUNBUFFERED": "1",
        }
        for key, value in (self.services[service].get("environment") or {}).items():
            env[key] = self._map(service, str(value))
        if "DATABASE_URL" in env:
            # The compose database is reached as user xinbao at host "postgres"; here the
            # fresh test database on the local server (trust authentication).
            assert re.fullmatch(
                r"postgresql://xinbao:[^@]+@postgres:5432/xinbao", env["DATABASE_URL"]
            )
            env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{self.database}"
        if service == "controller":
            env["XINBAO_KIOSK_PORT"] = str(self.kiosk_port)
        return env

    # processes ----------------------------------------------------------------------------

    def add_fleet_account(self, username: str, password: str) -> None:
        """A second locker's account, hashed offline and mounted, as docs/deploy.md says."""
        create = [] if self.fleet_passwd.exists() else ["-c"]
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(self.fleet_passwd), username, password],
            check=True,
            capture_output=True,
        )

    def _spawn(self, service: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.workdir / f"{service}.log").open("wb")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._procs.append((service, proc, log))

    def _log_tail(self, service: str) -> str:
        path = self.workdir / f"{service}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def _healthy(self, service: str) -> bool:
        for name, proc, _ in self._procs:
            if name == service and proc.poll() is not None:
                raise AssertionError(
                    f"{service} exited {proc.returncode}:\n{self._log_tail(service)}"
                )
        test = self.services[service]["healthcheck"]["test"]
        if test[0] == "CMD-SHELL":
            argv = ["/bin/sh", "-c", self._map(service, test[1])]
        else:
            argv = self._argv(service, test[1:])
        try:
            result = subprocess.run(
                argv, env=self._environment(service), capture_output=True, timeout=15
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def _wait_healthy(self, *services: str) -> None:
        for service in services:
            wait_until(lambda s=service: self._healthy(s), f"{service} healthy", timeout=90)

    def start(self) -> None:
        self._start_broker()
        self._wait_healthy("mosquitto")
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres") as conn:
            conn.autocommit = True
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self._database_created = True
        self._wait_healthy("postgres")  # pg_isready, the same probe
        for service in ("sim", "api-1"):
            self._spawn(
                service,
                self._argv(service, self.services[service]["command"]),
                self._environment(service),
            )
        self._wait_healthy("sim", "api-1")
        for service in ("api-2", "controller"):
            self._spawn(
                service,
                self._argv(service, self.services[service]["command"]),
                self._environment(service),
            )
        self._wait_healthy("api-2", "controller")

    def _start_broker(self) -> None:
        conf = self._broker_mounts["/mosquitto/config/mosquitto.conf"].read_text()
        conf, listeners = re.subn(
            r"^listener 1883$", f"listener {self.mqtt_port} 127.0.0.1", conf, flags=re.M
        )
        assert listeners == 1, "mosquitto.conf should have one 1883 listener"
        (self.workdir / "mosquitto.conf").write_text(
            conf.replace("/mosquitto/", f"{self.workdir}/mosquitto/")
        )
        (self.workdir / "mosquitto/data").mkdir(parents=True)
        service = self.services["mosquitto"]
        entrypoint = [str(self._broker_mounts.get(w, w)) for w in service["entrypoint"]]
        env = self._environment("mosquitto") | {
            "MQTT_RUN_DIR": f"{self.workdir}/mosquitto/run",
            "MQTT_DATA_DIR": f"{self.workdir}/mosquitto/data",
            "MQTT_ACL_SOURCE": str(self._broker_mounts["/mosquitto/config/acl"]),
            "MQTT_FLEET_PASSWD": str(self.fleet_passwd),
        }
        self._spawn("mosquitto", entrypoint + self._argv("mosquitto", service["command"]), env)

    def broker_log(self) -> str:
        return (self.workdir / "mosquitto.log").read_text(errors="replace")

    def stop(self) -> None:
        # Edge first, broker last: the controller's last will and the APIs' MQTT sessions
        # end cleanly while the broker still runs.
        for _, proc, _ in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for _, _, log in self._procs:
            log.close()
        if self._database_created:
            with psycopg.connect(
                "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
            ) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The .env that deploy/make_env.py writes, as an operator would create it."""
    out = subprocess.run(
        [sys.executable, str(REPO / "deploy/make_env.py"), "--locker-id", LOCKER],
        capture_output=True,
        text=True,
        check=True,
    )
    return load_env(out.stdout)


# --- the file itself -----------------------------------------------------------------------


def test_services_images_and_commands(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["api-1"]["command"][:2] == ["xinbao", "api"]
    # Only the first API process migrates; the second waits for it (no concurrent migrations).
    assert "--no-migrate" not in services["api-1"]["command"]
    assert services["api-2"]["command"][-1] == "--no-migrate"
    assert services["sim"]["command"][:3] == ["xinbao", "sim", "boards"]
    assert "--tcp" in services["sim"]["command"]
    env = services["controller"]["environment"]
    assert env["XINBAO_CABINET_BUS"] == "socket://sim:7000"
    assert "0.0.0.0:7000" in services["sim"]["command"]


def test_health_checks_probe_what_the_command_serves(compose):
    services = compose["services"]
    postgres = services["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == ("xinbao", "xinbao")
    assert "-U xinbao -d xinbao" in services["postgres"]["healthcheck"]["test"][1]
    for name in ("api-1", "api-2"):
        command = services[name]["command"]
        port = command[command.index("--port") + 1]
        assert f"http://127.0.0.1:{port}/" in " ".join(services[name]["healthcheck"]["test"])
    sim = services["sim"]["command"]
    control_port = sim[sim.index("--control") + 1].rsplit(":", 1)[1]
    assert f"http://127.0.0.1:{control_port}/" in " ".join(services["sim"]["healthcheck"]["test"])
    controller = services["controller"]
    kiosk = controller["environment"]["XINBAO_KIOSK_PORT"]
    assert f"http://127.0.0.1:{kiosk}/api/status" in controller["healthcheck"]["test"]
    assert "-p 1883" in services["mosquitto"]["healthcheck"]["test"][1]
    conf = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    assert re.search(r"^listener 1883$", conf, re.M)
    assert re.search(r"^allow_anonymous false$", conf, re.M)


def test_every_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert len(check["test"]) > 1, name


def test_depends_on_waits_for_healthy_services(compose):
    services = compose["services"]
    expected = {
        "api-1": {"postgres", "mosquitto"},
        "api-2": {"postgres", "mosquitto", "api-1"},
        "controller": {"mosquitto", "sim"},
    }
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions, not a list"
        assert set(depends) == expected.get(name, set()), name
        for target, rule in depends.items():
            assert rule == {"condition": "service_healthy"}, f"{name} -> {target}"
            assert "healthcheck" in services[target]


def test_every_secret_is_required(compose, env):
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    references = _REFERENCE.findall(text)
    secrets = {name for name, _ in references if SECRET_NAME.search(name)}
    assert secrets >= {
        "POSTGRES_PASSWORD",
        "XINBAO_MASTER_SECRET",
        "XINBAO_TOKEN_SECRET",
        "XINBAO_FIRST_ADMIN_PASSWORD",
        "MQTT_CLOUD_PASSWORD",
        "MQTT_HEALTH_PASSWORD",
        "MQTT_LOCKER_PASSWORD",
        "XINBAO_LOCKER_KEY_HEX",
    }
    for name, operator in references:
        if name in secrets:
            assert operator == ":?", f"${{{name}}} must fail when unset (use :?)"
    # No secret is written into the file: every secret-named setting is a reference.
    for service_name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{service_name}.{key}"
    # Compose refuses to start without each one, naming it; with all of them, nothing is left.
    assert set(env) >= secrets, "deploy/make_env.py must provide every secret"
    for name in sorted(secrets):
        missing = {k: v for k, v in env.items() if k != name}
        with pytest.raises(UnsetVariable) as refused:
            interpolate(compose, missing)
        assert refused.value.name == name
    resolved = json.dumps(interpolate(compose, env))
    assert "${" not in resolved


def test_twilio_override_requires_its_secrets():
    override = REPO / "deploy/compose.twilio.yml"
    text = override.read_text(encoding="utf-8")
    references = _REFERENCE.findall(text)
    assert {"TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID"} <= {name for name, _ in references}
    assert all(operator == ":?" for _, operator in references)
    services = yaml.safe_load(text)["services"]
    assert set(services) == {"api-1", "api-2"}
    assert services["api-1"]["environment"]["XINBAO_SMS_PROVIDER"] == "twilio"


def test_bind_mounts_exist_in_the_repository(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).is_file(), f"{name}: {source} is missing"
    assert (REPO / "Dockerfile").is_file()


# --- deploy scripts refuse bad input -----------------------------------------------------


def test_controller_start_refuses_missing_or_bad_settings(tmp_path, env):
    target = tmp_path / "controller.toml"
    base = {"PATH": os.environ["PATH"], "XINBAO_CONTROLLER_CONFIG": str(target)}
    script = [sys.executable, str(REPO / "deploy/controller/start.py"), "--render-only"]
    missing = subprocess.run(script, env=base, capture_output=True, text=True)
    assert missing.returncode == 2
    assert "XINBAO_LOCKER_KEY_HEX" in missing.stderr and "MQTT_LOCKER_PASSWORD" in missing.stderr
    good = {
        **base,
        "XINBAO_LOCKER_ID": LOCKER,
        "XINBAO_LOCKER_KEY_HEX": env["XINBAO_LOCKER_KEY_HEX"],
        "MQTT_LOCKER_PASSWORD": 'has "quotes" and \\ backslash',
        "XINBAO_CONTROLLER_MQTT_URL": "mqtt://127.0.0.1:1883",
        "XINBAO_CABINET_BUS": "socket://127.0.0.1:7000",
        "XINBAO_DATA_DIR": str(tmp_path / "data"),
        "XINBAO_KIOSK_HOST": "127.0.0.1",
        "XINBAO_KIOSK_PORT": "8080",
    }
    bad_key = subprocess.run(
        script, env={**good, "XINBAO_LOCKER_KEY_HEX": "xyz"}, capture_output=True, text=True
    )
    assert bad_key.returncode == 2 and "locker_key_hex" in bad_key.stderr
    assert not target.exists()
    ok = subprocess.run(script, env=good, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert target.stat().st_mode & 0o077 == 0, "the config holds a password: owner only"
    assert 'password = "has \\"quotes\\" and \\\\ backslash"' in target.read_text()


def test_broker_entrypoint_refuses_missing_secrets(tmp_path):
    result = subprocess.run(
        ["/bin/sh", str(REPO / "deploy/mosquitto/entrypoint.sh"), "true"],
        env={"PATH": os.environ["PATH"], "MQTT_RUN_DIR": str(tmp_path / "run")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "MQTT_CLOUD_PASSWORD" in result.stderr
    assert not (tmp_path / "run").exists()


def test_make_env_never_overwrites(tmp_path):
    target = tmp_path / ".env"
    target.write_text("KEEP=1\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy/make_env.py"), "--out", str(target)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "exists" in result.stderr
    assert target.read_text() == "KEEP=1\n"


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

    def probe(username: str | None, password: str | None) -> MqttProbe:
        client = MqttProbe(stack.mqtt_port, username, password)
        made.append(client)
        return client

    yield probe
    for client in made:
        client.close()


def _cloud(stack, probes) -> MqttProbe:
    cloud = probes("cloud", stack.env["MQTT_CLOUD_PASSWORD"])
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
    assert re.search(rf"as locker-{LOCKER} \(.*u'{LOCKER}'\)", stack.broker_log())
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
    # Each process's MQTT bridge is logged in to the broker as "cloud", under its own id.
    for client_id in ("cloud-api-1", "cloud-api-2"):
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
