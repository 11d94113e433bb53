"""The facade tests and other code use: one virtual bus, its endpoints, tester actions.

    with Simulator([BoardSpec(protocol="kerong-cu16", address=1)]) as sim:
        dev = sim.start_pty()          # "/dev/pts/N" for pyserial
        sim.inject(board=1, fault="jammed", channel=3)
        ...
        sim.truth.events("door_opened")

A ``Cabinet`` groups several buses (e.g. a cu16 bus and a bcc-8a bus) on one shared
ground-truth log.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from simulator.board import VirtualBoard
from simulator.bus import VirtualBus
from simulator.endpoints import Endpoint, PtyEndpoint, TcpEndpoint
from simulator.errors import SpecError, UnknownCompartment
from simulator.faults import Fault, make_fault
from simulator.model import CompartmentState
from simulator.protocols import get_board_protocol
from simulator.spec import BoardSpec
from simulator.truth import GroundTruth

# Board think time: from a request complete on the wire (and, on Modbus, known complete after
# its 3.5-character silence) to the first reply byte. A board's MCU parses a 5..18-byte frame
# and samples its inputs in microseconds; what remains is its firmware turning the RS-485
# driver round to transmit. No vendor or public driver states a figure for these boards (the
# drivers only allow up to 1 s), so 1 ms stands for a board that answers as soon as it can:
# simulated latencies are a lower bound for real boards. The bench prints the value it ran
# with, and `--reply-delay` reruns anything with a slower board; tests not about timing use 0.
BOARD_THINK_S = 0.001


class Simulator:
    def __init__(
        self,
        boards: Iterable[BoardSpec],
        *,
        wire_timing: bool = True,
        reply_delay: float = BOARD_THINK_S,
        baud: int | None = None,
        name: str = "bus",
        truth: GroundTruth | None = None,
    ) -> None:
        specs = list(boards)
        self.labels: dict[tuple[int, int], str] = {}  # (board, channel) -> the cabinet's name
        if not specs:
            raise SpecError("a bus needs at least one board")
        if not all(isinstance(s, BoardSpec) for s in specs):
            raise SpecError("boards must be BoardSpec objects")
        protocols = {s.protocol for s in specs}
        if len(protocols) > 1:
            raise SpecError(f"one protocol per bus, got {', '.join(sorted(protocols))}")
        addresses = [s.address for s in specs]
        duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
        if duplicates:
            raise SpecError(
                f"board address(es) {duplicates} used twice; inject the duplicate_address "
                "fault to model two boards on one address"
            )
        if baud is None:
            baud = specs[0].baud
        if isinstance(baud, bool) or not isinstance(baud, int) or not 300 <= baud <= 4_000_000:
            raise SpecError(f"baud must be 300..4000000, not {baud!r}")
        if isinstance(reply_delay, bool) or not isinstance(reply_delay, int | float):
            raise SpecError(f"reply_delay must be seconds, not {reply_delay!r}")
        if not 0 <= reply_delay <= 60:
            raise SpecError(f"reply_delay must be 0..60 seconds, not {reply_delay!r}")
        self.name = name
        self.protocol = specs[0].protocol
        self.truth = truth if truth is not None else GroundTruth()
        self._lock = threading.RLock()
        self._boards = {
            s.address: VirtualBoard(s, lock=self._lock, truth=self.truth, bus=name) for s in specs
        }
        self.bus = VirtualBus(
            name=name,
            protocol=get_board_protocol(self.protocol),
            boards=list(self._boards.values()),
            lock=self._lock,
            baud=baud,
            wire_timing=wire_timing,
            reply_delay=float(reply_delay),
            truth=self.truth,
        )
        self._endpoints: list[Endpoint] = []
        self._control = None
        self._stopped = False

    # -- boards ---------------------------------------------------------------------------

    @property
    def baud(self) -> int:
        return self.bus.baud

    @property
    def boards(self) -> list[VirtualBoard]:
        return list(self._boards.values())

    def board(self, board: int) -> VirtualBoard:
        found = self._boards.get(board) if isinstance(board, int) else None
        if found is None:
            known = ", ".join(str(a) for a in self._boards)
            raise UnknownCompartment(f"no board {board!r} on bus {self.name} (boards: {known})")
        return found

    def compartment(self, board: int, channel: int) -> CompartmentState:
        return self.board(board).compartment(channel).state()

    def label(self, board: int, channel: int, text: str) -> None:
        """Name a channel as the cabinet does (its compartment number, e.g. ``#5 S``); the
        panel shows it beside board and channel."""
        self.board(board).compartment(channel)  # SpecError for a channel that is not there
        self.labels[(board, channel)] = str(text)[:40]

    def snapshot(self) -> list[dict[str, Any]]:
        """Every board and compartment, JSON-ready (the control API's GET /boards)."""
        return [
            {
                "bus": self.name,
                "address": b.address,
                "protocol": b.spec.protocol,
                "channels": [
                    {**s.to_dict(), "label": self.labels.get((b.address, s.channel))}
                    for s in b.states()
                ],
                "faults": [f.to_dict() for f in b.faults],
            }
            for b in self.boards
        ]

    # -- tester actions -------------------------------------------------------------------

    def open_door(self, board: int, channel: int, by: str = "tester") -> bool:
        return self.board(board).compartment(channel).open_door(by)

    def close_door(self, board: int, channel: int) -> bool:
        b = self.board(board)
        blocked = b.fault("left_open", channel) is not None
        return b.compartment(channel).close_door(blocked=blocked)

    def put_item(self, board: int, channel: int) -> int:
        return self.board(board).compartment(channel).put_item()

    def take_item(self, board: int, channel: int) -> int:
        return self.board(board).compartment(channel).take_item()

    # -- faults ---------------------------------------------------------------------------

    def inject(self, board: int, fault: str, channel: int | None = None, **params: Any) -> Fault:
        target = self.board(board)
        if channel is not None:
            target.compartment(channel)  # validates the channel
        record = make_fault(fault, board, channel, params)
        with self._lock:
            target.faults.append(record)
            self.truth.record(
                "fault_injected",
                bus=self.name,
                board=board,
                channel=channel,
                fault=fault,
                params=record.to_dict()["params"],
            )
            if fault == "forced_open":
                channels = [channel] if channel is not None else list(target.compartments)
                for ch in channels:
                    target.compartment(ch).open_door("forced")
        return record

    def clear(self, board: int | None = None, fault: str | None = None) -> int:
        """Clear faults (of one kind, on one board, or all); returns how many were cleared."""
        targets = [self.board(board)] if board is not None else self.boards
        cleared = 0
        with self._lock:
            for target in targets:
                keep = [f for f in target.faults if fault is not None and f.kind != fault]
                for gone in (f for f in target.faults if f not in keep):
                    self.truth.record(
                        "fault_cleared",
                        bus=self.name,
                        board=target.address,
                        channel=gone.channel,
                        fault=gone.kind,
                    )
                    cleared += 1
                target.faults[:] = keep
        return cleared

    def faults(self) -> list[Fault]:
        with self._lock:
            return [f for b in self.boards for f in b.faults]

    # -- endpoints ------------------------------------------------------------------------

    def _add(self, endpoint: Endpoint) -> str:
        with self._lock:
            if self._stopped:
                endpoint.stop()
                raise SpecError("this simulator was stopped; create a new one")
            self._endpoints.append(endpoint)
        endpoint.start()
        return endpoint.url

    def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the bus on TCP; returns the pyserial URL ``socket://HOST:PORT``."""
        return self._add(TcpEndpoint(self.bus, self.truth, host, port))

    def start_pty(self) -> str:
        """Serve the bus on a new pseudo-terminal; returns its path for pyserial."""
        return self._add(PtyEndpoint(self.bus, self.truth))

    def start_control(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the HTTP control API; returns its base URL."""
        from simulator.control import ControlServer

        with self._lock:
            if self._control is not None:
                return self._control.url
            if self._stopped:
                raise SpecError("this simulator was stopped; create a new one")
            self._control = ControlServer([self], host, port)
        self._control.start()
        return self._control.url

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            endpoints, self._endpoints = self._endpoints, []
            control, self._control = self._control, None
        if control is not None:
            control.stop()
        for endpoint in endpoints:
            endpoint.stop()
        self.bus.close()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Cabinet:
    """Several buses of one cabinet on one ground-truth log, served by one control API."""

    def __init__(self) -> None:
        self.truth = GroundTruth()
        self.buses: dict[str, Simulator] = {}
        self._control = None

    def add_bus(self, name: str, boards: Iterable[BoardSpec], **options: Any) -> Simulator:
        if name in self.buses:
            raise SpecError(f"bus {name!r} exists already")
        sim = Simulator(boards, name=name, truth=self.truth, **options)
        self.buses[name] = sim
        return sim

    def start_control(self, host: str = "127.0.0.1", port: int = 0) -> str:
        from simulator.control import ControlServer

        if self._control is None:
            self._control = ControlServer(list(self.buses.values()), host, port)
            self._control.start()
        return self._control.url

    def stop(self) -> None:
        control, self._control = self._control, None
        if control is not None:
            control.stop()
        for sim in self.buses.values():
            sim.stop()

    def __enter__(self) -> Cabinet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
