"""Door facts and robustness, controller off line (no broker): the outbox in SQLite is what it
would send, so these tests read it directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from locker_controller.store import Handover, Store
from tests.locker_controller.conftest import LOCKER_KEY, db_events, wait_until
from xinbao.codes import code_for

pytestmark = pytest.mark.slow


def seed(tmp_path: Path, *handovers: Handover) -> None:
    """Handovers in the controller's store, as a sync_reservations command leaves them."""
    store = Store(tmp_path / "data" / "controller.sqlite3")
    for h in handovers:
        store.upsert_handover(h)
    store.close()


def handover(hid, kind, compartment, counter, state, *, expires_in=timedelta(days=1)):
    expires = datetime.now(UTC) + expires_in
    return Handover(
        hid,
        kind,
        compartment,
        "M" if compartment is None else None,
        counter,
        8,
        expires,
        state,
        None,
    )


def types(tmp_path: Path) -> list[str]:
    return [e["type"] for e in db_events(tmp_path / "data")]


def wait_event(tmp_path: Path, kind: str, timeout: float = 10.0, **match) -> dict:
    def found():
        for e in db_events(tmp_path / "data"):
            if e["type"] == kind and all(
                e.get(k) == v or e["data"].get(k) == v for k, v in match.items()
            ):
                return e
        return None

    return wait_until(found, timeout, f"{kind} {match} in the outbox (have {types(tmp_path)})")


def test_dropoff_jam_reopen_deposit(tmp_path, sim, make_controller):
    seed(tmp_path, handover(7, "dropoff", None, 21, "reserved"))
    ctl = make_controller()
    ctl.start()
    sim.inject(board=1, fault="jammed", channel=3)  # compartment 3 is the first free "M"
    first = ctl.code(code_for(LOCKER_KEY, 21))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["outcome"] == "jammed" and body["can_reopen"] and body["compartment"] == 3, body
    wait_event(tmp_path, "door_jammed", compartment=3)
    assert sim.compartment(1, 3).door_open is False

    sim.clear(board=1, fault="jammed")
    ticket = body["reopen_ticket"]  # only the client that typed the code may reopen
    again = ctl.post("/api/reopen", {"compartment": 3, "reopen_ticket": ticket})
    assert again.status_code == 200 and again.json()["outcome"] == "opened", again.text
    sim.put_item(1, 3)
    sim.close_door(1, 3)
    deposited = wait_event(tmp_path, "deposited", compartment=3)
    assert deposited["data"]["handover_id"] == 7
    seen = types(tmp_path)
    assert seen.index("code_accepted") < seen.index("door_jammed") < seen.index("door_opened")
    assert seen.index("item_detected") < seen.index("door_closed") < seen.index("deposited")
    # The drop-off code was single use.
    assert ctl.code(code_for(LOCKER_KEY, 21)).json()["reason"] == "used"
    # Nothing to reopen any more.
    assert ctl.post("/api/reopen", {"compartment": 3, "reopen_ticket": ticket}).status_code == 409


def test_forced_and_left_open_doors(tmp_path, sim, make_controller):
    ctl = make_controller()
    ctl.start()
    wait_until(lambda: ctl.status()["doors"]["2"] is False, 5, "door baseline")
    sim.open_door(1, 2, by="forced")
    forced = wait_event(tmp_path, "door_forced", compartment=2)
    left = wait_event(tmp_path, "door_left_open", compartment=2)  # config: after 2 s
    assert left["seq"] > forced["seq"]
    assert "door_opened" not in types(tmp_path)  # no command of ours opened it
    sim.close_door(1, 2)
    wait_event(tmp_path, "door_closed", compartment=2)


def test_dead_board_takes_only_its_own_compartments(tmp_path, sim, make_controller):
    seed(
        tmp_path,
        handover(1, "pickup", 6, 101, "deposited"),  # board 2
        handover(2, "pickup", 2, 102, "deposited"),  # board 1
    )
    ctl = make_controller()
    ctl.start()
    sim.inject(board=2, fault="absent")
    down = wait_event(tmp_path, "board_unreachable", board=2)
    assert down["data"]["compartments"] == [5, 6, 7, 8]
    assert ctl.status()["out_of_service"] == [5, 6, 7, 8]
    refused = ctl.code(code_for(LOCKER_KEY, 101))
    assert refused.status_code == 503 and refused.json()["reason"] == "out_of_service"
    ok = ctl.code(code_for(LOCKER_KEY, 102))
    assert ok.status_code == 200 and ok.json()["compartment"] == 2, ok.text
    assert sim.compartment(1, 2).door_open is True
    sim.clear(board=2)
    wait_event(tmp_path, "board_recovered", board=2, timeout=15)
    assert ctl.status()["out_of_service"] == []
    assert ctl.code(code_for(LOCKER_KEY, 101)).json()["compartment"] == 6


