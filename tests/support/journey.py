"""One applicant's whole journey through the real interfaces, and the ground-truth check.

``Journey`` drives cloud (integrator and staff APIs, the console SMS inbox), the cabinet's
controller (kiosk: codes, staff log-in, collect, load) and the tester's hands on the
simulator (items, doors), step by step, so a test can break something between any two
steps. It counts every door opening it asked for (``authorised``): the lock pulses in the
simulator's ground truth must be exactly those.

``assert_matches_ground_truth`` then compares the simulator's log with what the cloud took
in: every door movement exactly once, in order per compartment, no event stored twice, no
lock pulse nobody authorised.
"""

import contextlib
import re
from collections import Counter

from sqlmodel import Session, select

from cloud_api.models.monitoring import LockerEventRecord
from tests.support.cabinet import COMPARTMENTS, ControllerProcess
from tests.support.waiting import wait_until

STAFF_NO = "clerk1"
CODE_IN_SMS = re.compile(r"(?:开箱码|取件码)(\d{6,10})(?!\d)")
COMPARTMENT_OF = {(b, c): n for n, _, b, c in COMPARTMENTS}
WIRING = {n: (b, c) for n, _, b, c in COMPARTMENTS}
DOOR_MOVES = {"door_opened": "opened", "door_forced": "opened", "door_closed": "closed"}
STEP_S = 30  # generous: a loaded 2-core CI machine, a broker or controller coming back


def kiosk_ok(response) -> dict:
    assert response.status_code == 200 and response.json()["ok"], response.text
    return response.json()


class Journey:
    """record -> drop-off reserved -> code typed -> documents in -> staff collect at the
    cabinet -> approved -> staff load -> pickup code by SMS -> applicant collects."""

    def __init__(self, cloud, controller: ControllerProcess, sim, staff_pass: str, number: str):
        self.cloud, self.controller, self.sim = cloud, controller, sim
        self.staff_pass, self.number = staff_pass, number
        self.authorised: Counter[int] = Counter()
        self.dropoff: dict = {}
        self.pickup: dict = {}
        self.compartment = 0
        self.staff_token = ""
        self._seen_sms: set[str] = set()

    # --- the whole thing, and its halves ------------------------------------------------

    def run(self) -> None:
        self.ready()
        self.drop_off()
        self.staff_collect()
        self.approve_and_load()
        self.pick_up()

    def drop_off(self) -> None:
        self.reserve_dropoff()
        self.type_code(self.read_code())
        self.put_in_and_close()
        self.handover_reaches(self.dropoff, "deposited", record="documents_in_locker")

    def approve_and_load(self) -> None:
        self.approve()
        self.start_load()
        self.staff_load()
        self.handover_reaches(self.pickup, "deposited", record="licence_in_locker")

    def pick_up(self) -> None:
        self.type_code(self.read_code())
        self.take_out_and_close()
        self.collected_in_cloud()

    # --- steps --------------------------------------------------------------------------

    def ready(self) -> None:
        """The locker is on line and has answered the cloud (full sync, staff credentials)."""
        locker = f"/api/v1/lockers/{self.controller_locker()}"
        wait_until(lambda: self.cloud.get(locker).json()["online"], STEP_S, "locker online")
        self.wait_synced(set())

    def controller_locker(self) -> str:
        return self.controller.status()["locker_id"]

    def reserve_dropoff(self) -> None:
        before = self._command_ids()
        self.cloud.record(self.number)
        self.dropoff = self.cloud.dropoff(self.number, size="M")
        self.compartment = self.dropoff["compartment_number"]
        self.wait_synced(before)

    def read_code(self) -> str:
        """The applicant's newest code, read from the SMS as a person would."""

        def new_code() -> str | None:
            for sms in self.cloud.sms_inbox():
                found = CODE_IN_SMS.search(sms["body"])
                if found and sms["sid"] not in self._seen_sms:
                    self._seen_sms.add(sms["sid"])
                    return found.group(1)
            return None

        return wait_until(new_code, STEP_S, "a code by SMS")

    def type_code(self, code: str) -> None:
        opened = kiosk_ok(self.controller.code(code))
        assert opened["compartment"] == self.compartment, opened
        self.authorised[self.compartment] += 1
        self.wait_door(True)

    def put_in_and_close(self) -> None:
        self.sim.put_item(*WIRING[self.compartment])
        self.close()

    def take_out_and_close(self) -> None:
        self.sim.take_item(*WIRING[self.compartment])
        self.close()

    def close(self) -> None:
        self.sim.close_door(*WIRING[self.compartment])
        self.wait_door(False)

    def staff_login(self) -> None:
        def logged_in() -> str | None:
            # Retried: after a restart the cabinet may not have its staff list yet.
            r = self.controller.post(
                "/api/staff/login", {"staff_no": STAFF_NO, "staff_pass": self.staff_pass}
            )
            return r.json().get("token") if r.status_code == 200 else None

        self.staff_token = wait_until(logged_in, 45, "the staff log-in at the cabinet")

    def staff_collect(self) -> None:
        self.staff_collect_at_cabinet()
        self.handover_reaches(self.dropoff, "collected", record="documents_received")

    def staff_collect_at_cabinet(self) -> None:
        if not self.staff_token:
            self.staff_login()
        body = {"token": self.staff_token, "compartment": self.compartment}
        kiosk_ok(self.controller.post("/api/staff/collect", body))
        self.authorised[self.compartment] += 1
        self.wait_door(True)
        self.take_out_and_close()

    def approve(self) -> None:
        r = self.cloud.client.post(
            f"/api/v1/records/{self.number}/transitions",
            json={"status": "approved"},
            headers=self.cloud.integrator,
        )
        assert r.status_code == 200, r.text

    def start_load(self) -> None:
        before = self._command_ids()
        r = self.cloud.post(
            "/api/v1/staff/loads",
            {"application_number": self.number, "locker_id": self.controller_locker(), "size": "S"},
        )
        assert r.status_code == 201, r.text
        self.pickup = r.json()
        self.wait_synced(before)

    def staff_load(self) -> None:
        if not self.staff_token:
            self.staff_login()
        body = {"token": self.staff_token, "handover_id": self.pickup["id"]}
        opened = kiosk_ok(self.controller.post("/api/staff/load", body))
        self.compartment = opened["compartment"]
        assert self.compartment == self.pickup["compartment_number"]
        self.authorised[self.compartment] += 1
        self.wait_door(True)
        self.put_in_and_close()

    def collected_in_cloud(self) -> None:
        self.handover_reaches(self.pickup, "collected", record="collected")
        receipts = wait_until(
            lambda: [m for m in self.cloud.sms_inbox() if "满意度评价" in m["body"]],
            STEP_S,
            "the thank-you SMS with the rating link",
        )
        assert len(receipts) == 1, receipts
        # The drop-off's receipt was queued once too (the outbox: an API process restarted
        # in the journey starts with an empty console inbox).
        r = self.cloud.get("/api/v1/sms/outbox", params={"handover_id": self.dropoff["id"]})
        assert r.status_code == 200, r.text
        templates = sorted(m["template"] for m in r.json())
        assert templates == ["dropoff_code", "dropoff_receipt"], templates

    # --- waiting for the cloud ----------------------------------------------------------

    def state(self, handover: dict) -> str:
        r = self.cloud.client.get(
            f"/api/v1/handovers/{handover['id']}", headers=self.cloud.integrator
        )
        assert r.status_code == 200, r.text
        return r.json()["state"]

    def record_status(self) -> str:
        r = self.cloud.client.get(f"/api/v1/records/{self.number}", headers=self.cloud.integrator)
        assert r.status_code == 200, r.text
        return r.json()["status"]

    def handover_reaches(self, handover: dict, state: str, record: str) -> None:
        what = f"handover {handover['id']} {state}"
        wait_until(lambda: self.state(handover) == state, STEP_S, what)
        assert self.record_status() == record

    def _commands(self) -> list[dict]:
        r = self.cloud.get("/api/v1/commands", params={"limit": 500})
        assert r.status_code == 200, r.text
        return r.json()

    def _command_ids(self) -> set[str]:
        return {c["request_id"] for c in self._commands()}

    def wait_synced(self, before: set[str]) -> None:
        """A new reservation sync went out and the locker answered it; nothing still waits."""

        def synced() -> bool:
            new = [c for c in self._commands() if c["request_id"] not in before]
            syncs = [c for c in new if c["type"] == "sync_reservations"]
            return (
                bool(syncs)
                and syncs[0]["status"] == "ok"
                and all(c["status"] != "sent" for c in new)
            )

        wait_until(synced, STEP_S, "the locker to answer the sync")

    def wait_door(self, is_open: bool) -> None:
        # The controller debounces its polls: a door shut before it saw the door open would
        # be a movement nobody could report, not a fault of the chain under test.
        number = self.compartment
        wait_until(
            lambda: self.controller.status()["doors"][str(number)] is is_open,
            STEP_S,
            f"the controller seeing door {number} {'open' if is_open else 'shut'}",
        )


