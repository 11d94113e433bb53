"""Per-board settings: the choices DESIGN.md §4 says open drivers disagree on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from firmware_bridge.errors import ConfigError
from firmware_bridge.protocols import LockProtocol, get_protocol


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BoardConfig:
    """One board on the bus. ``None`` fields take the protocol's usual value.

    channels:       locks wired to the board. None: the protocol's board size, or for
                    bcc-8a as many inputs as the board reports.
    locked_level:   input level that means locked/closed (most drivers: 1).
    occupied_level: sensor level that means an item is inside.
    answers_unlock: whether the board replies to an unlock. None: the protocol's word (cu48:
                    no, per Kerong's document; some cu16 stay silent too).
    pulse_ms:       lock pulse; sent in the frame on Modbus relays, waited out on every board.
    channel_base:   the number the board gives its first lock in request frames (the API
                    numbers channels from 1 whatever this is).
    has_sensors:    whether to report the infrared occupancy inputs the frames carry.
    status_width:   bcc-8a: inputs the board's status reply carries (8 per data byte; 24 on a
                    24-channel board, 56 on a 50-channel one), which its replies are framed
                    on. None: learnt from the board's replies.
    status_byte_order: bcc-8a query-all replies: "last" data byte holds channels 1-8
                    (24-channel boards, DESIGN.md §4 vector) or "first" (50-channel boards).
                    None: by the reply's width, "last" up to 24 inputs, "first" above.
    """

    protocol: str
    address: int
    channels: int | None = None
    locked_level: int = 1
    occupied_level: int = 1
    answers_unlock: bool | None = None
    pulse_ms: int | None = None
    channel_base: int | None = None
    has_sensors: bool | None = None
    status_width: int | None = None
    status_byte_order: str | None = None

    def __post_init__(self) -> None:
        proto = get_protocol(self.protocol)
        check_address(proto, self.address)
        where = f"{self.protocol} board {self.address}"
        if self.channels is None:
            object.__setattr__(self, "channels", proto.default_channels)
        if self.channels is not None and (
            not _is_int(self.channels) or not 1 <= self.channels <= proto.max_channels
        ):
            raise ConfigError(
                f"{where}: channels must be 1..{proto.max_channels}, not {self.channels!r}",
                board=self.address,
            )
        for name in ("locked_level", "occupied_level"):
            if getattr(self, name) not in (0, 1) or isinstance(getattr(self, name), bool):
                raise ConfigError(f"{where}: {name} must be 0 or 1", board=self.address)
        if self.answers_unlock is None:
            object.__setattr__(self, "answers_unlock", proto.answers_unlock)
        if not isinstance(self.answers_unlock, bool):
            raise ConfigError(f"{where}: answers_unlock must be true or false", board=self.address)
        if self.pulse_ms is None:
            object.__setattr__(self, "pulse_ms", proto.pulse_ms)
        if not _is_int(self.pulse_ms) or not 50 <= self.pulse_ms <= 25_500:
            raise ConfigError(
                f"{where}: pulse_ms must be 50..25500, not {self.pulse_ms!r}", board=self.address
            )
        if self.channel_base is None:
            object.__setattr__(self, "channel_base", proto.channel_base)
        if self.channel_base not in (0, 1) or isinstance(self.channel_base, bool):
            raise ConfigError(f"{where}: channel_base must be 0 or 1", board=self.address)
        if self.has_sensors and not proto.has_sensors:
            raise ConfigError(
                f"{where}: {self.protocol} frames carry no occupancy sensors", board=self.address
            )
        if self.status_width is not None and (
            self.protocol != "bcc-8a"
            or not _is_int(self.status_width)
            or self.status_width % 8
            or not (self.channels or 1) <= self.status_width <= proto.max_channels
        ):
            raise ConfigError(
                f"{where}: status_width is for bcc-8a boards: a multiple of 8 from the channel "
                f"count to {proto.max_channels}, not {self.status_width!r}",
                board=self.address,
            )
        if self.status_byte_order not in (None, "last", "first"):
            raise ConfigError(
                f"{where}: status_byte_order must be 'last' or 'first'", board=self.address
            )

    @property
    def codec(self) -> LockProtocol:
        return get_protocol(self.protocol)

    @property
    def sensors(self) -> bool:
        """Whether occupancy is reported (the protocol carries it and it is not turned off)."""
        return self.codec.has_sensors if self.has_sensors is None else self.has_sensors

    def check_channel(self, channel: object) -> int:
        """``channel`` (1-based) if this board has it; ConfigError naming board and channel."""
        top = self.channels or self.codec.max_channels
        if not _is_int(channel) or not 1 <= channel <= top:
            raise ConfigError(
                f"{self.protocol} board {self.address} has channels 1..{top}, not {channel!r}",
                board=self.address,
                channel=channel if _is_int(channel) else None,
            )
        return channel

    def wire_channel(self, channel: int) -> int:
        """The lock number a request frame carries for API channel ``channel``."""
        return self.check_channel(channel) - 1 + self.channel_base


def check_address(proto: LockProtocol, address: object) -> int:
    if not _is_int(address) or address not in proto.addresses:
        top = proto.addresses.stop - 1
        raise ConfigError(
            f"{proto.name} board address must be {proto.addresses.start}..{top}, not {address!r}",
            board=address if _is_int(address) else None,
        )
    return address


def board_table(proto: LockProtocol, boards: Iterable[BoardConfig]) -> dict[int, BoardConfig]:
    """The boards of one bus by address; ConfigError for a board of another protocol or an
    address configured twice."""
    table: dict[int, BoardConfig] = {}
    for config in boards:
        if config.protocol != proto.name:
            raise ConfigError(
                f"board {config.address} is configured as {config.protocol} on a {proto.name} bus",
                board=config.address,
            )
        if config.address in table:
            raise ConfigError(f"board {config.address} is configured twice", board=config.address)
        table[config.address] = config
    return table
