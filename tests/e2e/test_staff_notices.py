"""A drop-off deposited at a locker notifies staff: the applied ``deposited`` event becomes a
notice (GET /api/v1/dashboard/notices) and a console line, a pickup's does not, and the
notice follows the drop-off until staff collect it (real Mosquitto, fake locker)."""

import logging

from tests.e2e.conftest import LOCKER_ID
from tests.support.waiting import wait_until


def notices(cloud, **params) -> dict:
    r = cloud.get("/api/v1/dashboard/notices", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_deposited_dropoff_is_a_notice_until_collected(cloud, fake_locker, caplog):
    cloud.record("XA-NTC-1")
    drop = cloud.dropoff("XA-NTC-1", size="S")
    cloud.record("XA-NTC-2", status="approved")
    load = cloud.post(
        "/api/v1/staff/loads",
        {"application_number": "XA-NTC-2", "locker_id": LOCKER_ID, "size": "L"},
    ).json()
    assert notices(cloud) == {"waiting": 0, "latest": 0, "notices": []}

    with caplog.at_level(logging.WARNING, logger="xinbao.notices"):
        fake_locker.event("deposited", load["compartment_number"], handover_id=load["id"])
        n = drop["compartment_number"]
        fake_locker.event("deposited", n, handover_id=drop["id"], by="applicant")
        found = wait_until(lambda: notices(cloud)["notices"], 10, "the notice")
    [notice] = found
    assert (notice["handover_id"], notice["locker_id"], notice["compartment"]) == (
        drop["id"],
        LOCKER_ID,
        n,
    )
    assert (notice["application_number"], notice["applicant_name"]) == ("XA-NTC-1", "王小明")
    assert notice["state"] == "deposited"
    assert notices(cloud)["waiting"] == 1
    assert [r.getMessage() for r in caplog.records].count(
        f"drop-off waiting for staff: handover {drop['id']} at locker {LOCKER_ID} "
        f"compartment {n} (新投递材料待收取 new documents to collect)"
    ) == 1

    # After the cursor: nothing new. Collected: the notice says so and nothing waits.
    assert notices(cloud, after=notice["id"])["notices"] == []
    assert notices(cloud, after=notice["id"])["latest"] == notice["id"]
    fake_locker.event("collected", n, handover_id=drop["id"], by="clerk1")
    wait_until(lambda: notices(cloud)["waiting"] == 0, 10, "collected")
    assert notices(cloud)["notices"][0]["state"] == "collected"


def test_notices_need_staff_and_a_sane_cursor(cloud):
    assert cloud.client.get("/api/v1/dashboard/notices").status_code == 401
    r = cloud.client.get("/api/v1/dashboard/notices", headers=cloud.integrator)
    assert r.status_code == 403
    for bad in ({"after": -1}, {"after": "x"}, {"limit": 0}, {"limit": 201}, {"after": 2**64}):
        assert cloud.get("/api/v1/dashboard/notices", params=bad).status_code == 422, bad
