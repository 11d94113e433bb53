"""The lockout never says "not locked" (or "retry after 0 s") while it still refuses codes."""

from __future__ import annotations

import time

import pytest

from locker_controller.config import ControllerConfig
from locker_controller.errors import CodeRefused
from locker_controller.lockout import Lockout
from locker_controller.outbox import EventLog
from locker_controller.store import Store


@pytest.mark.parametrize("left", [0.001, 0.04, 0.06, 0.26])
def test_the_last_moments_of_a_lockout_are_not_reported_as_over(tmp_path, monkeypatch, left):
    config = ControllerConfig.model_construct(
        lockout_threshold=5, lockout_base_s=1.0, lockout_max_s=60.0
    )
    store = Store(tmp_path / "state.sqlite3")
    lockout = Lockout(config, store, EventLog(store))
    now = 1_000_000.0
    store.set_meta("lockout:until", repr(now + left))
    monkeypatch.setattr(time, "time", lambda: now)
    assert 0 < lockout.remaining() <= left + 0.1
    with pytest.raises(CodeRefused) as refused:
        lockout.check()
    assert refused.value.retry_after == lockout.remaining()
    monkeypatch.setattr(time, "time", lambda: now + left)
    assert lockout.remaining() == 0
    lockout.check()  # over: no refusal
    store.close()
