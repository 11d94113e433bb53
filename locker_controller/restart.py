"""After a start: reconcile what the controller promised with what the doors show.

The store keeps each door's last known state and every purpose a door was opened for. A
SIGKILL or power cut can fall between committing a purpose and recording its unlock, or
while a door stands open; on the way back up this module reports the cut-short unlock and,
once the first steady readings are in, resolves purposes still waiting for their door.
Door movements while the controller was down are reported by DoorWatcher's debounce
(``while_down``).
"""

from __future__ import annotations

import time

from locker_controller.door_model import Door, DoorListener
from locker_controller.outbox import EventLog
from locker_controller.store import Store
from xinbao.contract import EventType


class StartupCheck:
    def __init__(self, store: Store, events: EventLog, listener: DoorListener) -> None:
        self._store = store
        self._events = events
        self._listener = listener
        self._started_at = time.time()

    def restore(self) -> None:
        """Before the first poll: an unlock cut short by a crash still gets its unlock_sent.

        The purpose was committed before the pulse, so the controller knows it began the
        unlock but not whether the frame reached the board: ``outcome`` says "interrupted".
        The door readings that follow tell whether it opened.
        """
        for number in self._listener.unpulsed():
            with self._store.transaction():
                self._events.record(
                    EventType.UNLOCK_SENT, number, outcome="interrupted", while_down=True
                )
                self._listener.unlock_recorded(number)

    def settle(self, door: Door) -> None:
        """First steady readings since start: resolve a purpose still waiting for its door.

        Door movements while the controller was down are already reported by then
        (door_opened, door_forced, door_closed, item_* with while_down); left is a purpose
        whose door this process has not seen open."""
        door.settled = True
        purpose = self._listener.get(door.number)
        if purpose is None or purpose.began_at >= self._started_at:
            return  # nothing left from before the start (a new purpose runs its course)
        if purpose.opened:
            if door.open is False:
                # Seen open before the restart but no door state was kept (a store from an
                # older version): it has closed since, and the close completes the purpose.
                with self._store.transaction():
                    self._events.record(EventType.DOOR_CLOSED, door.number, while_down=True)
                    self._listener.door_closed(door.number, door.occupied)
            return
        if door.open:
            # Open all along: it was open when the unlock came, or it opened before the crash
            # let us record it; either way it stands open for this purpose.
            with self._store.transaction():
                self._listener.door_opened(door.number)
            return
        expected = purpose.expected_item()
        if expected is not None and door.item_moved_while_down is expected:
            # Shut now, but the item went in (or out) while the controller was down: the door
            # opened and closed for the purpose meanwhile.
            with self._store.transaction():
                self._events.record(
                    EventType.DOOR_OPENED, door.number, while_down=True, inferred=True
                )
                self._listener.door_opened(door.number)
                self._events.record(
                    EventType.DOOR_CLOSED, door.number, while_down=True, inferred=True
                )
                self._listener.door_closed(door.number, door.occupied)
            return
        self._listener.abandon(
            door.number, "the controller restarted and the door is shut", purpose
        )
