"""The controller's TOML config file: typed, checked once at start, errors name line and field.

locker_id = "XA-0001"
locker_key_hex = "…64 hex digits…"   # or master_key_hex (demo/test: derive the key)
data_dir = "/var/lib/xinbao"
poll_interval_s = 0.2

[mqtt]
url = "mqtts://broker.example:8883"   # mqtt:// plain, mqtts:// TLS
username = "XA-0001"
password = "…"

[kiosk]
host = "0.0.0.0"
port = 8080

[[buses]]
port = "/dev/ttyUSB0"
protocol = "kerong-cu16"
  [[buses.boards]]
  address = 1
  channels = 16

[[compartments]]
number = 1
size = "M"
board = 1
channel = 1
"""

from __future__ import annotations

import re
import tomllib
from ipaddress import ip_network
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    ValidationError,
    field_validator,
    model_validator,
)

from firmware_bridge.config import BoardConfig
from firmware_bridge.errors import ConfigError as BridgeConfigError
from locker_controller.errors import ConfigError
from xinbao.codes import derive_locker_key
from xinbao.contract import LOCKER_ID_RE
from xinbao.scrape_gate import ScrapeGate
from xinbao.secret_strength import weakness

PROTOCOL_NAMES = ("kerong-cu16", "kerong-cu48", "kerong-cu48b", "bcc-8a", "modbus-relay")


class _Section(BaseModel):
    # A misspelt key is a mistake the operator must hear about, not a silent default.
    model_config = ConfigDict(extra="forbid")


class MqttSettings(_Section):
    url: str
    username: str | None = None
    password: str | None = None
    # Checked at load time: a missing file would otherwise only fail inside paho's tls_set.
    ca_file: FilePath | None = None
    client_cert: FilePath | None = None
    client_key: FilePath | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_max_s: float = Field(default=30.0, ge=0.5, le=3600)
    telemetry_interval_s: float = Field(default=30.0, ge=0.5, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as err:
            raise ValueError(f"bad port: {err}") from None
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class KioskSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Requests to /api/code, /api/reopen and /api/staff/login per client: a burst, then a
    # steady rate. A person types a code in seconds; a script flooding the keypad gets 429s.
    rate_burst: int = Field(default=20, ge=1, le=10_000)
    rate_per_s: float = Field(default=1.0, gt=0, le=10_000)


class MetricsSettings(_Section):
    """Who may read the kiosk's GET /metrics (xinbao.scrape_gate): with a token, whoever
    sends it (and is in ``allow`` if that is given); without one, only the addresses in
    ``allow``, this machine's loopback by default."""

    token: str | None = Field(default=None, min_length=32, max_length=256, repr=False)
    allow: list[str] | None = None

    @field_validator("token")
    @classmethod
    def _strong(cls, value: str | None) -> str | None:
        if value is not None and (why := weakness(value)) is not None:
            raise ValueError(f"is not a random token ({why})")
        return value

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            try:
                ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item[:60]!r} is not an address or network (e.g. 10.0.0.0/8)"
                ) from None
        return value

    def gate(self) -> ScrapeGate:
        networks = (
            tuple(ip_network(n, strict=False) for n in self.allow)
            if self.allow is not None
            else None
        )
        return ScrapeGate(token=self.token or "", allow=networks)


class BoardSettings(_Section):
    """Mirrors firmware_bridge.BoardConfig; None takes the protocol's usual value."""

    address: int = Field(ge=0, le=255)
    channels: int | None = Field(default=None, ge=1, le=64)
    locked_level: Literal[0, 1] = 1
    answers_unlock: bool | None = None  # None: the protocol's (kerong-cu48: false)
    pulse_ms: int | None = Field(default=None, ge=100, le=25_500)
    channel_base: Literal[0, 1] | None = None
    has_sensors: bool | None = None
    # bcc-8a: inputs in a status reply (24, 48, 56...; None: learnt from the board) and which
    # data byte holds channels 1-8 (None: "last" up to 24 channels, "first" above).
    status_width: int | None = Field(default=None, ge=8, le=64, multiple_of=8)
    status_byte_order: Literal["last", "first"] | None = None


