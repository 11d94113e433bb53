"""Everything locker_controller raises, drawn once here.

    ControllerError
     +-- ConfigError          the config file is wrong; names the line and the field
     +-- StoreError           the local SQLite state cannot be read or written
     +-- CompartmentUnavailable  a door cannot be driven: unknown, out of service, board silent
     +-- CodeRefused          a typed code was not accepted (reason: wrong, expired, locked_out,
     |                        malformed, out_of_service, compartments_unavailable, ...); the
     |                        kiosk shows a message per reason
     +-- StaffRefused         staff login or action refused (bad pass, no session, no room)

Errors of firmware_bridge are translated into CompartmentUnavailable once, at the board edge
(locker_controller/cabinet.py), so nothing above it knows about serial ports.
"""

from __future__ import annotations


class ControllerError(Exception):
    """Base of every locker_controller error."""


class ConfigError(ControllerError):
    """``field`` is the setting's path (``compartments.2.size``, 0-based) for programs;
    ``place`` says the same in words for people (``compartment 3, size``)."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        place: str | None = None,
        source: str | None = None,
    ):
        where = [source] if source else []
        if line is not None:
            where.append(f"line {line}")
        if place or field:
            where.append(place or f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.line = line
        self.field = field


class StoreError(ControllerError):
    pass


class CompartmentUnavailable(ControllerError):
    def __init__(self, compartment: int, why: str):
        super().__init__(f"compartment {compartment}: {why}")
        self.compartment = compartment
        self.why = why


class CodeRefused(ControllerError):
    """``reason`` is one word the kiosk maps to a message; ``retry_after`` for lockouts."""

    def __init__(self, reason: str, detail: str = "", *, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.retry_after = retry_after


class StaffRefused(ControllerError):
    """``detail`` is for staff: e.g. which board does not answer."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
