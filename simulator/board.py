"""A virtual lock board: its compartments, its feedback inputs and its injected faults.

Protocol modules talk to a board only through the small interface below (levels, sensors,
unlock...), so the same reply builders also serve the phantom twin that a
``duplicate_address`` fault puts on the line.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from simulator.errors import UnknownCompartment
from simulator.faults import Fault
from simulator.model import Compartment, CompartmentState
from simulator.spec import BoardSpec
from simulator.truth import GroundTruth


class BoardView(Protocol):
    """What a protocol needs from a board to answer a request."""

    spec: BoardSpec

    def levels(self) -> list[int]: ...
    def sensors(self) -> list[int]: ...
    def relays(self) -> list[int]: ...
    def unlock(self, channel: int, duration: float | None = None) -> None: ...
    def unlock_all(self) -> None: ...
    def set_relay(self, channel: int, on: bool) -> None: ...
    def set_pulse_ms(self, pulse_ms: int) -> None: ...


class VirtualBoard:
    def __init__(
        self, spec: BoardSpec, *, lock: threading.RLock, truth: GroundTruth, bus: str | None
    ) -> None:
        self.spec = spec
        self._lock = lock
        self._truth = truth
        self._bus = bus
        self.faults: list[Fault] = []
        self.pulse_ms = spec.pulse_ms  # a cu16 master may set it (CMD 37)
        self.compartments = {
            ch: Compartment(
                board=spec.address,
                channel=ch,
                lock=lock,
                truth=truth,
                bus=bus,
                spring_open=spec.spring_open,
            )
            for ch in range(1, spec.channels + 1)
        }

    @property
    def address(self) -> int:
        return self.spec.address

    def compartment(self, channel: int) -> Compartment:
        comp = self.compartments.get(channel) if isinstance(channel, int) else None
        if comp is None:
            raise UnknownCompartment(
                f"board {self.address} has channels 1..{self.spec.channels}, not {channel!r}"
            )
        return comp

    # -- faults -------------------------------------------------------------------------

    def fault(self, kind: str, channel: int | None = None) -> Fault | None:
        """The active fault of this kind that applies to ``channel`` (board-wide counts)."""
        with self._lock:
            for f in self.faults:
                if f.kind == kind and (f.channel is None or f.channel == channel):
                    return f
        return None

    # -- BoardView ------------------------------------------------------------------------

    def _level(self, locked: bool) -> int:
        return self.spec.locked_level if locked else 1 - self.spec.locked_level

    def levels(self) -> list[int]:
        now = time.monotonic()
        with self._lock:
            return [self._level(c.is_locked(now)) for c in self.compartments.values()]

    def sensors(self) -> list[int]:
        if not self.spec.sensors:
            return [0] * self.spec.channels
        with self._lock:
            return [int(c.occupied) for c in self.compartments.values()]

    def relays(self) -> list[int]:
        now = time.monotonic()
        with self._lock:
            return [int(c.is_pulsing(now)) for c in self.compartments.values()]

    def unlock(self, channel: int, duration: float | None = None) -> None:
        comp = self.compartments.get(channel)
        if comp is None:
            return  # a real board ignores a lock it has no driver for
        if duration is None:
            duration = self.pulse_ms / 1000
        comp.pulse(duration, jammed=self.fault("jammed", channel) is not None)

    def unlock_all(self) -> None:
        for channel in self.compartments:
            self.unlock(channel)

    def set_relay(self, channel: int, on: bool) -> None:
        comp = self.compartments.get(channel)
        if comp is None:
            return
        if on:
            # A relay held on keeps the coil energised until switched off.
            comp.pulse(float("inf"), jammed=self.fault("jammed", channel) is not None)
        else:
            comp.release()

    def set_pulse_ms(self, pulse_ms: int) -> None:
        with self._lock:
            self.pulse_ms = pulse_ms
            self._truth.record(
                "pulse_time_set", bus=self._bus, board=self.address, pulse_ms=pulse_ms
            )

    def states(self) -> list[CompartmentState]:
        return [c.state() for c in self.compartments.values()]


class PhantomBoard:
    """The other board set to the same DIP address: same size, every door reads open.

    It only talks; it drives no lock of ours. Its replies collide with the real board's.
    """

    def __init__(self, spec: BoardSpec) -> None:
        self.spec = spec

    def levels(self) -> list[int]:
        return [1 - self.spec.locked_level] * self.spec.channels

    def sensors(self) -> list[int]:
        return [int(bool(self.spec.sensors))] * self.spec.channels

    def relays(self) -> list[int]:
        return [1] * self.spec.channels

    def unlock(self, channel: int, duration: float | None = None) -> None:
        return None

    def unlock_all(self) -> None:
        return None

    def set_relay(self, channel: int, on: bool) -> None:
        return None

    def set_pulse_ms(self, pulse_ms: int) -> None:
        return None