class BusSettings(_Section):
    port: str = Field(min_length=1)
    protocol: Literal["kerong-cu16", "kerong-cu48", "kerong-cu48b", "bcc-8a", "modbus-relay"]
    baud: int | None = Field(default=None, ge=300, le=4_000_000)
    rs485: bool = False
    timeout_s: float | None = Field(default=None, gt=0, le=10)
    boards: list[BoardSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_boards(self) -> BusSettings:
        seen = set()
        for board in self.boards:
            if board.address in seen:
                raise ValueError(f"board address {board.address} appears twice on this bus")
            seen.add(board.address)
        return self

    def board_configs(self) -> list[BoardConfig]:
        """The boards as firmware_bridge takes them; firmware_bridge checks protocol limits."""
        return [BoardConfig(protocol=self.protocol, **b.model_dump()) for b in self.boards]


class CompartmentSettings(_Section):
    number: int = Field(ge=1, le=10_000)
    size: Literal["S", "M", "L"]
    bus: int = Field(default=0, ge=0)
    board: int = Field(ge=0, le=255)
    channel: int = Field(ge=1, le=64)


class ControllerConfig(_Section):
    locker_id: str
    locker_key_hex: str | None = None
    master_key_hex: str | None = None
    data_dir: Path
    poll_interval_s: float = Field(default=0.25, ge=0.02, le=60)
    debounce_polls: int = Field(default=2, ge=1, le=20)
    door_left_open_after_s: float = Field(default=120.0, gt=0, le=86_400)
    reopen_window_s: float = Field(default=60.0, ge=0, le=3600)
    code_digits: int = Field(default=8, ge=6, le=10)
    lockout_threshold: int = Field(default=5, ge=1, le=10)
    lockout_base_s: float = Field(default=30.0, gt=0, le=86_400)
    lockout_max_s: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    # Failures leak away (one per lockout_forgive_s); levels drop one per quiet
    # lockout_level_decay_s. Successes reset nothing (xinbao/lockout.py).
    lockout_forgive_s: float = Field(default=720.0, gt=0, le=86_400)
    lockout_level_decay_s: float = Field(default=2400.0, gt=0, le=7 * 86_400)
    staff_session_s: float = Field(default=300.0, gt=0, le=86_400)
    # Lost-code requests forwarded to the cloud an hour at most (the cloud has its own,
    # lower limit); beyond it the kiosk answers as ever and forwards nothing, so a keypad
    # flood does not fill the outbox.
    lost_code_per_hour: int = Field(default=30, ge=1, le=3600)
    mqtt: MqttSettings | None = None
    kiosk: KioskSettings = Field(default_factory=KioskSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    buses: list[BusSettings] = Field(min_length=1)
    compartments: list[CompartmentSettings] = Field(min_length=1)

    @field_validator("locker_id")
    @classmethod
    def _locker_id(cls, value: str) -> str:
        if not LOCKER_ID_RE.match(value):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("locker_key_hex", "master_key_hex")
    @classmethod
    def _hex(cls, value: str | None, info) -> str | None:
        if value is None:
            return value
        if not re.fullmatch(r"(?:[0-9a-fA-F]{2}){16,64}", value):
            raise ValueError("must be 32 to 128 hex digits")
        # A placeholder locker key ("00" * 32) lets anyone compute this cabinet's codes. The
        # master key is for tests and the demo only, which use fixed values on purpose.
        why = weakness(value) if info.field_name == "locker_key_hex" else None
        if why is not None:
            raise ValueError(
                f"is not a random key ({why}): use the key the cloud derived for this locker"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ControllerConfig:
        if (self.locker_key_hex is None) == (self.master_key_hex is None):
            raise ValueError("give exactly one of locker_key_hex and master_key_hex")
        resolved: list[dict[int, BoardConfig]] = []
        for i, bus in enumerate(self.buses):
            boards = {}
            for j, board in enumerate(bus.boards):
                try:
                    boards[board.address] = BoardConfig(protocol=bus.protocol, **board.model_dump())
                except BridgeConfigError as err:
                    raise ValueError(f"buses[{i}].boards[{j}]: {err}") from None
            resolved.append(boards)
        numbers: set[int] = set()
        wired: set[tuple[int, int, int]] = set()
        for i, c in enumerate(self.compartments):
            where = f"compartments[{i}]"
            if c.number in numbers:
                raise ValueError(f"{where}: compartment number {c.number} appears twice")
            numbers.add(c.number)
            if c.bus >= len(self.buses):
                raise ValueError(f"{where}: bus {c.bus} does not exist")
            board = resolved[c.bus].get(c.board)
            if board is None:
                raise ValueError(f"{where}: board {c.board} is not on bus {c.bus}")
            if c.channel > board.channels:
                raise ValueError(f"{where}: board {c.board} has only {board.channels} channels")
            if (c.bus, c.board, c.channel) in wired:
                raise ValueError(f"{where}: board {c.board} channel {c.channel} is used twice")
            wired.add((c.bus, c.board, c.channel))
        return self

    @property
    def locker_key(self) -> bytes:
        if self.locker_key_hex is not None:
            return bytes.fromhex(self.locker_key_hex)
        assert self.master_key_hex is not None
        return derive_locker_key(bytes.fromhex(self.master_key_hex), self.locker_id)


# --- line tracking --------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def _line_index(source: str) -> dict[tuple[Any, ...], int]:
    """Where each table, array-of-tables entry and key starts, by pydantic-style path.

    Handles what the config uses: ``[table]``, ``[[array]]`` (also nested, like
    ``[[buses.boards]]``) and ``key = value`` lines. Anything fancier (inline tables) falls
    back to the nearest enclosing path, which still points the operator at the right place.
    """
    index: dict[tuple[Any, ...], int] = {}
    counters: dict[tuple[Any, ...], int] = {}
    current: tuple[Any, ...] = ()
    for number, line in enumerate(source.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            names = header.group(2).split(".")
            # Resolve every parent name to its latest array entry, as TOML does.
            path: tuple[Any, ...] = ()
            for name in names[:-1]:
                path += (name,)
                if path in counters:
                    path += (counters[path],)
            path += (names[-1],)
            if header.group(1) == "[[":
                counters[path] = counters.get(path, -1) + 1
                index.setdefault(path, number)
                path += (counters[path],)
            index[path] = number
            current = path
            continue
        key = _KEY.match(line)
        if key:
            index.setdefault(current + (key.group(1),), number)
    return index


def _locate(index: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in index:
            return index[loc[:end]]
    return None


_PATH_IN_MESSAGE = re.compile(r"^((?:\w+\[\d+\]\.?)+): (.*)$", re.S)
_PATH_PART = re.compile(r"(\w+)\[(\d+)\]")


def parse_config(source: str, *, name: str = "config") -> ControllerConfig:
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as err:
        line = getattr(err, "lineno", None)
        if line is None:
            found = re.search(r"line (\d+)", str(err))
            line = int(found.group(1)) if found else None
        raise ConfigError(f"{name}: not valid TOML: {err}", line=line) from None
    try:
        return ControllerConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        message = _in_words(first)
        index = _line_index(source)
        nested = _PATH_IN_MESSAGE.match(message)
        if nested:  # a cross-field check names the entry it is about
            loc = tuple(
                part for name, i in _PATH_PART.findall(nested.group(1)) for part in (name, int(i))
            )
            message = nested.group(2)
        field = ".".join(str(p) for p in loc) or None
        line = _locate(index, loc) if loc else None
        place = _place(raw, loc) if loc else None
        raise ConfigError(message, line=line, field=field, place=place, source=name) from None


def _place(raw: dict, loc: tuple) -> str:
    """A setting's path in the words of the file's reader: compartments by their number,
    buses and boards counted from 1 (``compartment 3, size``; ``bus 1, board 2, address``)."""
    words: list[str] = []
    node: object = raw
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if parts and isinstance(parts[0], int) and isinstance(node, dict):
            index = parts.pop(0)
            items = node.get(part)
            entry = items[index] if isinstance(items, list) and index < len(items) else None
            node = entry
            label = {"compartments": "compartment", "buses": "bus", "boards": "board"}.get(
                part, part
            )
            known = (
                entry.get("number" if part == "compartments" else "address")
                if isinstance(entry, dict)
                else None
            )
            if part == "compartments" and isinstance(known, int):
                words.append(f"compartment {known}")
            elif part == "boards" and isinstance(known, int):
                words.append(f"board {known}")
            elif part == "buses":
                words.append(f"bus {index + 1}")
            else:
                words.append(f"{label} entry {index + 1}")
        else:
            words.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ", ".join(words)


_WORDS = {
    "missing": lambda e: "is missing",
    "int_parsing": lambda e: "must be a whole number",
    "int_type": lambda e: "must be a whole number",
    "int_from_float": lambda e: "must be a whole number",
    "float_parsing": lambda e: "must be a number",
    "float_type": lambda e: "must be a number",
    "bool_parsing": lambda e: "must be true or false",
    "bool_type": lambda e: "must be true or false",
    "string_type": lambda e: "must be text in quotes",
    "greater_than": lambda e: f"must be more than {e['ctx']['gt']}",
    "greater_than_equal": lambda e: f"must be at least {e['ctx']['ge']}",
    "less_than": lambda e: f"must be less than {e['ctx']['lt']}",
    "less_than_equal": lambda e: f"must be at most {e['ctx']['le']}",
    "multiple_of": lambda e: f"must be a multiple of {e['ctx']['multiple_of']}",
    "literal_error": lambda e: f"must be one of {e['ctx']['expected']}",
}


def _in_words(error: dict) -> str:
    """pydantic's message as a person would say it ("unknown setting 'colour'", "must be
    at least 1"), with the value that was given where it helps."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown setting {error['loc'][-1]!r}: remove it, or check its spelling"
    said = _WORDS.get(kind)
    if said is None:
        return error["msg"].removeprefix("Value error, ")
    try:
        text = said(error)
    except (KeyError, TypeError):
        return error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if kind != "missing" and isinstance(given, str | int | float) and not isinstance(given, bool):
        text += f" (not {given!r})"
    return text


def load_config(path: Path) -> ControllerConfig:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    return parse_config(source, name=str(path))