def test_a_board_mended_while_the_controller_was_down_is_reported_back(
    tmp_path, sim, make_controller
):
    """Found by the model walk (issue 10): the controller reported board 2 unreachable, was
    stopped, the board was mended, the controller started again believing every board
    fine, and never said board_recovered: the cloud kept compartments 5-8 out of use."""
    ctl = make_controller()
    ctl.start()
    sim.inject(board=2, fault="absent")
    wait_event(tmp_path, "board_unreachable", board=2)
    ctl.stop()
    sim.clear(board=2)
    ctl.start()
    wait_event(tmp_path, "board_recovered", board=2, timeout=15)
    assert ctl.status()["out_of_service"] == []
    # Once said, not again at the next start; and board 1, never down, is never "recovered".
    ctl.stop()
    ctl.start()
    wait_until(lambda: ctl.status()["doors"].get("8") is False, 10, "board 2 polled")
    recovered = [e for e in db_events(tmp_path / "data") if e["type"] == "board_recovered"]
    assert [e["data"]["board"] for e in recovered] == [2]


def test_lockout_after_five_wrong_codes(tmp_path, sim, make_controller):
    seed(tmp_path, handover(3, "pickup", 1, 55, "deposited"))
    ctl = make_controller()
    ctl.start()
    good = code_for(LOCKER_KEY, 55)
    wrong = str((int(good) + 1) % 10**8).zfill(8)
    replies = [ctl.code(wrong) for _ in range(5)]
    assert [r.status_code for r in replies] == [400, 400, 400, 400, 429]
    assert replies[0].json()["message_en"].startswith("Wrong code")
    # Locked: even the right code is refused now, and the door stays shut.
    locked = ctl.code(good)
    assert locked.status_code == 429 and locked.json()["reason"] == "locked_out"
    assert sim.compartment(1, 1).door_open is False
    lockout = wait_event(tmp_path, "lockout")
    assert lockout["data"]["level"] == 1
    # Config: 1 s base back-off. After it, the right code works (and resets nothing).
    wait_until(lambda: ctl.code(good).status_code == 200, 5, "the lockout to end")
    assert sim.compartment(1, 1).door_open is True
    refusals = [e for e in db_events(tmp_path / "data") if e["type"] == "code_refused"]
    assert [e["data"]["reason"] for e in refusals].count("wrong") == 5


