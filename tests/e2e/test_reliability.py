"""Reliability of the whole chain: cloud ⇄ Mosquitto ⇄ controller ⇄ simulator over a pty.

One applicant's full journey (tests.support.journey), run straight and with one thing broken
at a time: the locker's own network cut (a proxy on the controller's path to the broker only;
the cloud stays connected), the broker restarted with events in flight, a real ``xinbao api``
process SIGKILLed, the controller SIGKILLed with a door open and right after a code was
accepted. After each, the simulator's ground truth is compared with what the cloud took in:
every door movement exactly once, and no lock pulse that was not authorised. Every test runs
on SQLite and PostgreSQL.
"""

import contextlib
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import LOCKER_ID, enrolled_staff, staff_pass
from tests.support.cabinet import ControllerProcess, simulator
from tests.support.journey import (
    STAFF_NO,
    WIRING,
    Journey,
    assert_matches_ground_truth,
    cloud_door_moves,
)
from tests.support.proxy import CuttableLink
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def sim():
    with simulator() as s:
        yield s


@pytest.fixture
def uplink(broker) -> Iterator[CuttableLink]:
    """The locker's network: the controller reaches the broker only through this."""
    link = CuttableLink(broker.port)
    yield link
    link.close()


@pytest.fixture
def start_controller(tmp_path, sim, uplink):
    started: list[ControllerProcess] = []

    def start(cloud) -> ControllerProcess:
        ctl = ControllerProcess.for_cabinet(
            tmp_path / "controller",
            locker_id=LOCKER_ID,
            locker_key=cloud.locker_key(),
            serial_port=sim.start_pty(),
            mqtt_port=uplink.port,
        )
        ctl.start()
        started.append(ctl)
        return ctl

    yield start
    for ctl in started:
        ctl.stop()


@pytest.fixture
def journey(cloud, sim, start_controller) -> Journey:
    pass_ = staff_pass(cloud, STAFF_NO, enrolled_staff(cloud.engine, STAFF_NO))
    return Journey(cloud, start_controller(cloud), sim, pass_, "XA-REL-0001")


def _pass(cloud) -> str:
    return staff_pass(cloud, STAFF_NO, enrolled_staff(cloud.engine, STAFF_NO))


def check(journey: Journey) -> None:
    assert_matches_ground_truth(journey.sim, journey.cloud.engine, LOCKER_ID, journey.authorised)


def offline(controller: ControllerProcess) -> None:
    wait_until(lambda: not controller.status()["online"], 30, "the controller off line")


def test_full_journey(journey):
    journey.run()
    check(journey)
    # The cabinet ends as it began: every door shut, nothing waiting in the outbox.
    status = journey.controller.status()
    assert not any(status["doors"].values()) and status["outbox_depth"] == 0


def test_the_lockers_network_down_during_drop_off_and_pickup(journey, uplink):
    """Only the locker's path is cut: the cloud keeps its broker connection throughout. The
    drop-off (reservation synced before the cut) and the staff's collect happen off line, so
    their ``deposited`` and ``collected`` arrive together; then the pickup is off line too."""
    cloud, controller = journey.cloud, journey.controller
    journey.ready()
    journey.reserve_dropoff()
    code = journey.read_code()
    uplink.cut()
    offline(controller)
    journey.type_code(code)
    journey.put_in_and_close()
    journey.staff_collect_at_cabinet()  # staff number + staff pass checked off line
    assert controller.status()["outbox_depth"] > 0  # held back, not lost
    assert journey.state(journey.dropoff) == "reserved"
    assert cloud.bridge.connected.is_set()  # the cloud never lost its broker
    uplink.restore()
    journey.handover_reaches(journey.dropoff, "collected", record="documents_received")

    journey.approve_and_load()
    code = journey.read_code()
    uplink.cut()
    offline(controller)
    journey.type_code(code)  # the pickup code is checked off line
    journey.take_out_and_close()
    assert journey.state(journey.pickup) == "deposited"
    uplink.restore()
    journey.collected_in_cloud()
    check(journey)


def restart_broker(broker, cloud, uplink: CuttableLink) -> None:
    """Restart the broker; the locker (which reconnects within a second) gets its link back
    only once the cloud has subscribed again. The other order is the test after the next."""
    broker.stop()
    uplink.cut()
    broker.start()
    assert cloud.bridge.wait_connected(30), "the bridge did not reconnect"
    uplink.restore()


