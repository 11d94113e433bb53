"""A door as the controller sees it, and who is told when it moves.

``Door`` holds the debounced readings of one compartment plus what the store remembered of
it from before a restart; ``DoorListener`` is what a movement means for the business
(implemented by locker_controller.operations.Operations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from locker_controller.operations import Purpose
from locker_controller.store import DoorRecord


class DoorListener(Protocol):
    """What a door movement means for the business (locker_controller.operations)."""

    def door_opened(self, number: int) -> None: ...
    def door_closed(self, number: int, occupied: bool | None) -> None: ...
    def get(self, number: int) -> Purpose | None: ...
    def begin(self, number: int, purpose: Purpose) -> None: ...
    def cancel_if(self, number: int, purpose: Purpose) -> None: ...
    def waiting(self, number: int) -> Purpose | None: ...
    def unlock_recorded(self, number: int) -> None: ...
    def abandon(self, number: int, why: str, purpose: Purpose | None = None) -> None: ...
    def unpulsed(self) -> list[int]: ...


@dataclass
class Door:
    number: int
    open: bool | None = None  # debounced; None until the first good reading since start
    occupied: bool | None = None
    # What the store says the door was when the controller last ran: the first readings
    # after a start are compared with it, so what happened while it was down is reported.
    known: DoorRecord | None = None
    changed_at: float = 0.0  # time.time() the door was last seen to open or shut
    readings: int = 0  # good readings since start
    settled: bool = False  # start-up reconciliation done
    item_moved_while_down: bool | None = None  # True appeared, False gone, None no change
    open_candidate: bool | None = None
    open_count: int = 0
    occupied_candidate: bool | None = None
    occupied_count: int = 0
    opened_at: float | None = None
    left_open_reported: bool = False
    expect_open_until: float = 0.0
    # monotonic time of this process's last unlock for a purpose not yet seen open
    waiting_since: float | None = None
    last_reading_at: float = 0.0
    jammed_at: float | None = None
