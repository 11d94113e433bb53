"""What ``xinbao demo`` keeps in its data directory, and the cabinet it simulates.

The data directory holds the cloud's SQLite database, the controller's config and state, the
child processes' logs and ``demo.json`` (the demo accounts and secrets, mode 0600). A second
run reuses all of it, so the staff's TOTP app keeps working; ``--fresh`` starts over.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyotp

from xinbao.codes import derive_locker_key

STATE_FILE = "demo.json"
STATE_VERSION = 1
LOCKER_ID = "XA-DEMO-1"
LOCKER_SITE = "西安国际港务区政务服务中心 (demo)"
LOCKER_ADDRESS = "港务大道 1 号 / 1 Gangwu Avenue, Xi'an"
LOCKER_LAT, LOCKER_LON = 34.3712, 109.0406
STAFF_USERNAME = "demo"
MQTT_CLOUD_USER = "cloud"


class DataDirError(RuntimeError):
    """The data directory cannot be used (not ours, unreadable, not writable)."""


@dataclass(frozen=True)
class BusLayout:
    name: str
    protocol: str
    address: int  # the board's DIP address; unique across buses, as the cloud wires by board
    channels: int


@dataclass(frozen=True)
class CompartmentLayout:
    number: int
    size: str
    bus: int
    channel: int


# Two boards of different makes, mixed sizes: what a real cabinet retrofit looks like.
BUSES = (
    BusLayout("cu16", "kerong-cu16", address=1, channels=16),
    BusLayout("bcc8a", "bcc-8a", address=2, channels=8),
)
COMPARTMENTS = (
    CompartmentLayout(1, "S", bus=0, channel=1),
    CompartmentLayout(2, "S", bus=0, channel=2),
    CompartmentLayout(3, "M", bus=0, channel=3),
    CompartmentLayout(4, "L", bus=0, channel=4),
    CompartmentLayout(5, "S", bus=1, channel=1),
    CompartmentLayout(6, "M", bus=1, channel=2),
    CompartmentLayout(7, "M", bus=1, channel=3),
    CompartmentLayout(8, "L", bus=1, channel=4),
)


def board_of(compartment: int) -> tuple[BusLayout, int]:
    """(bus, channel) wiring of a compartment number."""
    for c in COMPARTMENTS:
        if c.number == compartment:
            return BUSES[c.bus], c.channel
    raise KeyError(f"the demo cabinet has no compartment {compartment}")


@dataclass
class DemoState:
    """The demo's accounts and secrets; written once, reused by later runs."""

    created_at: str
    staff_password: str
    totp_secret: str
    api_key: str = ""
    mqtt_cloud_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    mqtt_locker_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    locker_http_key: str = ""
    # The cloud's secrets, made up here (not built in) and handed to the API process.
    master_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    token_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    version: int = STATE_VERSION

    @classmethod
    def new(cls) -> DemoState:
        return cls(
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            # Easy to type in the dashboard, still not a built-in password.
            staff_password="demo-" + secrets.token_hex(4),
            totp_secret=pyotp.random_base32(),
        )

    @property
    def otpauth_uri(self) -> str:
        return pyotp.TOTP(self.totp_secret).provisioning_uri(
            name=STAFF_USERNAME, issuer_name="Xinbao demo"
        )


class DataDir:
    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.path / 'cloud.db'}"

    @property
    def controller_dir(self) -> Path:
        return self.path / "controller"

    @property
    def controller_config(self) -> Path:
        return self.path / "controller.toml"

    @property
    def log_dir(self) -> Path:
        return self.path / "logs"

    def prepare(self, fresh: bool) -> tuple[DemoState, bool]:
        """The state to use and whether it was reused. Refuses a directory that is not ours."""
        if self.path.exists() and not self.path.is_dir():
            raise DataDirError(f"{self.path} exists and is not a directory")
        if self.path.is_dir() and any(self.path.iterdir()) and not self.state_file.exists():
            raise DataDirError(
                f"{self.path} is not empty and holds no {STATE_FILE}: it is not a demo data "
                "directory; choose another with --data-dir"
            )
        if fresh and self.state_file.exists():
            shutil.rmtree(self.path)
        try:
            # The demo's databases and secrets: for this user only.
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)
            self.log_dir.mkdir(mode=0o700, exist_ok=True)
            self.controller_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as err:
            raise DataDirError(f"cannot create {self.path}: {err.strerror}") from None
        if self.state_file.exists():
            state = self._load()
            self.save(state)  # a state from before the secrets were kept gets them now
            return state, True
        state = DemoState.new()
        self.save(state)
        return state, False

    def _load(self) -> DemoState:
        try:
            raw = json.loads(self.state_file.read_text(encoding="utf-8"))
            if raw.get("version") != STATE_VERSION:
                raise DataDirError(
                    f"{self.state_file} is from another demo version; start over with --fresh"
                )
            return DemoState(**raw)
        except (OSError, ValueError, TypeError) as err:
            raise DataDirError(
                f"cannot read {self.state_file} ({err}); start over with --fresh"
            ) from None

    def save(self, state: DemoState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        # The file holds passwords: readable by this user only, and written whole or not at all.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(state), out, indent=2)
        tmp.replace(self.state_file)


def locker_registration() -> dict:
    """The body of ``POST /api/v1/lockers`` for the demo cabinet."""
    return {
        "id": LOCKER_ID,
        "site": LOCKER_SITE,
        "address": LOCKER_ADDRESS,
        "latitude": LOCKER_LAT,
        "longitude": LOCKER_LON,
        "compartments": [
            {
                "number": c.number,
                "size": c.size,
                "board": BUSES[c.bus].address,
                "channel": c.channel,
            }
            for c in COMPARTMENTS
        ],
    }


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def controller_toml(
    data_dir: DataDir,
    *,
    master_key: bytes,
    ptys: list[str],
    kiosk_port: int,
    mqtt_url: str,
    mqtt_username: str | None,
    mqtt_password: str | None,
) -> str:
    """The controller's config for the simulated cabinet (one pty per bus)."""
    key = derive_locker_key(master_key, LOCKER_ID).hex()
    lines = [
        "# Written by `xinbao demo` for the simulated cabinet; rewritten on every start.",
        f"locker_id = {_toml_str(LOCKER_ID)}",
        f"locker_key_hex = {_toml_str(key)}",
        f"data_dir = {_toml_str(str(data_dir.controller_dir))}",
        "poll_interval_s = 0.2",
        "",
        "[mqtt]",
        f"url = {_toml_str(mqtt_url)}",
    ]
    if mqtt_username is not None:
        lines.append(f"username = {_toml_str(mqtt_username)}")
    if mqtt_password is not None:
        lines.append(f"password = {_toml_str(mqtt_password)}")
    lines += [
        "keepalive_s = 10",
        "reconnect_max_s = 5",
        "telemetry_interval_s = 10",
        "",
        "[kiosk]",
        'host = "127.0.0.1"',
        f"port = {kiosk_port}",
    ]
    for bus, pty in zip(BUSES, ptys, strict=True):
        lines += [
            "",
            "[[buses]]",
            f"port = {_toml_str(pty)}",
            f"protocol = {_toml_str(bus.protocol)}",
            "  [[buses.boards]]",
            f"  address = {bus.address}",
            f"  channels = {bus.channels}",
        ]
    for c in COMPARTMENTS:
        lines += [
            "",
            "[[compartments]]",
            f"number = {c.number}",
            f'size = "{c.size}"',
            f"bus = {c.bus}",
            f"board = {BUSES[c.bus].address}",
            f"channel = {c.channel}",
        ]
    return "\n".join(lines) + "\n"