# --- the ground-truth comparison -----------------------------------------------------------


def truth_door_moves(sim) -> dict[int, list[str]]:
    moves: dict[int, list[str]] = {}
    for e in sim.truth.events(("door_opened", "door_closed")):
        moves.setdefault(COMPARTMENT_OF[(e.board, e.channel)], []).append(DOOR_MOVES[e.kind])
    return moves


def cloud_door_moves(engine, locker_id: str) -> dict[int, list[str]]:
    with Session(engine) as s:
        rows = s.exec(
            select(LockerEventRecord)
            .where(LockerEventRecord.locker_id == locker_id)
            .order_by(LockerEventRecord.seq)
        ).all()
    moves: dict[int, list[str]] = {}
    for row in rows:
        if row.type in DOOR_MOVES:
            moves.setdefault(row.compartment, []).append(DOOR_MOVES[row.type])
    return moves


def assert_matches_ground_truth(sim, engine, locker_id: str, authorised: Counter[int]) -> None:
    """Every door movement of the simulator reached the cloud exactly once, in order per
    compartment; every lock pulse was one the journey authorised; no event stored twice."""
    truth = truth_door_moves(sim)
    # A short random walk may open no door at all (reservations, cancels and wrong codes
    # only): then nothing may have moved. Otherwise an empty truth means the check is blind.
    assert truth or not authorised, "the journey authorised lock pulses but moved no door"
    with contextlib.suppress(AssertionError):  # the assertion below says what differs
        wait_until(lambda: cloud_door_moves(engine, locker_id) == truth, STEP_S, "the cloud")
    assert cloud_door_moves(engine, locker_id) == truth
    pulses = Counter(COMPARTMENT_OF[(e.board, e.channel)] for e in sim.truth.events("lock_pulse"))
    assert pulses == authorised
    with Session(engine) as s:
        rows = s.exec(select(LockerEventRecord)).all()
    assert len({r.event_id for r in rows}) == len(rows)
    assert not [r for r in rows if r.outcome == "pending"], "events left held back"
    assert not [r for r in rows if r.outcome.startswith(("ignored", "refused"))], [
        (r.seq, r.type, r.outcome) for r in rows if r.outcome not in ("applied", "stored")
    ]
