"""Both processes' /metrics on a live system: the cloud (its lifespan running the MQTT bridge),
a real Mosquitto, the real controller (child process) on the simulator over a pty. A door
forced open and shut at the cabinet moves the controller's door-event counter, then the
cloud's ingested-events counter, the locker's ingest lag histogram and the open alarms."""

import secrets

import httpx
import pytest

from tests.e2e.conftest import LOCKER_ID
from tests.support.cabinet import ControllerProcess, simulator
from tests.support.metrics import samples, value
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

TOKEN = secrets.token_urlsafe(32)


def cloud_scrape(cloud) -> dict:
    r = cloud.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return samples(r.text)


def cabinet_scrape(controller) -> dict:
    r = httpx.get(controller.kiosk + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return samples(r.text)


def ingested(found, type_: str) -> float:
    return sum(
        v
        for (name, labels), v in found.items()
        if name == "xinbao_events_ingested_total" and dict(labels)["type"] == type_
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_door_event_moves_the_cabinet_and_cloud_figures(make_cloud, db_url, broker, tmp_path):
    cloud = make_cloud(db_url, broker.url(), metrics_token=TOKEN)
    with simulator() as sim:
        controller = ControllerProcess.for_cabinet(
            tmp_path / "controller",
            locker_id=LOCKER_ID,
            locker_key=cloud.locker_key(),
            serial_port=sim.start_pty(),
            mqtt_port=broker.port,
        )
        controller.start()
        try:
            wait_until(
                lambda: value(cloud_scrape(cloud), "xinbao_lockers_online") == 1, 20, "on line"
            )
            wait_until(lambda: controller.status()["doors_settled"], 10, "the doors read")
            cloud_before, cabinet_before = cloud_scrape(cloud), cabinet_scrape(controller)

            sim.open_door(1, 1, by="forced")
            wait_until(
                lambda: (
                    value(
                        cabinet_scrape(controller),
                        "xinbao_controller_events_total",
                        type="door_forced",
                    )
                    == value(cabinet_before, "xinbao_controller_events_total", type="door_forced")
                    + 1
                ),
                10,
                "door_forced counted at the cabinet",
            )
            sim.close_door(1, 1)
            wait_until(
                lambda: (
                    ingested(cloud_scrape(cloud), "door_closed")
                    == ingested(cloud_before, "door_closed") + 1
                ),
                20,
                "door_closed ingested by the cloud",
            )
            cabinet_after, cloud_after = cabinet_scrape(controller), cloud_scrape(cloud)
        finally:
            controller.stop()

    closed = {"type": "door_closed"}
    assert value(cabinet_after, "xinbao_controller_events_total", **closed) == (
        value(cabinet_before, "xinbao_controller_events_total", **closed) + 1
    )
    assert value(
        cloud_after, "xinbao_events_ingested_total", type="door_forced", outcome="applied"
    ) == (
        value(cloud_before, "xinbao_events_ingested_total", type="door_forced", outcome="applied")
        + 1
    )
    lag = {"locker": LOCKER_ID}
    assert value(cloud_after, "xinbao_ingest_lag_seconds_count", **lag) >= (
        value(cloud_before, "xinbao_ingest_lag_seconds_count", **lag) + 2
    )
    # Every event this test made reached the cloud within the histogram's last finite bucket.
    assert value(cloud_after, "xinbao_ingest_lag_seconds_bucket", le="600.0", **lag) == value(
        cloud_after, "xinbao_ingest_lag_seconds_count", **lag
    )
    assert value(cloud_after, "xinbao_alarms_open", kind="door_forced") == 1
