"""A drop-off deposited at a locker notifies staff: once the locker's ``deposited`` is
applied the drop-off is a notice (GET /api/v1/dashboard/notices) and a console line; a
pickup's is not; the notice lasts until staff collect it (real Mosquitto, fake locker).
The dashboard's badge and bar are driven in chromium in test_dashboard_live.py."""

import logging

import pytest

from tests.e2e.conftest import LOCKER_ID
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


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
    assert notices(cloud) == {"waiting": 0, "dropoffs": []}  # reserved is not news yet

    with caplog.at_level(logging.WARNING, logger="xinbao.notices"):
        fake_locker.event("deposited", load["compartment_number"], handover_id=load["id"])
        n = drop["compartment_number"]
        fake_locker.event("deposited", n, handover_id=drop["id"], by="applicant")
        found = wait_until(lambda: notices(cloud)["dropoffs"], 10, "the notice")
    [notice] = found
    assert (notice["handover_id"], notice["locker_id"], notice["compartment"]) == (
        drop["id"],
        LOCKER_ID,
        n,
    )
    assert (notice["application_number"], notice["applicant_name"]) == ("XA-NTC-1", "王小明")
    assert notice["deposited_at"]
    assert notices(cloud)["waiting"] == 1
    assert [r.getMessage() for r in caplog.records].count(
        f"drop-off waiting for staff: handover {drop['id']} at locker {LOCKER_ID} "
        f"compartment {n} (新投递材料待收取 new documents to collect)"
    ) == 1

    fake_locker.event("collected", n, handover_id=drop["id"], by="clerk1")
    wait_until(lambda: notices(cloud) == {"waiting": 0, "dropoffs": []}, 10, "collected")


def test_notices_need_staff_and_a_sane_limit(cloud):
    assert cloud.client.get("/api/v1/dashboard/notices").status_code == 401
    r = cloud.client.get("/api/v1/dashboard/notices", headers=cloud.integrator)
    assert r.status_code == 403
    for bad in ({"limit": 0}, {"limit": 201}, {"limit": "x"}):
        assert cloud.get("/api/v1/dashboard/notices", params=bad).status_code == 422, bad