def test_bad_kiosk_input_is_a_clear_4xx(tmp_path, sim, make_controller):
    ctl = make_controller()
    ctl.start()
    for body in ({"code": "12ab"}, {"code": "1" * 30}, {"code": ""}):
        r = ctl.post("/api/code", body)
        assert r.status_code == 400 and r.json()["reason"] == "malformed"
    for body in ({}, {"code": 12345678}, {"code": None}, [1, 2]):
        assert ctl.post("/api/code", body).status_code == 422
    import httpx

    raw = httpx.post(
        ctl.kiosk + "/api/code",
        content=b"{not json",
        timeout=5,
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 422
    assert ctl.post("/api/reopen", {"compartment": -1}).status_code == 422
    page = httpx.get(ctl.kiosk + "/", timeout=5)
    assert page.status_code == 200 and "开箱码" in page.text and "reopen" in page.text.lower()
    assert "lockout" not in types(tmp_path)  # malformed input is not a guess


def test_staff_load_then_applicant_pickup(tmp_path, sim, make_controller):
    from locker_controller.store import StaffMember
    from tests.support.passes import pass_now

    seed(tmp_path, Handover(12, "pickup", None, "M", 77, 8, None, "reserved", "REC-1"))
    store = Store(tmp_path / "data" / "controller.sqlite3")
    store.replace_staff([StaffMember("S002", "Wang", ["loader"])])
    store.close()
    ctl = make_controller()
    ctl.start()
    # Not loaded yet: the applicant's code is not ready.
    early = ctl.code(code_for(LOCKER_KEY, 77))
    assert early.status_code == 400 and early.json()["reason"] == "not_ready"
    token = ctl.post(
        "/api/staff/login",
        {"staff_no": "S002", "staff_pass": pass_now(LOCKER_KEY, "XA-TEST-1", "S002")},
    ).json()["token"]
    loaded = ctl.post("/api/staff/load", {"token": token, "handover_id": 12})
    assert loaded.status_code == 200, loaded.text
    number = loaded.json()["compartment"]
    assert number == 3  # the first free size-M compartment (board 1 channel 3)
    sim.put_item(1, 3)
    sim.close_door(1, 3)
    deposited = wait_event(tmp_path, "deposited", compartment=3)
    assert deposited["data"] == {"handover_id": 12, "by": "S002"}
    # The same handover cannot be loaded twice.
    assert ctl.post("/api/staff/load", {"token": token, "handover_id": 12}).status_code == 409
    pick = ctl.code(code_for(LOCKER_KEY, 77))
    assert pick.status_code == 200 and pick.json()["compartment"] == 3
    sim.take_item(1, 3)
    sim.close_door(1, 3)
    collected = wait_event(tmp_path, "collected", compartment=3)
    assert collected["data"]["by"] == "applicant" and collected["data"]["item_left"] is False


def wrong_code(good: str) -> str:
    return str((int(good) + 1) % 10**8).zfill(8)


def test_lockout_doubles_at_the_next_level(tmp_path, sim, make_controller):
    seed(tmp_path, handover(3, "pickup", 1, 55, "deposited"))
    ctl = make_controller()  # lockout_base_s = 1.0
    ctl.start()
    wrong = wrong_code(code_for(LOCKER_KEY, 55))
    first = [ctl.code(wrong) for _ in range(5)][-1]
    assert first.status_code == 429 and first.json()["retry_after"] == 1.0
    wait_until(lambda: ctl.status()["locked_for_s"] == 0, 10, "the first lockout to end")
    # No success in between: five more wrong codes lock the cabinet for twice as long.
    replies = [ctl.code(wrong) for _ in range(5)]
    assert [r.status_code for r in replies] == [400, 400, 400, 400, 429]
    assert replies[-1].json()["retry_after"] == 2.0
    lockouts = [e["data"] for e in db_events(tmp_path / "data") if e["type"] == "lockout"]
    # The second level raises the dashboard's alarm.
    assert lockouts == [
        {"seconds": 1.0, "level": 1},
        {"seconds": 2.0, "level": 2, "alarm": True},
    ]
    # A good code in between resets nothing (issue 11): the next lockout is longer still.
    wait_until(lambda: ctl.status()["locked_for_s"] == 0, 10, "the second lockout to end")
    assert ctl.code(code_for(LOCKER_KEY, 55)).status_code == 200
    assert [ctl.code(wrong).status_code for _ in range(5)][-1] == 429
    lockouts = [e["data"] for e in db_events(tmp_path / "data") if e["type"] == "lockout"]
    assert lockouts[-1] == {"seconds": 4.0, "level": 3, "alarm": True}
    # Each window that ended is reported once, with what it refused unchecked.
    ended = wait_event(tmp_path, "lockout_ended", level=2)
    assert ended["data"]["refused"] == 0


def test_lockout_survives_a_restart(tmp_path, sim, make_controller):
    seed(tmp_path, handover(3, "pickup", 1, 55, "deposited"))
    ctl = make_controller(lockout_base_s=600.0)
    ctl.start()
    good = code_for(LOCKER_KEY, 55)
    assert [ctl.code(wrong_code(good)).status_code for _ in range(5)][-1] == 429
    ctl.stop()
    ctl.start()
    assert ctl.status()["locked_for_s"] > 0
    locked = ctl.code(good)
    assert locked.status_code == 429 and locked.json()["reason"] == "locked_out"
    assert 0 < locked.json()["retry_after"] <= 600.0
    assert sim.compartment(1, 1).door_open is False
    assert "code_accepted" not in types(tmp_path)
