"""The cabinet's side of "one truth" (issue 10), on the real SQLite store, in this process:
a door held for one errand is never taken over by another, a pickup door that closes on an
item leaves the compartment occupied, a sync never moves an item the cabinet holds, and
the allocation rule sees what the cabinet sees (held doors, sensed items, dead boards)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from locker_controller.commands import CommandDesk
from locker_controller.door_model import Door
from locker_controller.errors import CompartmentUnavailable
from locker_controller.operations import (
    DROPOFF,
    MAINTENANCE,
    PICKUP,
    STAFF_LOAD,
    Operations,
    Purpose,
)
from locker_controller.outbox import EventLog
from locker_controller.placement import Placement
from locker_controller.store import Handover, Store
from tests.locker_controller.conftest import LOCKER_KEY, db_events
from xinbao.allocation import Choice, Unusable
from xinbao.contract import (
    CabinetReport,
    CommandType,
    EventType,
    Reservation,
    ReservationSync,
    sign_command,
)

# number, size, board: board 1 holds 1-4, board 2 holds 5-8 (the controller tests' cabinet)
LAYOUT = [(n, "S" if n <= 2 else "M", 0, 1 if n <= 4 else 2, (n - 1) % 4 + 1) for n in range(1, 9)]


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "data" / "controller.sqlite3")
    s.sync_layout(LAYOUT)
    yield s
    s.close()


def handover(hid: int, kind: str, compartment: int | None, state: str, size: str = "M"):
    expires = datetime.now(UTC) + timedelta(days=1)
    return Handover(hid, kind, compartment, size, 100 + hid, 8, expires, state, f"REC-{hid}")


@dataclass
class CabinetView:
    """What DoorWatcher tells the allocation rule: doors (with sensor readings), which
    boards answer, which doors jammed. The door logic itself is tested on the simulator."""

    doors: dict[int, Door] = field(default_factory=lambda: {n: Door(n) for n in range(1, 9)})
    dead_boards: set[int] = field(default_factory=set)
    jammed_doors: set[int] = field(default_factory=set)

    def in_service(self, number: int) -> bool:
        return (1 if number <= 4 else 2) not in self.dead_boards

    def jammed(self, number: int) -> bool:
        return number in self.jammed_doors


def types(tmp_path: Path) -> list[str]:
    return [e["type"] for e in db_events(tmp_path / "data")]


# --- a door held for one errand is never taken over (Operations.begin) --------------------


def test_a_door_held_for_a_load_is_not_taken_by_a_dropoff(store):
    """Before: begin() overwrote the load's purpose, the load was never reported and the
    drop-off went on top of the licence."""
    ops = Operations(store, EventLog(store))
    ops.begin(4, Purpose(STAFF_LOAD, 1, "S001"))
    ops.door_opened(4)
    with pytest.raises(CompartmentUnavailable, match="held for the load of handover 1"):
        ops.begin(4, Purpose(DROPOFF, 2))
    with pytest.raises(CompartmentUnavailable):
        ops.begin(4, Purpose(MAINTENANCE, None, "T001"))
    assert ops.get(4).kind == STAFF_LOAD and ops.get(4).handover_id == 1


def test_the_same_errand_may_renew_its_door(store):
    ops = Operations(store, EventLog(store))
    first = Purpose(DROPOFF, 2)
    ops.begin(3, first)
    again = Purpose(DROPOFF, 2)  # a reopen after a jam renews the purpose
    ops.begin(3, again)
    assert ops.get(3).began_at == again.began_at


def test_a_new_attempt_is_not_dropped_for_the_one_before_a_restart(store):
    """After a restart the start-up check drops an errand begun before it whose door stayed
    shut. A code typed meanwhile for the same errand is a new attempt: dropping the old one
    must not drop it (it did, 1 run in 8 of test_restart's jammed case: the door then opened
    with no errand, and the pickup was never reported collected)."""
    ops = Operations(store, EventLog(store))
    before = Purpose(PICKUP, 6, began_at=1.0, pulsed=True)
    ops.begin(4, before)
    ops.begin(4, replace(before, pulsed=False, began_at=2.0))  # the code typed again
    ops.abandon(4, "the controller restarted and the door is shut", before)
    assert ops.get(4) is not None and ops.get(4).began_at == 2.0
    ops.abandon(4, "its door stayed shut")  # the current attempt's own jam still drops it
    assert ops.get(4) is None


# --- a pickup door that closes on an item --------------------------------------------------


def test_a_pickup_closed_with_the_item_still_inside_stays_occupied(store, tmp_path):
    """Before: the close marked the compartment empty and the handover collected, and the
    next load went on top of the licence still inside."""
    store.upsert_handover(handover(8, "pickup", 3, "deposited"))
    store.set_occupied(3, True)
    ops = Operations(store, EventLog(store))
    ops.begin(3, Purpose(PICKUP, 8))
    ops.door_opened(3)
    ops.door_closed(3, occupied=True)  # the sensor still sees the licence
    assert store.compartment(3).occupied is True
    assert store.handover(8).state == "deposited"  # the code still opens it
    assert "collected" not in types(tmp_path)
    still = [e for e in db_events(tmp_path / "data") if e["type"] == "item_detected"]
    assert still and still[-1]["compartment"] == 3
    assert still[-1]["data"] == {
        "reason": "item_still_inside",
        "purpose": "pickup",
        "handover_id": 8,
        "by": "applicant",
    }
    assert ops.get(3) is None  # the door is free for the code again


def test_a_pickup_closed_empty_is_collected(store, tmp_path):
    store.upsert_handover(handover(8, "pickup", 3, "deposited"))
    store.set_occupied(3, True)
    ops = Operations(store, EventLog(store))
    ops.begin(3, Purpose(PICKUP, 8))
    ops.door_opened(3)
    ops.door_closed(3, occupied=False)
    assert store.compartment(3).occupied is False
    assert store.handover(8).state == "collected"
    assert types(tmp_path)[-1] == "collected"


def test_a_deposit_elsewhere_than_planned_names_both(store, tmp_path):
    store.upsert_handover(handover(5, "pickup", 8, "reserved"))
    ops = Operations(store, EventLog(store))
    ops.begin(3, Purpose(STAFF_LOAD, 5, "S001", planned=8, deviation="board_unreachable"))
    ops.door_opened(3)
    ops.door_closed(3, occupied=True)
    deposited = db_events(tmp_path / "data")[-1]
    assert deposited["type"] == "deposited" and deposited["compartment"] == 3
    assert deposited["data"]["planned"] == 8
    assert deposited["data"]["deviation"] == "board_unreachable"
    assert store.handover(5).compartment == 3 and store.handover(5).state == "deposited"


# --- a sync never moves an item the cabinet holds ------------------------------------------


def sync(store: Store, *reservations: Reservation, full: bool = False, doors=None) -> None:
    desk = CommandDesk(
        SimpleNamespace(locker_key=LOCKER_KEY), store, EventLog(store), doors, None, print
    )
    payload = ReservationSync(upserts=list(reservations), full=full)
    command = sign_command(LOCKER_KEY, CommandType.SYNC_RESERVATIONS, payload)
    desk.received(command.to_bytes(), retained=False)


def replies(store: Store) -> list[bytes]:
    """The command replies waiting in the outbox, oldest first (read straight from SQLite)."""
    path = store._db.execute("PRAGMA database_list").fetchone()[2]
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT body FROM reply_outbox ORDER BY id")]
    finally:
        db.close()


def reservation(hid: int, kind: str, compartment: int, state: str) -> Reservation:
    return Reservation(
        handover_id=hid,
        kind=kind,
        compartment=compartment,
        size="M",
        counter=500 + hid,
        digits=8,
        state=state,
    )


def test_a_resend_naming_another_compartment_does_not_move_a_deposited_item(store):
    """Before: ``compartment or old.compartment`` took the cloud's (wrong) compartment, so
    the new code opened an empty door, or another applicant's."""
    store.upsert_handover(handover(7, "pickup", 4, "deposited"))
    sync(store, reservation(7, "pickup", 8, "deposited"))
    assert store.handover(7).compartment == 4
    assert store.handover(7).counter == 507  # the new code is taken all the same
    reply = json.loads(replies(store)[-1])
    assert reply["ok"], reply
    assert reply["result"]["compartments_kept"] == [{"handover_id": 7, "cloud": 8, "cabinet": 4}]