def test_broker_restarted_with_events_in_flight(journey, broker, uplink):
    journey.ready()
    journey.reserve_dropoff()
    journey.type_code(journey.read_code())
    journey.sim.put_item(*WIRING[journey.compartment])
    journey.sim.close_door(*WIRING[journey.compartment])
    # Right after the door closed: door_closed, item_detected, deposited on their way.
    restart_broker(broker, journey.cloud, uplink)
    journey.wait_door(False)
    journey.handover_reaches(journey.dropoff, "deposited", record="documents_in_locker")
    journey.staff_collect()
    journey.approve_and_load()

    journey.type_code(journey.read_code())
    journey.sim.take_item(*WIRING[journey.compartment])
    journey.sim.close_door(*WIRING[journey.compartment])
    restart_broker(broker, journey.cloud, uplink)
    journey.wait_door(False)
    journey.collected_in_cloud()
    check(journey)


def test_broker_restarted_and_the_locker_back_before_the_cloud(
    make_cloud, db_url, broker, sim, start_controller
):
    """Mosquitto 2.0 does not keep shared subscriptions ($share/...) across its own restart:
    a locker back before the cloud would have its outbox acknowledged and dropped by the
    broker. The controller holds its outbox after each reconnect until the cloud has spoken
    to it (the full sync it sends on 'online'), so nothing is lost in this order either."""
    cloud_link = CuttableLink(broker.port)
    try:
        cloud = make_cloud(db_url, f"mqtt://127.0.0.1:{cloud_link.port}")
        controller = start_controller(cloud)
        journey = Journey(cloud, controller, sim, _pass(cloud), "XA-3")
        journey.ready()
        journey.reserve_dropoff()
        journey.type_code(journey.read_code())
        journey.sim.put_item(*WIRING[journey.compartment])
        journey.sim.close_door(*WIRING[journey.compartment])
        broker.stop()
        cloud_link.cut()  # the cloud comes back last
        broker.start()
        journey.wait_door(False)
        wait_until(lambda: journey.controller.status()["online"], 30, "the locker back")
        with contextlib.suppress(AssertionError):  # the outbox may rightly hold them back
            wait_until(lambda: journey.controller.status()["outbox_depth"] == 0, 5, "")
        cloud_link.restore()
        assert cloud.bridge.wait_connected(30), "the bridge did not reconnect"
        journey.handover_reaches(journey.dropoff, "deposited", record="documents_in_locker")
        check(journey)
    finally:
        cloud_link.close()


def test_api_process_killed_mid_journey(api_processes, db_url, sim, start_controller):
    """A real ``xinbao api`` (the only API process) is SIGKILLed as the applicant closes the
    door; the process started after it, with the same MQTT client id, takes over."""
    cloud, api = api_processes(db_url)
    controller = start_controller(cloud)
    journey = Journey(cloud, controller, sim, _pass(cloud), "XA-REL-2")
    journey.ready()
    journey.drop_off()
    journey.staff_collect()
    journey.approve_and_load()
    journey.type_code(journey.read_code())
    journey.sim.take_item(*WIRING[journey.compartment])
    journey.sim.close_door(*WIRING[journey.compartment])
    api.kill()
    journey.wait_door(False)
    api.start()
    journey.collected_in_cloud()
    check(journey)


def test_controller_killed_with_a_door_open(journey):
    journey.ready()
    journey.drop_off()
    journey.staff_collect()
    journey.approve_and_load()
    journey.type_code(journey.read_code())
    number = journey.compartment
    wait_until(
        lambda: cloud_door_moves(journey.cloud.engine, LOCKER_ID)[number].count("opened") == 2,
        30,
        "the open reported",
    )
    journey.controller.kill()
    # The applicant takes the licence and shuts the door while nothing watches the cabinet.
    journey.sim.take_item(*WIRING[number])
    journey.sim.close_door(*WIRING[number])
    assert journey.state(journey.pickup) == "deposited"
    journey.controller.start()
    journey.collected_in_cloud()
    check(journey)
    assert journey.controller.status()["doors"][str(number)] is False


def test_controller_killed_right_after_a_code_is_accepted(journey):
    """SIGKILL as the lock pulses, before the controller reported the door open (or even
    answered the kiosk): the restarted controller works out what happened from the door."""
    journey.ready()
    journey.drop_off()
    journey.staff_collect()
    journey.approve_and_load()
    code = journey.read_code()
    number = journey.compartment
    since = journey.sim.truth.last_seq
    typed = threading.Thread(target=_type_and_forget, args=(journey.controller, code))
    typed.start()
    wait_until(lambda: journey.sim.truth.events("lock_pulse", since), 30, "the lock pulse")
    journey.controller.kill()
    typed.join(30)
    journey.authorised[number] += 1  # the code was good: this pulse was authorised
    journey.sim.take_item(*WIRING[number])
    journey.sim.close_door(*WIRING[number])
    journey.controller.start()
    journey.collected_in_cloud()
    check(journey)


def _type_and_forget(controller: ControllerProcess, code: str) -> None:
    # The answer may never come: the controller is killed while it opens the door.
    with contextlib.suppress(httpx.HTTPError):
        controller.code(code)
