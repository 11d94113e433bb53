"""A simulated cabinet whose controller knows one staff member from its first sync, and the
two things every test driving it at the kiosk does: log the staff member in, wait for a door.

Fixtures, for a test module to import: ``sim`` (the demo cabinet's simulator),
``staff_pass`` (the member's staff pass for the cabinet, from the dashboard API; the member is
enrolled before the controller starts), ``uplink`` (the cabinet's own network path to the
broker, which a test can cut while the broker and the cloud carry on) and ``controller``
(``xinbao controller`` through that uplink, started once the staff member is enrolled).
"""

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import LOCKER_ID, enrolled_staff
from tests.e2e.conftest import staff_pass as pass_from_dashboard
from tests.support.cabinet import ControllerProcess, simulator
from tests.support.journey import STAFF_NO
from tests.support.proxy import CuttableLink
from tests.support.waiting import wait_until


@pytest.fixture
def sim():
    with simulator() as s:
        yield s


@pytest.fixture
def staff_pass(cloud) -> str:
    # Enrolled before the controller starts: the first sync carries the staff list.
    return pass_from_dashboard(cloud, STAFF_NO, enrolled_staff(cloud.engine, STAFF_NO))


@pytest.fixture
def uplink(broker) -> Iterator[CuttableLink]:
    link = CuttableLink(broker.port)
    yield link
    link.close()


@pytest.fixture
def controller(tmp_path, sim, cloud, uplink, staff_pass) -> Iterator[ControllerProcess]:
    """The cabinet's controller on ``sim``, reaching the broker through ``uplink``; started
    once the staff member is enrolled, so the first staff list it gets names them."""
    ctl = ControllerProcess.for_cabinet(
        tmp_path / "controller",
        locker_id=LOCKER_ID,
        locker_key=cloud.locker_key(),
        serial_port=sim.start_pty(),
        mqtt_port=uplink.port,
    )
    ctl.start()
    yield ctl
    ctl.stop()


def staff_login(controller: ControllerProcess, staff_pass: str) -> str:
    """The staff member's session token at the cabinet, once its staff list names them."""

    def logged_in():
        r = controller.post("/api/staff/login", {"staff_no": STAFF_NO, "staff_pass": staff_pass})
        return r.json().get("token") if r.status_code == 200 else None

    return wait_until(logged_in, 45, "the staff log-in at the cabinet")


def wait_door(controller: ControllerProcess, number: int, is_open: bool, timeout: float) -> None:
    wait_until(
        lambda: controller.status()["doors"][str(number)] is is_open,
        timeout,
        f"door {number} {'open' if is_open else 'shut'} at the controller",
    )
