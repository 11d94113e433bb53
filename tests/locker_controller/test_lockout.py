"""The lockout never says "not locked" (or "retry after 0 s") while it still refuses codes,
and a lockout stored by an older controller is still honoured."""

from __future__ import annotations

import json

import pytest

from locker_controller.config import ControllerConfig
from locker_controller.errors import CodeRefused
from locker_controller.lockout import Lockout
from locker_controller.outbox import EventLog
from locker_controller.store import Store
from xinbao.lockout import LockoutState

CONFIG = ControllerConfig.model_construct(
    lockout_threshold=5,
    lockout_base_s=1.0,
    lockout_max_s=60.0,
    lockout_forgive_s=720.0,
    lockout_level_decay_s=2400.0,
)


@pytest.mark.parametrize("left", [0.001, 0.04, 0.06, 0.26])
def test_the_last_moments_of_a_lockout_are_not_reported_as_over(tmp_path, left):
    store = Store(tmp_path / "state.sqlite3")
    now = 1_000_000.0
    lockout = Lockout(CONFIG, store, EventLog(store), clock=lambda: now)
    store.set_meta("lockout:keypad", '{"until": %r, "level": 1, "started": 1.0}' % (now + left))
    assert 0 < lockout.remaining() <= left + 0.1
    refused = lockout.refused()
    assert isinstance(refused, CodeRefused) and refused.reason == "locked_out"
    assert refused.retry_after == lockout.remaining()
    lockout.clock = lambda: now + left
    assert lockout.remaining() == 0
    store.close()


def test_a_lockout_stored_by_an_older_controller_still_holds(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    now = 1_000_000.0
    store.set_meta("lockout:until", repr(now + 100))
    store.set_meta("lockout:level", "3")
    store.set_meta("lockout:failures", "0")
    lockout = Lockout(CONFIG, store, EventLog(store), clock=lambda: now)
    assert 99 < lockout.remaining() <= 100 and lockout.level() == 3
    lockout.lift("staff:test")  # written in the new form from now on
    saved = LockoutState.from_dict(json.loads(store.get_meta("lockout:keypad")))
    assert saved.level == 0 and saved.until == 0
    store.close()
