"""Faults a tester can inject into a virtual board, with their parameters.

Each fault is a small declarative record; the board and the bus ask "is fault X active for
this channel?" and act on it. Faults that concern the whole reply path (absent, garbage,
bad_checksum, slow, duplicate_address, split_reply) are per board; door faults may name one channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator.errors import FaultError


@dataclass(frozen=True)
class FaultKind:
    name: str
    per_channel: bool  # may name a channel (None still means every channel)
    params: dict[str, Any]  # parameter name -> default
    help: str


def _garbage_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            data = bytes.fromhex(value)
        except ValueError as err:
            raise FaultError(f"garbage bytes must be hex such as 'FA FD 99 99': {err}") from err
    elif isinstance(value, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in value):
        data = bytes(value)
    else:
        raise FaultError("garbage bytes must be hex text, bytes or a list of 0..255")
    if not 1 <= len(data) <= 256:
        raise FaultError("garbage must be 1..256 bytes")
    return data


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 60:
        raise FaultError(f"slow reply delay must be 0..60 seconds, not {value!r}")
    return float(value)


FAULT_KINDS: dict[str, FaultKind] = {
    k.name: k
    for k in (
        FaultKind("absent", False, {}, "board is silent and does nothing (unpowered)"),
        FaultKind("garbage", False, {"bytes": "FA FD 99 99"}, "line noise before each reply"),
        FaultKind("bad_checksum", False, {}, "replies carry a wrong checksum"),
        FaultKind("slow", False, {"seconds": 2.0}, "replies come this many seconds late"),
        FaultKind("jammed", True, {}, "lock pulse fires, door stays shut"),
        FaultKind("forced_open", True, {}, "door is forced open now, with no command"),
        FaultKind("left_open", True, {}, "door cannot be closed"),
        FaultKind("duplicate_address", False, {}, "a second board answers the same address"),
        FaultKind(
            "split_reply",
            False,
            {"after": 5, "seconds": 0.05},
            "each reply pauses after this many bytes (a USB adapter's bursts, a busy host)",
        ),
    )
}


def _byte_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
        raise FaultError(f"a split reply pauses after 1..255 bytes, not {value!r}")
    return value


_PARAM_CHECKS = {"bytes": _garbage_bytes, "seconds": _seconds, "after": _byte_count}


@dataclass(frozen=True)
class Fault:
    kind: str
    board: int
    channel: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        params = {
            k: (v.hex(" ").upper() if isinstance(v, bytes) else v) for k, v in self.params.items()
        }
        return {"fault": self.kind, "board": self.board, "channel": self.channel, "params": params}


def make_fault(kind: str, board: int, channel: int | None, params: dict[str, Any]) -> Fault:
    """Validate a fault request; raises FaultError naming what is wrong."""
    spec = FAULT_KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise FaultError(f"unknown fault {kind!r}; choose one of {', '.join(FAULT_KINDS)}")
    if channel is not None and not spec.per_channel:
        raise FaultError(f"fault {kind!r} concerns the whole board; give no channel")
    unknown = set(params) - set(spec.params)
    if unknown:
        raise FaultError(f"fault {kind!r} takes no parameter(s) {', '.join(sorted(unknown))}")
    checked = {}
    for name, default in spec.params.items():
        checked[name] = _PARAM_CHECKS[name](params.get(name, default))
    return Fault(kind=kind, board=board, channel=channel, params=checked)
