"""Hardware simulator: virtual lock boards on a virtual RS-485 bus, for tests and demos."""

from simulator.errors import (
    CompartmentEmpty,
    DoorClosed,
    DoorError,
    DoorLocked,
    EndpointError,
    FaultError,
    SimulatorError,
    SpecError,
    UnknownCompartment,
)
from simulator.faults import FAULT_KINDS, Fault
from simulator.model import CompartmentState
from simulator.sim import Cabinet, Simulator
from simulator.spec import PROTOCOLS, BoardSpec
from simulator.truth import GroundTruth, TruthEvent

__all__ = [
    "FAULT_KINDS",
    "PROTOCOLS",
    "BoardSpec",
    "Cabinet",
    "CompartmentEmpty",
    "CompartmentState",
    "DoorClosed",
    "DoorError",
    "DoorLocked",
    "EndpointError",
    "Fault",
    "FaultError",
    "GroundTruth",
    "Simulator",
    "SimulatorError",
    "SpecError",
    "TruthEvent",
    "UnknownCompartment",
]