def test_a_reservation_not_used_yet_follows_the_cloud(store):
    store.upsert_handover(handover(9, "dropoff", 3, "reserved"))
    sync(store, reservation(9, "dropoff", 4, "reserved"))
    assert store.handover(9).compartment == 4


# --- the rule as the cabinet sees it -------------------------------------------------------


def test_a_load_takes_the_cloud_compartment_when_the_rule_allows(store):
    """Before: a pickup came without a compartment and the load took the smallest free
    one, which the cloud held for another record."""
    store.upsert_handover(handover(1, "pickup", 3, "reserved"))
    store.upsert_handover(handover(2, "pickup", 4, "reserved"))
    place = Placement(store, Operations(store, EventLog(store)), CabinetView())
    assert place.choose(store.handover(2)) == Choice(4, 4, None)
    assert place.choose(store.handover(1)) == Choice(3, 3, None)


def test_a_dead_board_moves_the_load_and_says_why(store):
    store.upsert_handover(handover(1, "pickup", 3, "reserved"))
    store.upsert_handover(handover(2, "pickup", 5, "reserved"))
    view = CabinetView(dead_boards={2})
    place = Placement(store, Operations(store, EventLog(store)), view)
    # 3 is held for handover 1: never taken; 5 is on the silent board.
    assert place.choose(store.handover(2)) == Choice(4, 5, Unusable.BOARD_DOWN)
    store.set_occupied(4, True)
    assert place.choose(store.handover(2)) == Choice(None, 5, Unusable.BOARD_DOWN)
    key, why = place.refusal(store.handover(2))
    assert key == "compartments_unavailable"
    assert why == (
        "no free compartment of size M: board 2 does not answer: compartments 5-8 unavailable"
    )


