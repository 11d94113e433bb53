"""The outbox keeps seq rising across deletes and reopening, keeps what the broker acknowledged
until the cloud confirms it, and never stores a code."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from locker_controller import outbox_store
from locker_controller.outbox_store import ACKED_KEPT_S
from locker_controller.store import Store
from xinbao.contract import EventMark, EventType


def test_seq_keeps_rising_across_delete_and_reopen(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    first = [store.add_event(EventType.DOOR_OPENED, 1, {"n": i}).seq for i in range(3)]
    assert first == sorted(first) and len(set(first)) == 3
    for seq in first:
        store.event_acked(seq)
    store.confirm_events(EventMark(seq=first[-1], event_id=store_event_id(store, first[-1])))
    store.close()
    store = Store(path)
    later = store.add_event(EventType.DOOR_CLOSED, 1)
    assert later.seq > max(first)
    assert [e.seq for e in store.pending_events()] == [later.seq]
    assert store.outbox_depth() == 1
    store.close()


def test_a_failed_transaction_leaves_nothing(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    try:
        with store.transaction():
            store.add_event(EventType.DOOR_CLOSED, 2)
            store.set_meta("purpose:2", "x")
            raise RuntimeError("power cut in the middle")
    except RuntimeError:
        pass
    assert store.outbox_depth() == 0 and store.get_meta("purpose:2") is None
    store.close()


def store_event_id(store: Store, seq: int) -> uuid.UUID:
    return uuid.UUID(
        store._db.execute("SELECT event_id FROM outbox WHERE seq=?", (seq,)).fetchone()[0]
    )


def kept(store: Store) -> list[int]:
    return [r[0] for r in store._db.execute("SELECT seq FROM outbox ORDER BY seq")]


def acked(store: Store) -> list[int]:
    return [r[0] for r in store._db.execute("SELECT seq FROM outbox WHERE acked_at IS NOT NULL")]


def five_acked(store: Store) -> list[int]:
    seqs = [store.add_event(EventType.DOOR_CLOSED, 1, {"n": i}).seq for i in range(5)]
    for seq in seqs:
        store.event_acked(seq)
    return seqs


def test_acknowledged_events_stay_until_the_cloud_confirms_them(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    seqs = five_acked(store)
    assert store.outbox_depth() == 0 and store.pending_events() == []
    assert kept(store) == seqs and acked(store) == seqs
    # The cloud holds up to the third: those leave, the two after it are sent again.
    assert store.confirm_events(
        EventMark(seq=seqs[2], event_id=store_event_id(store, seqs[2]))
    ) == (3, 2)
    assert kept(store) == seqs[3:]
    assert [e.seq for e in store.pending_events()] == seqs[3:] and store.outbox_depth() == 2
    # A mark below what is left (an older sync) drops nothing more.
    assert store.confirm_events(EventMark(seq=seqs[1], event_id=uuid.uuid4())) == (0, 0)
    assert kept(store) == seqs[3:]
    store.close()


def test_a_cloud_holding_none_gets_every_acknowledged_event_again(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    seqs = five_acked(store)
    assert store.confirm_events(EventMark(seq=0)) == (0, 5)
    assert [e.seq for e in store.pending_events()] == seqs
    store.close()


@pytest.mark.parametrize("ahead", [False, True])
def test_a_mark_about_another_numbering_drops_nothing(tmp_path, ahead):
    """A wiped controller numbers from 1 again; the cloud's mark is about the old numbering
    (a seq we never made, or our seq with another event's id): nothing is dropped, every
    acknowledged event goes again."""
    store = Store(tmp_path / "state.sqlite3")
    seqs = five_acked(store)
    mark = EventMark(seq=seqs[-1] + 100 if ahead else seqs[2], event_id=uuid.uuid4())
    assert store.confirm_events(mark) == (0, 5)
    assert kept(store) == seqs and store.outbox_depth() == 5
    store.close()


def test_unconfirmed_acknowledged_events_are_forgotten_in_the_end(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    five_acked(store)
    waiting = store.add_event(EventType.DOOR_OPENED, 2).seq  # never acknowledged
    assert store.prune_acked() == 0
    assert store.prune_acked(now=10**10 + ACKED_KEPT_S) == 5
    assert kept(store) == [waiting]  # what the broker never had is never forgotten
    store.close()


def test_an_outbox_from_the_previous_version_is_upgraded(tmp_path):
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, "
        "ts TEXT NOT NULL, type TEXT NOT NULL, compartment INTEGER, data TEXT NOT NULL);"
        "INSERT INTO outbox(event_id, ts, type, compartment, data) VALUES "
        "('0b0e6f0e-6a4e-4a55-9a55-2f0c1a0f0a01', '2026-12-01T00:00:00+00:00', "
        "'door_closed', 1, '{}');"
    )
    db.commit()
    db.close()
    store = Store(path)
    assert [e.seq for e in store.pending_events()] == [1] and store.outbox_depth() == 1
    store.close()


def test_at_most_so_many_acknowledged_events_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_store, "ACKED_KEPT_MAX", 3)
    store = Store(tmp_path / "state.sqlite3")
    seqs = five_acked(store)
    assert store.prune_acked() == 2 and kept(store) == seqs[2:]
    store.close()
