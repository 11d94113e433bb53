"""Where each item is, as the cloud, the cabinet and the hardware tell it (issue 10).

``cloud_view``: the cloud's compartments, each with the live handover it holds and whether
it is occupied. ``cabinet_view``: the controller's own SQLite (read only), each compartment
with what the controller believes it holds. ``truth``: the simulator's items per compartment.
``assert_agree`` compares all three with what the test expects, naming each view.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlmodel import Session, select

from cloud_api.models.handover import ACTIVE_STATES, Handover
from cloud_api.models.locker import Compartment
from tests.support.cabinet import COMPARTMENTS

WIRING = {n: (b, c) for n, _, b, c in COMPARTMENTS}


def cloud_view(engine, locker_id: str) -> dict[int, tuple[str, int | None]]:
    """number -> (state, handover id the cloud has in or for it)."""
    live = [s.value for s in ACTIVE_STATES]
    with Session(engine) as s:
        rows = s.exec(select(Compartment).where(Compartment.locker_id == locker_id)).all()
        handovers = s.exec(
            select(Handover).where(Handover.locker_id == locker_id, Handover.state.in_(live))
        ).all()
    where = {h.compartment_id: h.id for h in handovers}
    view = {}
    for c in rows:
        # The handover that points at it must be the one the compartment names.
        assert where.get(c.id) == c.handover_id, (c.number, where.get(c.id), c.handover_id)
        view[c.number] = (c.state, c.handover_id)
    return view


def cabinet_view(data_dir: Path) -> dict[int, tuple[bool, int | None]]:
    """number -> (occupied, the live handover the controller places there)."""
    db = sqlite3.connect(f"file:{data_dir / 'controller.sqlite3'}?mode=ro", uri=True)
    try:
        occupied = dict(db.execute("SELECT number, occupied FROM compartments"))
        placed = db.execute(
            "SELECT compartment, handover_id FROM handovers "
            "WHERE state IN ('reserved', 'deposited', 'overdue', 'held') "
            "AND compartment IS NOT NULL"
        ).fetchall()
    finally:
        db.close()
    holder: dict[int, int] = {}
    for number, hid in placed:
        assert number not in holder, f"the cabinet places {holder[number]} and {hid} in {number}"
        holder[number] = hid
    return {n: (bool(o), holder.get(n)) for n, o in occupied.items()}


def truth(sim) -> dict[int, int]:
    """number -> items inside, as the simulated hardware holds them."""
    return {n: sim.compartment(b, c).items for n, (b, c) in WIRING.items()}


def assert_agree(engine, locker_id: str, data_dir: Path, sim, items: dict[int, int]) -> None:
    """``items``: handover id per compartment that holds an item; every other compartment
    is empty in all three views (reserved ones may be held, never occupied)."""
    cloud, cabinet, hardware = cloud_view(engine, locker_id), cabinet_view(data_dir), truth(sim)
    for number in WIRING:
        hid = items.get(number)
        seen = {"cloud": cloud[number], "cabinet": cabinet[number], "truth": hardware[number]}
        if hid is None:
            assert cloud[number][0] != "occupied", (number, seen)
            assert not cabinet[number][0] and hardware[number] == 0, (number, seen)
        else:
            assert cloud[number] == ("occupied", hid), (number, seen)
            assert cabinet[number] == (True, hid) and hardware[number] == 1, (number, seen)
