"""The demo system, started and stopped in order.

In this process: the embedded MQTT broker (unless a real one is given) and the simulated
cabinet (two lock boards of different makes, one pty each). As child processes, exactly as
in production: the cloud API (``xinbao api``) and the cabinet's controller
(``xinbao controller``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx
import pyotp
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from simulator.errors import SimulatorError
from simulator.sim import Cabinet
from simulator.spec import BoardSpec
from xinbao.broker import BrokerStartError, EmbeddedBroker
from xinbao.demo_processes import HOST, Child, DemoError, Ports, UsageError, wait_for_http
from xinbao.demo_setup import (
    BUSES,
    COMPARTMENTS,
    LOCKER_ID,
    MQTT_CLOUD_USER,
    STAFF_USERNAME,
    DataDir,
    DataDirError,
    DemoState,
    controller_toml,
    locker_registration,
)

Say = Callable[[str], None]
START_TIMEOUT_S = 60.0
ONLINE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path
    fresh: bool
    ports: Ports
    mqtt_url: str | None  # None: the embedded broker


def split_mqtt_url(url: str) -> tuple[str, str | None, str | None]:
    """``mqtt://user:pw@host:port`` -> (URL without the credentials, user, password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise UsageError(f"--mqtt-url must look like mqtt://user:password@host:1883, not {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"--mqtt-url has a bad port: {url!r}") from None
    netloc = parts.hostname + (f":{port}" if port else "")
    bare = urlunsplit((parts.scheme, netloc, "", "", ""))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return bare, user, password


