"""Errors of the hardware simulator, drawn once.

SimulatorError
├── SpecError          a board or bus description that cannot exist (bad address, protocol...)
├── UnknownCompartment a board address or channel the bus does not have
├── FaultError         an unknown fault, a fault that does not fit the board, bad fault params
├── DoorError          a physical action the compartment refuses
│   ├── DoorLocked     opening a latched door without force
│   ├── DoorClosed     putting/taking an item through a closed door
│   └── CompartmentEmpty taking an item from an empty compartment
└── EndpointError      a TCP port in use, a pty that cannot be opened, bad HOST:PORT

Callers (the control API, the CLI) map each branch to one clear message; nothing here is
ever allowed to reach a user as a traceback.
"""


class SimulatorError(Exception):
    """Base of every error the simulator raises on purpose."""


class SpecError(SimulatorError, ValueError):
    """A board or bus description that cannot exist."""


class UnknownCompartment(SimulatorError, LookupError):
    """A board address or channel that the virtual bus does not have."""


class FaultError(SimulatorError, ValueError):
    """An unknown fault name, a fault that does not fit the board, or bad fault parameters."""


class DoorError(SimulatorError):
    """A physical action that the compartment refuses."""


class DoorLocked(DoorError):
    """The door is latched: only a lock pulse or force opens it."""


class DoorClosed(DoorError):
    """Items go in and out only while the door is open."""


class CompartmentEmpty(DoorError):
    """There is nothing to take out."""


class EndpointError(SimulatorError, OSError):
    """A TCP port in use, a pty that cannot be opened, a malformed HOST:PORT."""
