"""What a virtual board is: protocol, DIP address, size and the disputed per-board choices.

DESIGN.md §4 lists facts where open drivers disagree (bit polarity, whether a cu16 answers an
unlock, which 8A status byte holds channels 1-8); each is a field here so a test can build the
board a given driver was written against. Where a vendor document settles a fact (Kerong's
CU48 document: the unlock has no reply, boards 00-09, 0A the broadcast) it is the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProtocolFacts:
    baud: int
    addresses: range
    max_channels: int
    default_channels: int
    has_sensors: bool
    default_pulse_ms: int
    answers_unlock: bool = True


PROTOCOL_FACTS: dict[str, ProtocolFacts] = {
    # ADDR = board<<4 | (lock-1): the board number is a nibble.
    "kerong-cu16": ProtocolFacts(19200, range(0, 16), 16, 16, True, 500),
    # Kerong's CU48 document v2.1: DIP addresses 00-09 (0A reaches every board), and an
    # unlock is never answered.
    "kerong-cu48": ProtocolFacts(19200, range(0, 10), 48, 48, False, 500, answers_unlock=False),
    "kerong-cu48b": ProtocolFacts(19200, range(0, 256), 48, 48, True, 500),
    # 8A boards: 300 ms pulse (DESIGN.md §4, "Behaviour to model").
    "bcc-8a": ProtocolFacts(9600, range(0, 256), 64, 24, False, 300),
    # Modbus unicast addresses are 1..247; 0 is broadcast.
    "modbus-relay": ProtocolFacts(9600, range(1, 248), 32, 8, False, 500),
}
PROTOCOLS = tuple(PROTOCOL_FACTS)


@dataclass(frozen=True)
class BoardSpec:
    """One lock board on a virtual bus. Channels are numbered from 1."""

    protocol: str
    address: int
    channels: int | None = None  # None: the protocol's usual board size
    locked_level: int = 1  # input level that means "locked/closed" (most drivers: 1)
    # kerong: status frame after an unlock, or silence (None: as the protocol does; cu48
    # boards are silent, per Kerong's document)
    answers_unlock: bool | None = None
    pulse_ms: int | None = None  # lock pulse for unlock commands without their own length
    sensors: bool | None = None  # infrared occupancy sensors (None: as the protocol has)
    spring_open: bool = True  # an unlatched door springs open by itself
    status_width: int | None = None  # bcc-8a: inputs in a query-all reply (board size)
    # bcc-8a: which data byte holds channels 1-8; None: "last" on boards up to 24 inputs wide
    # (DESIGN §4's vector), "first" on wider ones (the 50-channel boards)
    status_byte_order: str | None = None
    reports_doors: bool = False  # bcc-8a: push 82 BOARD CH ST BCC when a door changes
    # kerong-cu48: the LOCK byte of status replies, which carries no meaning; None: a
    # different value every reply, so a master that relies on it fails
    reply_lock_byte: int | None = None
    facts: ProtocolFacts = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from simulator.errors import SpecError

        facts = PROTOCOL_FACTS.get(self.protocol)
        if facts is None:
            raise SpecError(
                f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}"
            )
        object.__setattr__(self, "facts", facts)
        if isinstance(self.address, bool) or not isinstance(self.address, int):
            raise SpecError(f"board address must be an integer, not {self.address!r}")
        if self.address not in facts.addresses:
            raise SpecError(
                f"{self.protocol} board address {self.address} is outside "
                f"{facts.addresses.start}..{facts.addresses.stop - 1}"
            )
        if self.channels is None:
            object.__setattr__(self, "channels", facts.default_channels)
        if (
            isinstance(self.channels, bool)
            or not isinstance(self.channels, int)
            or not 1 <= self.channels <= facts.max_channels
        ):
            raise SpecError(
                f"{self.protocol} board {self.address}: channels must be 1..{facts.max_channels}"
                f", not {self.channels!r}"
            )
        if self.locked_level not in (0, 1):
            raise SpecError(f"locked_level must be 0 or 1, not {self.locked_level!r}")
        if self.pulse_ms is None:
            object.__setattr__(self, "pulse_ms", facts.default_pulse_ms)
        if not isinstance(self.pulse_ms, int) or not 1 <= self.pulse_ms <= 60_000:
            raise SpecError(f"pulse_ms must be 1..60000, not {self.pulse_ms!r}")
        if self.sensors is None:
            object.__setattr__(self, "sensors", facts.has_sensors)
        if self.sensors and not facts.has_sensors:
            raise SpecError(f"{self.protocol} frames carry no occupancy sensors")
        width = self.status_width
        if width is None:
            width = -(-self.channels // 8) * 8 if self.protocol == "bcc-8a" else self.channels
            object.__setattr__(self, "status_width", width)
        if self.protocol == "bcc-8a" and (
            not isinstance(width, int) or width % 8 or not self.channels <= width <= 64
        ):
            raise SpecError(
                f"status_width must be a multiple of 8 between channels and 64, not {width!r}"
            )
        if self.status_byte_order is None:
            object.__setattr__(self, "status_byte_order", "last" if width <= 24 else "first")
        if self.status_byte_order not in ("last", "first"):
            raise SpecError("status_byte_order must be 'last' or 'first'")
        if self.answers_unlock is None:
            object.__setattr__(self, "answers_unlock", facts.answers_unlock)
        if not isinstance(self.answers_unlock, bool):
            raise SpecError(f"answers_unlock must be true or false, not {self.answers_unlock!r}")
        if not isinstance(self.reports_doors, bool) or (
            self.reports_doors and self.protocol != "bcc-8a"
        ):
            raise SpecError("reports_doors is a bcc-8a board's choice: true or false")
        if self.reply_lock_byte is not None and (
            self.protocol != "kerong-cu48"
            or isinstance(self.reply_lock_byte, bool)
            or self.reply_lock_byte not in range(0x100)
        ):
            raise SpecError("reply_lock_byte is a kerong-cu48 board's: 0..255 or None")

    @property
    def baud(self) -> int:
        return self.facts.baud
