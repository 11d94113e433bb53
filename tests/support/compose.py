"""docker-compose.yml without a Docker engine: compose's variable substitution, and each
service's own command, entry point and health check run as plain processes on this machine.

- ``interpolate(value, env)``: ``$$``, ``${V}``, ``${V:-default}``, ``${V:?error}`` as
  ``docker compose config`` does them (``UnsetVariable`` names what is missing).
- ``Stack``: the services started in dependency order, waiting for each health check, with
  host names, ports and container paths mapped to this machine and nothing else changed.
- ``MqttProbe``: an MQTT client that records what the broker does with it (CONNACK, SUBACK,
  messages), for checking the broker's ACL.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
import psycopg
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.child_process import stop_child
from tests.support.waiting import free_port

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[?-]|)")


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


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def make_env(locker_id: str) -> dict[str, str]:
    """The .env that deploy/make_env.py writes, as an operator would create it."""
    out = subprocess.run(
        [sys.executable, str(REPO / "deploy/make_env.py"), "--locker-id", locker_id],
        capture_output=True,
        text=True,
        check=True,
    )
    return load_env(out.stdout)


def load_env(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: value for name, value in pairs}


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.2)


# --- an MQTT client that records what the broker does with it -----------------------------

Message = tuple[str, bytes, bool]  # topic, payload, retained


class MqttProbe:
    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None,
        client_id: str | None = None,
    ) -> None:
        self._port = port
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:12]}",
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
        self.cloud_mqtt_port = free_port()  # the broker's listener for the API processes
        self.kiosk_port = free_port()
        self.api_ports = (free_port(), free_port())
        tag = uuid.uuid4().hex[:10]
        self.database = f"xinbao_compose_{tag}"
        # The compose file's two roles, named per stack (roles are server-wide): the owner
        # ("xinbao", the image's POSTGRES_USER) and the API's ("xinbao_api", made by
        # deploy/postgres/init-api-role.sh, which runs here as it does in the image).
        self.owner_role, self.api_role = f"xb_owner_{tag}", f"xb_api_{tag}"
        self.fleet_passwd = workdir / "fleet.passwd"
        self._procs: list[tuple[str, subprocess.Popen, IO[bytes]]] = []
        self._database_created = False
        self._common = [
            ("mosquitto:1883", f"127.0.0.1:{self.mqtt_port}"),
            ("mosquitto:1884", f"127.0.0.1:{self.cloud_mqtt_port}"),
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

    @property
    def database_url(self) -> str:
        """The stack's database as an administrator on this machine reaches it."""
        return f"postgresql://postgres@127.0.0.1:5432/{self.database}"

    def role_url(self, role: str) -> str:
        return f"postgresql://{role}@127.0.0.1:5432/{self.database}"

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
            # The compose database is reached as xinbao_api (the owner: xinbao) at host
            # "postgres"; here the fresh test database on the local server, as this stack's
            # roles (trust authentication).
            assert re.fullmatch(
                r"postgresql://xinbao_api:[^@]+@postgres:5432/xinbao", env["DATABASE_URL"]
            )
            env["DATABASE_URL"] = self.role_url(self.api_role)
        if "XINBAO_OWNER_DATABASE_URL" in env:
            assert re.fullmatch(
                r"postgresql://xinbao:[^@]+@postgres:5432/xinbao", env["XINBAO_OWNER_DATABASE_URL"]
            )
            env["XINBAO_OWNER_DATABASE_URL"] = self.role_url(self.owner_role)
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
            conn.execute(f'CREATE ROLE "{self.owner_role}" LOGIN')
            conn.execute(f'CREATE DATABASE "{self.database}" OWNER "{self.owner_role}"')
        self._database_created = True
        self._wait_healthy("postgres")  # pg_isready, the same probe
        self._init_postgres()
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

    def _init_postgres(self) -> None:
        """The postgres image's first-start scripts (its /docker-entrypoint-initdb.d mounts),
        run as its superuser against this stack's database."""
        service = self.services["postgres"]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGHOST": "127.0.0.1",
            "PGPORT": "5432",
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": self.database,
            "POSTGRES_API_USER": self.api_role,
            "POSTGRES_API_PASSWORD": service["environment"]["POSTGRES_API_PASSWORD"],
        }
        for volume in service["volumes"]:
            host, inside = volume.split(":")[:2]
            if inside.startswith("/docker-entrypoint-initdb.d/"):
                subprocess.run(
                    ["/bin/sh", str(REPO / host)], env=env, check=True, capture_output=True
                )

    def _start_broker(self) -> None:
        conf = self._broker_mounts["/mosquitto/config/mosquitto.conf"].read_text()
        conf, listeners = re.subn(
            r"^listener 1883$", f"listener {self.mqtt_port} 127.0.0.1", conf, flags=re.M
        )
        assert listeners == 1, "mosquitto.conf should have one 1883 listener"
        conf, listeners = re.subn(
            r"^listener 1884$", f"listener {self.cloud_mqtt_port} 127.0.0.1", conf, flags=re.M
        )
        assert listeners == 1, "mosquitto.conf should have one 1884 listener (the cloud's)"
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
            stop_child(proc, 15)
        for _, _, log in self._procs:
            log.close()
        if self._database_created:
            with psycopg.connect(
                "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
            ) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                for role in (self.api_role, self.owner_role):
                    conn.execute(f'DROP ROLE IF EXISTS "{role}"')
