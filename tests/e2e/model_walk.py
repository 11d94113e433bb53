"""Issue 10's model-based walk: a seeded random walk over the real stack (cloud in this
process, Mosquitto, the ``xinbao controller`` child, the simulator over a pty).

``Walk`` keeps a small model of what the test did (handovers with their kind, state and
compartment; which board is down; the staff token) and at each step picks one enabled action
with ``random.Random(seed)``. Each action waits for its own concrete outcome (a door seen
open or shut, a handover state, an alarm), never for a fixed time. After each step it waits
for quiet (no command left unanswered) and checks the invariants against the simulator's
ground truth:

* ``placement``: every compartment the cloud calls occupied physically holds the item of
  the handover it names (and the model's); no item sits anywhere else;
* ``pulses``: every lock pulse of the step is one an accepted code or staff action asked
  for, in the compartment the cloud names for that handover, once;
* ``views``: the controller's and the cloud's views of every compartment agree (holder and
  occupied);
* ``audit``: the audit chain verifies, and the cloud's deposited/collected events of every
  handover name the compartment where the item physically went in/out.

The keypad's lockout is modelled too: an accepted code resets no lockout counter
(xinbao/lockout.py), so the walk counts its wrong codes, expects ``locked_out`` on exactly
the threshold-th one (``wrong`` before it) and waits the lockout out before its next code.

A failure raises AssertionError carrying the seed and the steps taken (the reproduction).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

from sqlmodel import Session, select

from cloud_api.models.monitoring import LockerEventRecord
from locker_controller.config import ControllerConfig
from tests.e2e.conftest import LOCKER_ID
from tests.e2e.staffed_cabinet import staff_login, wait_door
from tests.e2e.three_views import WIRING, cabinet_view, cloud_view, truth
from tests.support.journey import assert_matches_ground_truth
from tests.support.waiting import wait_until
from xinbao.codes import code_for

STEP_S = 30
LIVE = ("reserved", "deposited")
SIZES = {1: "S", 2: "S", 3: "M", 4: "M", 5: "M", 6: "L"}
BOARD2 = {n for n, (b, _) in WIRING.items() if b == 2}
# The test cabinet keeps the controller's defaults for these (tests/support/cabinet.py).
LOCKOUT_THRESHOLD = ControllerConfig.model_fields["lockout_threshold"].default
FORGIVE_S = ControllerConfig.model_fields["lockout_forgive_s"].default


@dataclass
class Item:
    hid: int
    kind: str  # "dropoff" or "pickup"
    number: str  # application number
    compartment: int
    counter: int  # code counter
    state: str = "reserved"  # reserved, deposited, collected, cancelled


@dataclass
class Walk:
    cloud: object
    controller: object
    sim: object
    staff_pass: str
    data_dir: object
    seed: int
    restarts: bool = False
    broker: object = None  # with restarts: the network cut (the broker stopped) too
    uplink: object = None  # the cabinet's own link (tests.support.proxy.CuttableLink)
    rng: random.Random = field(init=False)
    items: list[Item] = field(default_factory=list)
    board2_down: bool = False
    token: str = ""
    authorised: Counter = field(default_factory=Counter)
    steps: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    wrong_streak: int = 0
    # time.monotonic() of each wrong code checked since the last lockout, and when the
    # lockout the walk last saw ends (by the retry_after the kiosk gave, read on arrival).
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0
    audit: list[dict] = field(default_factory=list)  # the trail read so far, in seq order
    serial: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # --- running --------------------------------------------------------------------------

    def run(self, steps: int) -> Counter:
        self.ready()
        for i in range(steps):
            name, action, arg = self.pick()
            self.steps.append(f"{i + 1}. {name}{self.describe(arg)}")
            try:
                since = self.sim.truth.last_seq
                expected = action(arg) if arg is not None else action()
                self.counts[f"action {name}"] += 1
                self.check(since, expected or Counter())
            except BaseException as exc:
                raise AssertionError(self.reproduction(exc)) from exc
        try:
            self.finish()
        except BaseException as exc:
            raise AssertionError(self.reproduction(exc)) from exc
        return self.counts

    def describe(self, arg) -> str:
        if arg is None:
            return ""
        if isinstance(arg, int):
            it = self.item(arg)
            board = " (board 2 down)" if self.board2_down else ""
            return f"(handover {arg} {it.number}, {it.kind} in {it.compartment}){board}"
        return f"({arg})"

    def reproduction(self, exc: BaseException) -> str:
        return (
            f"model walk seed={self.seed} failed at step {len(self.steps)}: "
            f"{type(exc).__name__}: {exc}\nsteps:\n  " + "\n  ".join(self.steps)
        )

    def pick(self):
        live = lambda kind, state: [  # noqa: E731
            i for i in self.items if i.kind == kind and i.state == state
        ]
        up = lambda i: not (self.board2_down and i.compartment in BOARD2)  # noqa: E731
        options: list[tuple[int, str, object, object]] = []
        held = [i for i in self.items if i.state in ("reserved", "deposited")]
        if len(held) < 5:
            options.append((3, "reserve_dropoff", self.reserve_dropoff, self.rng.choice("SM")))
            options.append((3, "start_load", self.start_load, self.rng.choice("SML")))
        for i in live("dropoff", "reserved"):
            if up(i):
                options.append((4, "fill_dropoff", self.fill_dropoff, i.hid))
            options.append((1, "cancel_dropoff", self.cancel_dropoff, i.hid))
        for i in live("dropoff", "deposited"):
            if up(i):
                options.append((3, "staff_collect", self.staff_collect, i.hid))
        for i in live("pickup", "reserved"):
            options.append((4, "staff_load", self.staff_load, i.hid))
        for i in live("pickup", "deposited"):
            if up(i):
                options.append((3, "pick_up", self.pick_up, i.hid))
                options.append((1, "pick_up_door_left_open", self.pick_up_left_open, i.hid))
        if self.wrong_streak < 2:
            options.append((1, "wrong_code", self.wrong_code, None))
        options.append(
            (
                1,
                "board2_back" if self.board2_down else "board2_down",
                self.board2_back if self.board2_down else self.board2_down_,
                None,
            )
        )
        outside = [i for i in live("pickup", "deposited") if up(i)]
        if self.restarts:
            options.append((1, "restart_controller", self.restart_controller, None))
            if self.board2_down:
                options.append((1, "board2_mended_while_controller_down", self.mended, None))
            if self.broker is not None:
                options.append(
                    (1, "network_cut", self.network_cut, outside[0].hid if outside else None)
                )
        if self.uplink is not None:
            waiting = [i for i in live("dropoff", "reserved") if up(i)]
            options.append(
                (
                    2,
                    "cabinet_cut",
                    self.cabinet_cut,
                    (
                        self.rng.choice(outside).hid if outside else None,
                        self.rng.choice(waiting).hid if waiting else None,
                        self.rng.choice("SM"),
                    ),
                )
            )
        weights = [w for w, *_ in options]
        _, name, action, arg = self.rng.choices(options, weights)[0]
        return name, action, arg

    # --- helpers --------------------------------------------------------------------------

    def item(self, hid: int) -> Item:
        return next(i for i in self.items if i.hid == hid)

    def handover(self, hid: int) -> dict:
        r = self.cloud.client.get(f"/api/v1/handovers/{hid}", headers=self.cloud.integrator)
        assert r.status_code == 200, r.text
        return r.json()

    def reaches(self, hid: int, state: str) -> dict:
        wait_until(lambda: self.handover(hid)["state"] == state, STEP_S, f"handover {hid} {state}")
        return self.handover(hid)

    def code(self, item: Item) -> str:
        return code_for(self.cloud.locker_key(), item.counter, self.cloud.settings.code_digits)

    def wait_door(self, number: int, is_open: bool) -> None:
        wait_door(self.controller, number, is_open, STEP_S)

    def settled(self) -> bool:
        sent = self.cloud.get("/api/v1/commands", params={"limit": 500}).json()
        return all(c["status"] != "sent" for c in sent)

    def alarms(self, kind: str) -> list[dict]:
        found = self.cloud.get("/api/v1/alarms", params={"open": "true"}).json()
        return [a for a in found if a["kind"] == kind]

    def ready(self) -> None:
        path = f"/api/v1/lockers/{LOCKER_ID}"
        wait_until(lambda: self.cloud.get(path).json()["online"], STEP_S, "the locker on line")
        wait_until(
            lambda: (
                self.cloud.get("/api/v1/commands", params={"limit": 500}).json() and self.settled()
            ),
            STEP_S,
            "the first sync answered",
        )

    def new_number(self) -> str:
        self.serial += 1
        return f"XA-W{self.seed % 10000:04d}-{self.serial:04d}"

    def login(self) -> None:
        self.token = staff_login(self.controller, self.staff_pass)

    def staff_post(self, path: str, body: dict):
        if not self.token:
            self.login()
        r = self.controller.post(path, {"token": self.token, **body})
        if r.status_code in (401, 403):  # the session ended (a restart, a long soak)
            self.login()
            r = self.controller.post(path, {"token": self.token, **body})
        return r

    def open_fill_close(self, number: int, put: bool | None) -> None:
        """The door the cabinet opened: put in / take out (None: neither), shut it."""
        b, c = WIRING[number]
        self.wait_door(number, True)
        if put is True:
            self.sim.put_item(b, c)
        elif put is False:
            self.sim.take_item(b, c)
        self.sim.close_door(b, c)
        self.wait_door(number, False)

    # --- actions (each returns the lock pulses it expects, by compartment) ---------------

    def reserve_dropoff(self, size: str):
        number = self.new_number()
        self.cloud.record(number)
        r = self.cloud.client.post(
            "/api/v1/handovers/dropoff",
            headers=self.cloud.integrator,
            json={"application_number": number, "size": size, "locker_id": LOCKER_ID},
        )
        self._note_reserved(r, "dropoff", number)

    def start_load(self, size: str):
        number = self.new_number()
        self.cloud.record(number, status="approved")
        r = self.cloud.post(
            "/api/v1/staff/loads",
            {"application_number": number, "locker_id": LOCKER_ID, "size": size},
        )
        self._note_reserved(r, "pickup", number)

    def _note_reserved(self, r, kind: str, number: str) -> None:
        """The new handover into the model; a 409 (no compartment of the size) is counted."""
        if r.status_code == 409:
            self.counts["refused: no compartment"] += 1
            return
        assert r.status_code == 201, r.text
        h = r.json()
        self.items.append(Item(h["id"], kind, number, h["compartment_number"], h["code_counter"]))

    def fill_dropoff(self, hid: int):
        it = self.item(hid)
        wait_until(self.settled, STEP_S, "the reservation at the cabinet")
        r = self.enter_code(self.code(it))
        assert r.status_code == 200 and r.json()["ok"], r.text
        opened = r.json()["compartment"]
        assert opened == it.compartment, f"code of {hid} opened {opened}, not {it.compartment}"
        self.authorised[opened] += 1
        self.wrong_streak = 0
        self.open_fill_close(opened, True)
        self.reaches(hid, "deposited")
        it.state = "deposited"
        return Counter({opened: 1})

    def cancel_dropoff(self, hid: int):
        r = self.cloud.client.post(f"/api/v1/handovers/{hid}/cancel", headers=self.cloud.integrator)
        assert r.status_code == 200, r.text
        self.item(hid).state = "cancelled"
        return None

    def staff_collect(self, hid: int):
        it = self.item(hid)
        r = self.staff_post("/api/staff/collect", {"compartment": it.compartment})
        assert r.status_code == 200 and r.json()["ok"], r.text
        self.authorised[it.compartment] += 1
        self.open_fill_close(it.compartment, False)
        self.reaches(hid, "collected")
        it.state = "collected"
        return Counter({it.compartment: 1})

    def staff_load(self, hid: int):
        it = self.item(hid)
        wait_until(self.settled, STEP_S, "the load at the cabinet")
        r = self.staff_post("/api/staff/load", {"handover_id": hid})
        if r.status_code == 503 and self.board2_down:
            # Its door (and every other of its size) is on the silent board: nothing opens.
            assert r.json()["reason"] == "compartments_unavailable", r.text
            self.counts["refused: compartments unavailable"] += 1
            return None
        assert r.status_code == 200 and r.json()["ok"], r.text
        opened = r.json()["compartment"]
        if opened != it.compartment:
            # Only a silent board may move a load (the shared allocation rule).
            assert self.board2_down and it.compartment in BOARD2, (opened, it.compartment)
            self.counts["load moved off the silent board"] += 1
        self.authorised[opened] += 1
        self.open_fill_close(opened, True)
        h = self.reaches(hid, "deposited")
        assert h["compartment_number"] == opened, f"cloud puts {hid} in {h['compartment_number']}"
        it.compartment, it.state = opened, "deposited"
        return Counter({opened: 1})

    def pick_up(self, hid: int, left_open: bool = False, offline: bool = False):
        it = self.item(hid)
        r = self.enter_code(self.code(it))
        assert r.status_code == 200 and r.json()["ok"], r.text
        opened = r.json()["compartment"]
        assert opened == it.compartment, f"code of {hid} opened {opened}, not {it.compartment}"
        self.authorised[opened] += 1
        self.wrong_streak = 0
        if left_open:
            b, c = WIRING[opened]
            self.wait_door(opened, True)
            self.sim.take_item(b, c)
            wait_until(
                lambda: [a for a in self.alarms("door_left_open") if a["compartment"] == opened],
                STEP_S,
                f"the door-left-open alarm of {opened}",
            )
            self.counts["door left open alarms"] += 1
            self.open_fill_close(opened, None)
            wait_until(lambda: not self.alarms("door_left_open"), STEP_S, "the alarm cleared")
        else:
            self.open_fill_close(opened, False)
        if not offline:
            self.reaches(hid, "collected")
        it.state = "collected"
        return Counter({opened: 1})

    def network_cut(self, hid: int | None = None):
        """The broker goes away; an applicant with a licence (if any) collects it at the
        cabinet, off line; the network comes back and the cloud catches up."""
        self.broker.stop()
        wait_until(lambda: not self.controller.status()["online"], STEP_S, "the cabinet off line")
        expected = self.pick_up(hid, offline=True) if hid is not None else None
        if hid is not None:
            assert self.handover(hid)["state"] == "deposited"
        self.broker.start()
        assert self.cloud.bridge.wait_connected(30), "the bridge did not reconnect"
        self.ready()
        if hid is not None:
            self.reaches(hid, "collected")
        self.counts["network cuts"] += 1
        return expected

    def cabinet_cut(self, arg):
        """Only the cabinet's own link goes down; the broker and the cloud carry on. While it
        is down an applicant may collect a licence at the cabinet; the cloud may cancel a
        drop-off whose applicant, never told, drops the documents off all the same; and the
        cloud reserves a new drop-off (perhaps on that very compartment). The link comes
        back: the cloud follows the cabinet, the new reservation moves if it must."""
        pickup, cancelled, size = arg
        self.uplink.cut()
        path = f"/api/v1/lockers/{LOCKER_ID}"
        wait_until(lambda: not self.cloud.get(path).json()["online"], STEP_S, "the cloud: off")
        wait_until(lambda: not self.controller.status()["online"], STEP_S, "the cabinet: off")
        expected: Counter = Counter()
        if cancelled is not None:
            it = self.item(cancelled)
            r = self.cloud.client.post(
                f"/api/v1/handovers/{cancelled}/cancel", headers=self.cloud.integrator
            )
            assert r.status_code == 200, r.text
            self.counts["drop-offs cancelled while the cabinet was off line"] += 1
        if self.rng.random() < 0.7 and len([i for i in self.items if i.state in LIVE]) < 5:
            self.reserve_dropoff(size)
        if cancelled is not None:
            r = self.enter_code(self.code(it))
            assert r.status_code == 200 and r.json()["ok"], r.text
            opened = r.json()["compartment"]
            assert opened == it.compartment, f"code of {it.hid} opened {opened}"
            self.authorised[opened] += 1
            self.wrong_streak = 0
            self.open_fill_close(opened, True)
            it.state = "deposited"
            expected[opened] += 1
        if pickup is not None:
            expected += self.pick_up(pickup, offline=True)
        self.uplink.restore()
        self.ready()
        if cancelled is not None:
            self.reaches(cancelled, "deposited")
        if pickup is not None:
            self.reaches(pickup, "collected")
        # A drop-off reserved meanwhile on the compartment the cancelled one kept moved.
        wait_until(self.settled, STEP_S, "quiet: every command answered")
        for i in self.items:
            if i.state == "reserved":
                h = self.handover(i.hid)
                if h["state"] == "cancelled":
                    # Displaced with no compartment of its size left: cancelled, code revoked.
                    assert cancelled is not None, (i, h)
                    self.counts["reservations cancelled: displaced, no room"] += 1
                    i.state = "cancelled"
                elif h["compartment_number"] != i.compartment:
                    assert cancelled is not None, (i, h)
                    self.counts["reservations displaced by a late deposit"] += 1
                    i.compartment = h["compartment_number"]
        self.counts["cabinet link cuts"] += 1
        return expected

    def mended(self):
        """Board 2 is mended while the controller is down: the restarted controller must
        find it answering and the cloud's board-down alarm must clear."""
        self.controller.stop()
        self.sim.clear(board=2)
        self.board2_down = False
        self.controller.start()
        self.token = ""
        self.ready()
        wait_until(lambda: not self.alarms("board_unreachable"), STEP_S, "the board back")
        wait_until(
            lambda: not BOARD2 & set(self.controller.status()["out_of_service"]),
            STEP_S,
            "board 2's compartments back in service",
        )
        self.counts["boards mended while the controller was down"] += 1
        return None

    def pick_up_left_open(self, hid: int):
        return self.pick_up(hid, left_open=True)

    def enter_code(self, code: str):
        """Type a code the walk expects to open a door, after any lockout it saw ends."""
        wait = self.locked_until - time.monotonic()
        if wait > 0:
            self.counts["lockouts waited out"] += 1
            time.sleep(wait)
        return self.controller.code(code)

    def wrong_code(self):
        digits = self.cloud.settings.code_digits
        valid = {self.code(i) for i in self.items}
        while (code := "".join(self.rng.choice("0123456789") for _ in range(digits))) in valid:
            pass
        r = self.controller.code(code)
        reason = r.json().get("reason")
        assert r.status_code == 429 or r.status_code == 400, r.text
        now = time.monotonic()
        if now < self.locked_until:
            # During a lockout guesses are not checked, so they count for nothing.
            assert reason == "locked_out", r.text
        else:
            # Failures leak away one per FORGIVE_S: only those older than that may be gone.
            self.failures = [t for t in self.failures if now - t < FORGIVE_S] + [now]
            if len(self.failures) >= LOCKOUT_THRESHOLD:
                assert reason == "locked_out" and r.json()["retry_after"] > 0, r.text
                self.locked_until = now + r.json()["retry_after"]
                self.failures = []
                self.counts["lockouts"] += 1
            else:
                assert reason == "wrong", f"wrong code {len(self.failures)}: {r.text}"
        self.wrong_streak += 1
        self.counts["wrong codes refused"] += 1
        return None

    def board2_down_(self):
        self.sim.inject(board=2, fault="absent")
        self.board2_down = True
        wait_until(lambda: self.alarms("board_unreachable"), STEP_S, "the board-down alarm")
        return None

    def board2_back(self):
        self.sim.clear(board=2)
        self.board2_down = False
        wait_until(lambda: not self.alarms("board_unreachable"), STEP_S, "the board back")
        wait_until(
            lambda: not BOARD2 & set(self.controller.status()["out_of_service"]),
            STEP_S,
            "board 2's compartments back in service",
        )
        return None

    def restart_controller(self):
        self.controller.stop()
        self.controller.start()
        self.token = ""
        self.ready()
        if self.board2_down:
            # The new controller must have found the board silent itself before the walk may
            # bring it back (otherwise see "board fixed while the controller is down" in the
            # report: the cloud's alarm stays open).
            wait_until(
                lambda: set(self.controller.status()["out_of_service"]) >= BOARD2,
                STEP_S,
                "the restarted controller finding board 2 silent",
            )
        self.counts["controller restarts"] += 1
        return None

    # --- invariants -----------------------------------------------------------------------

    def check(self, since: int, expected: Counter) -> None:
        wait_until(self.settled, STEP_S, "quiet: every command answered")
        # Lock pulses of this step: exactly the ones asked for.
        pulses = Counter({n: 0 for n in WIRING})
        of = {v: k for k, v in WIRING.items()}
        for e in self.sim.truth.events("lock_pulse", since):
            pulses[of[(e.board, e.channel)]] += 1
        assert +pulses == +expected, f"lock pulses {dict(+pulses)}, asked for {dict(+expected)}"
        self.counts["check pulses"] += 1
        # Placement and views: eventually (the controller's SQLite, the cloud's rows).
        last: list[str] = []

        def agree() -> bool:
            last[:] = self.disagreements()
            return not last

        try:
            wait_until(agree, STEP_S, "the three views to agree")
        except AssertionError as exc:
            raise AssertionError("views disagree: " + ("; ".join(last) or str(exc))) from None
        self.counts["check placement"] += 1
        self.counts["check views"] += 1
        self.check_audit()
        self.counts["check audit"] += 1

    def disagreements(self) -> list[str]:
        cloud = cloud_view(self.cloud.engine, LOCKER_ID)
        cabinet = cabinet_view(self.data_dir)
        hardware = truth(self.sim)
        model = {i.compartment: i for i in self.items if i.state in ("reserved", "deposited")}
        out = []
        for n in WIRING:
            seen = f"{n}: cloud={cloud[n]} cabinet={cabinet[n]} truth={hardware[n]}"
            it = model.get(n)
            if cloud[n][0] == "occupied":
                if hardware[n] != 1 or not it or it.state != "deposited" or cloud[n][1] != it.hid:
                    out.append("occupied in the cloud, not physically its item: " + seen)
            elif hardware[n]:
                out.append(f"an item in a compartment the cloud calls {cloud[n][0]}: " + seen)
            if it and cloud[n][1] != it.hid:
                out.append(f"the cloud names {cloud[n][1]}, the walk put {it.hid}: " + seen)
            if not it and cloud[n][1] is not None:
                out.append(f"the cloud holds {n} for {cloud[n][1]}, the walk for none: " + seen)
            if cabinet[n][1] != cloud[n][1]:
                out.append("the cabinet and the cloud name different handovers: " + seen)
            if cabinet[n][0] != (cloud[n][0] == "occupied"):
                out.append("the cabinet and the cloud differ on occupied: " + seen)
        return out

    def check_audit(self) -> None:
        verdict = self.cloud.get("/api/v1/audit/verify").json()
        assert verdict["ok"], verdict
        with Session(self.cloud.engine) as s:
            rows = s.exec(
                select(LockerEventRecord).where(
                    LockerEventRecord.locker_id == LOCKER_ID,
                    LockerEventRecord.type.in_(("deposited", "collected")),
                )
            ).all()
        where: dict[tuple[int, str], list[int]] = {}
        for r in rows:
            where.setdefault((r.data.get("handover_id"), r.type), []).append(r.compartment)
        for it in self.items:
            if it.state in ("deposited", "collected"):
                assert where.get((it.hid, "deposited")) == [it.compartment], (
                    f"deposited events of {it.hid}: {where.get((it.hid, 'deposited'))}, "
                    f"physically in {it.compartment}"
                )
            if it.state == "collected":
                assert where.get((it.hid, "collected")) == [it.compartment], (
                    f"collected events of {it.hid}: {where.get((it.hid, 'collected'))}, "
                    f"physically out of {it.compartment}"
                )
        moved = [e for e in self.audit_entries() if e["action"] == "handover.compartment_moved"]
        for e in moved:
            hid = int(e["subject"].split(":")[1])
            it = next((i for i in self.items if i.hid == hid), None)
            if (
                it
                and it.state in ("deposited", "collected")
                and e["detail"].get("reason") != "displaced"
            ):
                assert e["detail"]["to"] == it.compartment, (e, it)

    def audit_entries(self) -> list[dict]:
        """The whole audit trail so far, read on from where the last check stopped."""
        while True:
            after = self.audit[-1]["seq"] if self.audit else 0
            page = self.cloud.get("/api/v1/audit", params={"after": after, "limit": 500}).json()
            self.audit.extend(page)
            if len(page) < 500:
                return self.audit

    def finish(self) -> None:
        if self.board2_down:
            self.board2_back()
            self.check(self.sim.truth.last_seq, Counter())
        assert_matches_ground_truth(self.sim, self.cloud.engine, LOCKER_ID, self.authorised)
        self.counts["check ground truth"] += 1