def test_a_door_open_for_another_errand_or_a_sensed_item_is_never_offered(store):
    """Before: a drop-off whose cloud compartment was the door a load had just used (still
    open) opened it again; an item the sensor saw did not count."""
    store.upsert_handover(handover(6, "dropoff", 3, "reserved"))
    ops = Operations(store, EventLog(store))
    ops.begin(3, Purpose(STAFF_LOAD, 1, "S001"))  # the load's door still stands open
    view = CabinetView()
    view.doors[4].occupied = True  # an item nobody told the cabinet about
    place = Placement(store, ops, view)
    assert place.choose(store.handover(6)) == Choice(5, 3, Unusable.HELD)
    view.jammed_doors.add(5)
    assert place.choose(store.handover(6)) == Choice(6, 3, Unusable.HELD)
    ops.begin(6, Purpose(MAINTENANCE, None, "T001"))
    assert place.choose(store.handover(6)).number == 7


def test_a_full_sync_is_answered_with_the_cabinet_view(store):
    """What the cloud compares with its own (cloud_api/mqtt/reconcile.py)."""
    store.upsert_handover(handover(7, "pickup", 4, "deposited"))
    store.set_occupied(4, True)
    store.add_event(EventType.DEPOSITED, 4, {"handover_id": 7})
    view = CabinetView(dead_boards={2})
    view.doors[4].open, view.doors[4].occupied = False, True
    view.doors[6].occupied = True  # something the cabinet was never told about
    sync(
        store,
        reservation(7, "pickup", 4, "deposited"),
        reservation(9, "dropoff", 3, "reserved"),
        full=True,
        doors=view,
    )
    report = CabinetReport.from_result(json.loads(replies(store)[-1])["result"])
    assert report is not None and report.seq == store.last_event_seq() >= 1
    seen = {c.number: c for c in report.compartments}
    assert seen[4].model_dump() == {
        "number": 4,
        "door_open": False,
        "occupied": True,
        "sensed": True,
        "holds": 7,
        "board_up": True,
    }
    assert seen[3].holds is None and not seen[3].occupied  # reserved, nothing inside yet
    assert seen[6].sensed is True and seen[6].occupied is False and not seen[6].board_up
