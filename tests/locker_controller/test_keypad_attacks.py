"""Issue 11, the hostile keypad user: each test performs an attack on a controller built in
this process (its real store, kiosk app, keypad and staff desk, the simulator over a pty)
and checks what it may and may not achieve. The lockout's clock is the one thing faked, so
ten hours of guessing take a second.

- guessing for hours keeps no applicant out: code + last 4 mobile digits open during a lockout;
- a guesser during a lockout learns nothing and opens nothing;
- a keypad flood writes O(1) outbox events per lockout window, and is rate-limited per client;
- staff are not locked out by keypad guesses, nor one staff number by another's;
- an accepted code resets no guess budget;
- a jammed door is reopened only for the client that typed its code, or for staff;
- staff lift a lockout with a signed command.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from locker_controller.app import Controller
from locker_controller.config import parse_config
from locker_controller.kiosk import build_app
from locker_controller.store import Handover, StaffMember
from tests.locker_controller.conftest import LOCKER_ID, LOCKER_KEY, controller_toml
from tests.locker_controller.test_pickup_offline import load_item
from tests.support.passes import pass_now
from xinbao.codes import code_for
from xinbao.contract import CommandType, LiftLockoutPayload, sign_command
from xinbao.lockout import mobile_digest

pytestmark = pytest.mark.slow  # the simulator's pty and bus threads

MOBILE_LAST4 = "8000"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Cabinet:
    def __init__(self, tmp_path, sim, **kiosk) -> None:
        source = controller_toml(tmp_path / "data", sim.start_pty(), kiosk_port=0)
        config = parse_config(source)
        config = config.model_copy(
            update={
                "lockout_base_s": 30.0,
                "kiosk": config.kiosk.model_copy(update=kiosk),
            }
        )
        self.ctl = Controller(config)
        self.clock = Clock()
        self.ctl.lockout.clock = self.clock
        self.ctl.cabinet.open()
        self.app = build_app(self.ctl)
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()
        self.ctl.cabinet.close()
        self.ctl.store.close()

    def call(self, method: str, path: str, body=None, client: str = "127.0.0.1", headers=None):
        async def go():
            transport = httpx.ASGITransport(app=self.app, client=(client, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://kiosk") as http:
                return await http.request(method, path, json=body, headers=headers)

        return self.loop.run_until_complete(go())

    def code(self, code: str, mobile: str | None = None, client: str = "127.0.0.1"):
        body = {"code": code} if mobile is None else {"code": code, "mobile_last4": mobile}
        return self.call("POST", "/api/code", body, client)

    def events(self) -> list[tuple[str, dict]]:
        return [(e.type.value, e.data) for e in self.ctl.store.pending_events(0, 100_000)]

    def seed(self, hid, compartment, counter, state="deposited", kind="pickup") -> None:
        self.ctl.store.upsert_handover(
            Handover(
                hid,
                kind,
                compartment,
                "M",
                counter,
                8,
                datetime.now(UTC) + timedelta(days=1),
                state,
                None,
                mobile_digest(LOCKER_KEY, hid, MOBILE_LAST4),
            )
        )
        self.ctl.keypad.warm()


@pytest.fixture
def cabinet(tmp_path, sim):
    made: list[Cabinet] = []

    def make(**kiosk) -> Cabinet:
        found = Cabinet(tmp_path, sim, **kiosk)
        made.append(found)
        return found

    yield make
    for c in made:
        c.close()


def wrong(good: str, i: int = 1) -> str:
    return str((int(good) + i) % 10**8).zfill(8)


def test_hours_of_guessing_never_turn_the_applicant_away(cabinet, sim):
    load_item(sim, 1, 1)
    cab = cabinet(rate_burst=10_000)
    cab.seed(1, 1, 11)
    good = code_for(LOCKER_KEY, 11)
    # Ten hours of guessing as fast as the lockout lets anyone: the cabinet is locked.
    end = cab.clock.now + 10 * 3600
    while cab.clock.now < end:
        if cab.ctl.lockout.remaining() == 0:
            cab.code(wrong(good))
        cab.clock.now += 5
    while cab.ctl.lockout.remaining() == 0:
        cab.code(wrong(good))
    assert cab.ctl.lockout.level() >= 2
    # A fresh page shows the lockout and asks for the second factor.
    shown = cab.call("GET", "/api/kiosk").json()
    assert shown["locked_for_s"] > 0 and shown["second_factor"] == "mobile_last4"
    # The applicant's code alone is refused, unchecked, with the prompt for the digits.
    alone = cab.code(good)
    assert alone.status_code == 429 and alone.json()["reason"] == "locked_out"
    assert "手机号后四位" in alone.json()["message_zh"] and "mobile" in alone.json()["message_en"]
    assert sim.compartment(1, 1).door_open is False
    # With the last 4 digits of the mobile the SMS went to, the door opens.
    opened = cab.code(good, MOBILE_LAST4)
    assert opened.status_code == 200, opened.text
    assert opened.json()["compartment"] == 1 and sim.compartment(1, 1).door_open is True
    accepted = [d for t, d in cab.events() if t == "code_accepted"]
    assert accepted[-1]["second_factor"] == "mobile"


def test_a_guesser_during_a_lockout_learns_nothing_and_opens_nothing(cabinet, sim):
    load_item(sim, 1, 1)
    cab = cabinet(rate_burst=10_000)
    cab.seed(1, 1, 11)
    good = code_for(LOCKER_KEY, 11)
    replies = [cab.code(wrong(good, i)) for i in range(1, 6)]
    assert [r.status_code for r in replies] == [400] * 4 + [429]
    # The right code without digits is refused like any other: no oracle for valid codes.
    assert cab.code(good).json() == cab.code(wrong(good)).json() | {}
    # Code + digits: one answer whichever part is wrong.
    answers = {
        cab.code(good, "0000").json()["reason"],
        cab.code(wrong(good), MOBILE_LAST4).json()["reason"],
        cab.code(wrong(good), "0000").json()["reason"],
    }
    assert answers == {"wrong_with_mobile"}
    assert cab.code(good, "12a4").json()["reason"] == "malformed_mobile"
    assert sim.compartment(1, 1).door_open is False
    assert "code_accepted" not in [t for t, _ in cab.events()]


def test_a_keypad_flood_writes_one_summary_per_lockout_window(cabinet, sim):
    cab = cabinet(rate_burst=10_000)
    cab.seed(1, 1, 11)
    good = code_for(LOCKER_KEY, 11)
    for i in range(1, 6):
        cab.code(wrong(good, i))
    before = len(cab.events())
    statuses = {cab.code(wrong(good, i)).status_code for i in range(1000)}
    assert statuses == {429}
    # 1,000 refused codes: not one row yet (counted in memory) ...
    assert len(cab.events()) == before
    # ... and one lockout_ended when the window is over, with the count.
    cab.clock.now += 31
    cab.ctl.lockout.tick()
    added = cab.events()[before:]
    assert [t for t, _ in added] == ["lockout_ended"]
    assert added[0][1]["refused"] == 1000 and added[0][1]["level"] == 1


def test_the_kiosk_rate_limits_each_client(cabinet):
    cab = cabinet(rate_burst=20, rate_per_s=1.0)
    statuses = [cab.code("12345678", client="10.0.0.7").status_code for _ in range(30)]
    assert statuses.count(429) >= 9
    limited = cab.code("12345678", client="10.0.0.7")
    body = limited.json()
    assert limited.status_code == 429 and body["reason"] == "rate_limited"
    assert body["message_zh"] and body["message_en"] and body["retry_after"] > 0
    assert int(limited.headers["Retry-After"]) >= 1
    # Another client is served (and the flood did not lock the keypad for it beyond the
    # guesses that were actually checked).
    assert cab.code("12345678", client="10.0.0.8").json()["reason"] != "rate_limited"


def test_keypad_guesses_do_not_lock_staff_out_nor_one_staff_number_another(cabinet):
    cab = cabinet(rate_burst=10_000)
    cab.ctl.store.replace_staff(StaffMember(no, no, ["admin"]) for no in ("S001", "S002"))
    for i in range(5):
        cab.code(str(10_000_000 + i))
    assert cab.ctl.lockout.remaining() > 0
    login = cab.call(
        "POST",
        "/api/staff/login",
        {"staff_no": "S001", "staff_pass": pass_now(LOCKER_KEY, LOCKER_ID, "S001")},
    )
    assert login.status_code == 200, login.text
    # Five bad passes for S002 lock S002 only.
    for _ in range(5):
        bad = cab.call("POST", "/api/staff/login", {"staff_no": "S002", "staff_pass": "0" * 10})
        assert bad.status_code == 401
    locked = cab.call(
        "POST",
        "/api/staff/login",
        {"staff_no": "S002", "staff_pass": pass_now(LOCKER_KEY, LOCKER_ID, "S002")},
    )
    assert locked.status_code == 429 and locked.json()["reason"] == "locked_out"
    assert cab.ctl.lockout.remaining("staff:S001") == 0
    lockouts = [d for t, d in cab.events() if t == "lockout"]
    assert lockouts[-1]["staff_no"] == "S002"


def test_an_accepted_code_resets_no_guess_budget(cabinet, sim):
    load_item(sim, 1, 1)
    cab = cabinet(rate_burst=10_000)
    cab.seed(1, 1, 11)
    good = code_for(LOCKER_KEY, 11)
    for i in range(1, 5):
        assert cab.code(wrong(good, i)).status_code == 400
    assert cab.code(good).status_code == 200  # someone else's pickup
    # The fifth wrong code locks, pickup or not.
    fifth = cab.code(wrong(good, 5))
    assert fifth.status_code == 429 and fifth.json()["reason"] == "locked_out"


def test_only_the_client_that_typed_the_code_or_staff_may_reopen(cabinet, sim):
    cab = cabinet(rate_burst=10_000)
    cab.seed(5, None, 51, state="reserved", kind="dropoff")
    sim.inject(board=1, fault="jammed", channel=3)
    first = cab.code(code_for(LOCKER_KEY, 51), client="10.0.0.1")
    body = first.json()
    assert body["outcome"] == "jammed" and body["can_reopen"] and body["reopen_ticket"], body
    number = body["compartment"]
    sim.clear(board=1, fault="jammed")
    # Another client, with no ticket or a made-up one, cannot open the door.
    for ticket in (None, "x" * 24):
        other = cab.call(
            "POST", "/api/reopen", {"compartment": number, "reopen_ticket": ticket}, "10.0.0.2"
        )
        assert other.status_code == 403 and other.json()["reason"] == "no_reopen"
    assert sim.compartment(1, 3).door_open is False
    # A ticket is for its own door only.
    elsewhere = cab.call(
        "POST", "/api/reopen", {"compartment": 4, "reopen_ticket": body["reopen_ticket"]}
    )
    assert elsewhere.status_code == 403
    mine = cab.call(
        "POST", "/api/reopen", {"compartment": number, "reopen_ticket": body["reopen_ticket"]}
    )
    assert mine.status_code == 200 and mine.json()["outcome"] == "opened", mine.text
    assert sim.compartment(1, 3).door_open is True


def test_staff_lift_the_lockout_with_a_signed_command(cabinet, sim):
    cab = cabinet(rate_burst=10_000)
    for i in range(5):
        cab.code(str(10_000_000 + i))
    cab.code("10000009")
    assert cab.ctl.lockout.remaining() > 0
    command = sign_command(
        LOCKER_KEY, CommandType.LIFT_LOCKOUT, LiftLockoutPayload(by="staff:li", reason="checked")
    )
    cab.ctl.commands.received(command.to_bytes(), retained=False)
    assert cab.ctl.lockout.remaining() == 0 and cab.ctl.lockout.level() == 0
    ended = [d for t, d in cab.events() if t == "lockout_ended"]
    assert ended == [ended[0]] and ended[0]["lifted_by"] == "staff:li"
    assert ended[0]["refused"] == 1
    # Signed with another key: refused, nothing lifted.
    for i in range(5):
        cab.code(str(10_000_000 + i))
    forged = sign_command(b"x" * 32, CommandType.LIFT_LOCKOUT, LiftLockoutPayload(by="me"))

    async def deliver():
        cab.ctl.commands.received(forged.to_bytes(), retained=False)

    cab.loop.run_until_complete(deliver())
    assert cab.ctl.lockout.remaining() > 0


def test_staff_may_reopen_a_jammed_door_without_the_ticket(cabinet, sim):
    cab = cabinet(rate_burst=10_000)
    cab.ctl.store.replace_staff([StaffMember("S009", "Zhao", ["admin"])])
    cab.seed(5, None, 51, state="reserved", kind="dropoff")
    sim.inject(board=1, fault="jammed", channel=3)
    number = cab.code(code_for(LOCKER_KEY, 51)).json()["compartment"]
    sim.clear(board=1, fault="jammed")
    login = cab.call(
        "POST",
        "/api/staff/login",
        {"staff_no": "S009", "staff_pass": pass_now(LOCKER_KEY, LOCKER_ID, "S009")},
    )
    token = login.json()["token"]
    fake = cab.call(
        "POST", "/api/reopen", {"compartment": number}, headers={"Authorization": "Bearer nope"}
    )
    assert fake.status_code == 403
    staff = cab.call(
        "POST", "/api/reopen", {"compartment": number}, headers={"Authorization": f"Bearer {token}"}
    )
    assert staff.status_code == 200 and staff.json()["outcome"] == "opened", staff.text
    sent = [d for t, d in cab.events() if t == "unlock_sent" and d.get("reopen")]
    assert sent[-1]["staff_no"] == "S009"


def test_malformed_bodies_get_the_usual_refusal_and_the_configured_length(cabinet):
    """Issue 13: the kiosk answered a malformed body with FastAPI's bare 422 list and refused
    a short code with "6 to 10 digits" while the page asks for this cabinet's length."""
    cab = cabinet()
    short = cab.code("12")
    assert short.status_code == 400, short.text
    assert short.json()["message_en"] == "Please type the 8-digit code."
    assert short.json()["message_zh"] == "请输入8位数字开箱码"
    for path, body in [
        ("/api/code", {"cod": "12345678"}),
        ("/api/code", {"code": ["1"]}),
        ("/api/staff/login", {}),
        ("/api/reopen", "not json"),
    ]:
        r = cab.call("POST", path, body)
        assert r.status_code == 422, (path, r.text)
        answer = r.json()
        assert answer["ok"] is False and answer["message_zh"] and answer["message_en"], answer
        assert answer["reason"] == ("malformed" if path == "/api/code" else "bad_request"), answer
        assert "detail" not in answer, answer
    assert cab.events() == []  # refused before anything was looked at or written
