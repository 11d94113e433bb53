"""The outbox keeps seq rising across deletes and reopening, and never stores a code."""

from __future__ import annotations

from locker_controller.store import Store
from xinbao.contract import EventType


def test_seq_keeps_rising_across_delete_and_reopen(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    first = [store.add_event(EventType.DOOR_OPENED, 1, {"n": i}).seq for i in range(3)]
    assert first == sorted(first) and len(set(first)) == 3
    for seq in first:
        store.delete_event(seq)
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