class DemoStack:
    def __init__(self, options: DemoOptions, say: Say) -> None:
        self.options = options
        self.say = say
        self.data = DataDir(options.data_dir)
        self.ports = options.ports
        self.state: DemoState | None = None
        self.reused = False
        self.broker: EmbeddedBroker | None = None
        self.cabinet: Cabinet | None = None
        self.api: Child | None = None
        self.controller: Child | None = None
        self.http = httpx.AsyncClient(timeout=10.0)
        self.staff_headers: dict[str, str] = {}
        # The demo staff's id, role and token generation (security.issue_token).
        self._staff: tuple[int, str, int] | None = None
        self.master_key = b""
        self.seeded = 0  # demo records added to the database at this start

    # --- addresses -------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.ports.api}"

    @property
    def kiosk_url(self) -> str:
        return f"http://{HOST}:{self.ports.kiosk}"

    @property
    def sim_url(self) -> str:
        return f"http://{HOST}:{self.ports.sim}"

    @property
    def integrator_headers(self) -> dict[str, str]:
        assert self.state is not None
        return {"X-API-Key": self.state.api_key}

    async def staff_number(self) -> str:
        """The demo staff's number at the cabinets (what the cloud syncs to the lockers)."""
        me = await self.http.get(f"{self.api_url}/api/v1/staff/me", headers=self.staff_headers)
        me.raise_for_status()
        body = me.json()
        return str(body.get("staff_no") or body["username"])

    def children(self) -> list[Child]:
        return [c for c in (self.controller, self.api) if c is not None]

    # --- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        from cloud_api.cli import DEMO_WARNING

        # Every piece of the demo binds HOST (loopback) only; the API refuses anything else.
        self.say(DEMO_WARNING)
        try:
            self.state, self.reused = self.data.prepare(self.options.fresh)
        except DataDirError as err:
            raise UsageError(str(err)) from None
        if self.reused:
            self.say(
                f"reusing the demo data in {self.data.path} (from {self.state.created_at}); "
                "--fresh starts over"
            )
        else:
            self.say(f"starting fresh in {self.data.path}")
        cloud_mqtt_url, locker_mqtt = await self._start_broker()
        self.say("preparing the cloud database (SQLite) ...")
        await asyncio.to_thread(self._prepare_database)
        if self.seeded:
            self.say(f"added {self.seeded} demo approval records (dashboard: Records)")
        self.say("starting the simulated cabinet (kerong-cu16 + bcc-8a boards on ptys) ...")
        ptys = self._start_cabinet()
        self.data.controller_config.write_text(
            controller_toml(
                self.data,
                master_key=self.master_key,
                ptys=ptys,
                kiosk_port=self.ports.kiosk,
                mqtt_url=locker_mqtt[0],
                mqtt_username=locker_mqtt[1],
                mqtt_password=locker_mqtt[2],
            ),
            encoding="utf-8",
        )
        self.say(f"starting the cloud API on {self.api_url} ...")
        self.api = Child(
            "cloud API",
            ["api", "--host", HOST, "--port", str(self.ports.api), "--no-migrate"],
            self._api_env(cloud_mqtt_url),
            self.data.log_dir / "api.log",
        )
        self.api.start()
        await wait_for_http(
            self.http, f"{self.api_url}/openapi.json", self.api, START_TIMEOUT_S, "cloud API"
        )
        await self._log_in()
        await self._register_locker()
        self.say(f"starting the cabinet's controller (kiosk on {self.kiosk_url}) ...")
        self.controller = Child(
            "controller",
            ["controller", "--config", str(self.data.controller_config)],
            dict(os.environ),
            self.data.log_dir / "controller.log",
        )
        self.controller.start()
        await wait_for_http(
            self.http, f"{self.kiosk_url}/api/status", self.controller, START_TIMEOUT_S, "kiosk"
        )
        await self._wait_locker_online()

    async def _start_broker(self) -> tuple[str, tuple[str, str | None, str | None]]:
        """(the cloud's MQTT URL, the locker's (URL, user, password))."""
        assert self.state is not None
        if self.options.mqtt_url is not None:
            bare, user, password = split_mqtt_url(self.options.mqtt_url)
            self.say(f"using the MQTT broker at {bare}")
            return self.options.mqtt_url, (bare, user, password)
        self.say(f"starting the embedded MQTT broker (amqtt) on {HOST}:{self.ports.mqtt} ...")
        self.broker = EmbeddedBroker(
            {
                MQTT_CLOUD_USER: self.state.mqtt_cloud_password,
                LOCKER_ID: self.state.mqtt_locker_password,
            },
            cloud_users=[MQTT_CLOUD_USER],
            host=HOST,
            port=self.ports.mqtt,
        )
        try:
            await self.broker.start()
        except BrokerStartError as err:
            self.broker = None
            raise UsageError(f"{err} (--mqtt-port)") from None
        password = quote(self.state.mqtt_cloud_password, safe="")
        cloud = f"mqtt://{MQTT_CLOUD_USER}:{password}@{HOST}:{self.broker.port}"
        return cloud, (self.broker.url, LOCKER_ID, self.state.mqtt_locker_password)

    def _prepare_database(self) -> None:
        from cloud_api.core.config import Settings
        from cloud_api.core.db import make_engine, migrate
        from cloud_api.models.common import utcnow
        from cloud_api.models.staff import Role, Scope, Staff
        from cloud_api.services import bootstrap
        from cloud_api.services import staff as staff_service

        state = self.state
        assert state is not None
        settings = Settings(
            demo=True,
            database_url=self.data.database_url,
            master_secret=state.master_secret,
            token_secret=state.token_secret,
        )
        self.master_key = settings.master_key
        try:
            migrate(self.data.database_url)
            engine = make_engine(self.data.database_url)
        except SQLAlchemyError as err:
            raise DemoError(f"cannot prepare {self.data.database_url}: {err}") from None
        try:
            with Session(engine, expire_on_commit=False) as session:
                staff = session.scalar(select(Staff).where(Staff.username == STAFF_USERNAME))
            if staff is None:
                staff = bootstrap.create_staff(
                    engine, STAFF_USERNAME, state.staff_password, Role.admin
                )
                with Session(engine, expire_on_commit=False) as session:
                    staff = session.get(Staff, staff.id)
                    staff_service.begin_totp(session, staff)
                    # The secret is chosen by the demo (and kept in demo.json) so that it can
                    # be printed and survives a restart; enrolment itself is the real path.
                    staff.totp_secret = state.totp_secret
                    session.commit()
                    # With the code of the step before: confirming spends it, and the
                    # person reading the banner may type the current one at once.
                    earlier = pyotp.TOTP(state.totp_secret).at(utcnow() - timedelta(seconds=30))
                    staff_service.confirm_totp(session, staff, earlier, utcnow())
            self._staff = (staff.id, staff.role, staff.token_generation)
            if not state.api_key:
                _, state.api_key = bootstrap.create_api_key(
                    engine,
                    "demo approval system",
                    [Scope.records_write, Scope.handovers_write, Scope.lockers_read],
                )
                self.data.save(state)
            # A few records in different states, so the dashboard's records page has some.
            self.seeded = bootstrap.seed_demo_records(engine)
        except SQLAlchemyError as err:
            raise DemoError(f"cannot create the demo accounts: {err}") from None
        finally:
            engine.dispose()

    def _start_cabinet(self) -> list[str]:
        cabinet = Cabinet()
        self.cabinet = cabinet
        ptys = []
        try:
            for bus in BUSES:
                sim = cabinet.add_bus(
                    bus.name,
                    [BoardSpec(protocol=bus.protocol, address=bus.address, channels=bus.channels)],
                )
                ptys.append(sim.start_pty())
            buses = list(cabinet.buses.values())
            for c in COMPARTMENTS:  # the panel names each door by its compartment, as staff do
                buses[c.bus].label(BUSES[c.bus].address, c.channel, f"#{c.number} {c.size}")
            cabinet.start_control(HOST, self.ports.sim)
        except SimulatorError as err:
            raise UsageError(f"cannot start the simulator: {err} (--sim-port)") from None
        return ptys

    def _api_env(self, mqtt_url: str) -> dict[str, str]:
        # Inherited XINBAO_* settings would make the demo behave unlike its description.
        env = {k: v for k, v in os.environ.items() if not k.startswith("XINBAO_")}
        env.pop("DATABASE_URL", None)
        env.update(
            DATABASE_URL=self.data.database_url,
            XINBAO_DEMO="1",
            XINBAO_MASTER_SECRET=self.state.master_secret,
            XINBAO_TOKEN_SECRET=self.state.token_secret,
            XINBAO_MQTT_URL=mqtt_url,
            XINBAO_SMS_PROVIDER="console",
            XINBAO_SMS_INTERVAL_SECONDS="0.5",
            XINBAO_SERVICE_PHONE="12345",
            # The thank-you SMS's rating link leads to this demo's own rating page.
            XINBAO_RATING_URL=f"{self.api_url}/rate",
        )
        return env

    async def _log_in(self) -> None:
        """A session for the demo's own staff calls, signed with the demo's token secret.

        Not a log-in with the staff's one-time code: the cloud takes each TOTP code once
        (replay guard), and the person reading the banner is about to type the current one
        into the dashboard. It counts as a full log-in (the demo holds the TOTP secret), so the
        scenario can ask for a staff pass for the cabinet."""
        from cloud_api.core.security import issue_token
        from cloud_api.models.common import utcnow

        assert self._staff is not None and self.state is not None
        staff_id, role, generation = self._staff
        token = issue_token(
            self.state.token_secret.encode(),
            staff_id,
            role,
            utcnow(),
            timedelta(hours=24),
            generation=generation,
            mfa=True,
        )
        self.staff_headers = {"Authorization": f"Bearer {token}"}
        response = await self.http.get(
            f"{self.api_url}/api/v1/staff/me", headers=self.staff_headers
        )
        if response.status_code != 200:
            raise DemoError(f"the demo staff session is refused: HTTP {response.status_code}")

    async def _register_locker(self) -> None:
        assert self.state is not None
        url = f"{self.api_url}/api/v1/lockers"
        found = await self.http.get(f"{url}/{LOCKER_ID}", headers=self.staff_headers)
        if found.status_code == 200:
            return
        response = await self.http.post(url, json=locker_registration(), headers=self.staff_headers)
        if response.status_code != 201:
            raise DemoError(
                f"cannot register the demo locker: HTTP {response.status_code} {response.text}"
            )
        self.state.locker_http_key = response.json()["locker_key"]
        self.data.save(self.state)
        self.say(f"registered locker {LOCKER_ID} in the cloud")

    async def locker_view(self) -> dict:
        response = await self.http.get(
            f"{self.api_url}/api/v1/lockers/{LOCKER_ID}", headers=self.staff_headers
        )
        response.raise_for_status()
        return response.json()

    async def _wait_locker_online(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ONLINE_TIMEOUT_S
        while loop.time() < deadline:
            self.check_children()
            view = await self.locker_view()
            if "online" not in view:
                self.say("(this cloud build reports no locker presence; not waiting for it)")
                return
            if view["online"]:
                self.say(f"locker {LOCKER_ID} is on line in the cloud (MQTT)")
                return
            await asyncio.sleep(0.3)
        raise DemoError(
            f"locker {LOCKER_ID} did not come on line in the cloud within "
            f"{ONLINE_TIMEOUT_S:.0f} s; see {self.data.log_dir}"
        )

    def check_children(self) -> None:
        for child in self.children():
            if child.exit_code is not None:
                raise child.died()

    # --- stop ------------------------------------------------------------------------------

    async def stop(self) -> None:
        # Controller first: it is the one that still has events to hand to the cloud.
        for child in (self.controller, self.api):
            if child is not None:
                await child.stop()
        if self.cabinet is not None:
            await asyncio.to_thread(self.cabinet.stop)
            self.cabinet = None
        if self.broker is not None:
            await self.broker.stop()
            self.broker = None
        await self.http.aclose()
