"""The drop-off code travels through the mounted SMS outbox: staff see the queued message
(without the code), the dispatcher sends it, and the code in the SMS body opens the locker.

Regression: on SQLite the staff log-in dependency used to keep its transaction (and with it
the write lock, see core/db.py) open for the whole request, so the SMS routes' own session
waited for the busy timeout and the outbox listing failed with a 500.
"""

import re

from cloud_api.models.staff import Role
from cloud_api.services import bootstrap
from tests.cloud_api.conftest import login, make_record
from tests.cloud_api.helpers import assert_problem, code_of


def test_dropoff_code_goes_out_by_sms_and_opens_the_door(world, app, settings):
    c = world.client
    make_record(c, world.integrator_headers, number="XA-SMS-1")
    r = c.post(
        "/api/v1/handovers/dropoff",
        headers=world.integrator_headers,
        json={"application_number": "XA-SMS-1", "size": "M", "locker_id": world.locker_id},
    )
    assert r.status_code == 201, r.text
    handover = r.json()
    code = code_of(settings, world.locker_id, handover["code_counter"])

    outbox = c.get(
        "/api/v1/sms/outbox",
        params={"handover_id": handover["id"]},
        headers=world.admin_headers,
    )
    assert outbox.status_code == 200, outbox.text
    queued = outbox.json()
    assert [(m["template"], m["status"]) for m in queued] == [("dropoff_code", "pending")]
    assert code not in outbox.text  # the outbox never holds the code

    assert app.state.dispatcher.run_once() == 1
    inbox = c.get(
        "/api/v1/sms/console-inbox", params={"to": "+8613800138000"}, headers=world.admin_headers
    )
    assert inbox.status_code == 200, inbox.text
    [sms] = inbox.json()
    assert re.search(rf"(?<!\d){code}(?!\d)", sms["body"]), sms["body"]

    check = c.post(
        f"/api/v1/lockers/{world.locker_id}/codes/check",
        headers=world.locker_headers,
        json={"code": code},
    )
    assert check.status_code == 200, check.text
    assert check.json()["accepted"] is True
    assert check.json()["handover_id"] == handover["id"]


def test_outbox_needs_a_staff_login(world):
    c = world.client
    r = c.get("/api/v1/sms/outbox", headers=world.integrator_headers)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert c.get("/api/v1/sms/outbox").status_code == 401


def test_console_inbox_is_for_administrators_only(world, app, engine):
    """The attack: a staff member (or an integrator) reads the console inbox and gets every
    applicant's code. Only an administrator reads it; the others get 403 and no code."""
    make_record(world.client, world.integrator_headers, number="XA-SMS-2")
    r = world.client.post(
        "/api/v1/handovers/dropoff",
        headers=world.integrator_headers,
        json={"application_number": "XA-SMS-2", "size": "M", "locker_id": world.locker_id},
    )
    assert r.status_code == 201, r.text
    assert app.state.dispatcher.run_once() == 1
    bootstrap.create_staff(engine, "clerk", "clerk-password-1", Role.staff)
    clerk = login(world.client, "clerk", "clerk-password-1")
    for headers in (clerk, world.integrator_headers):
        refused = world.client.get("/api/v1/sms/console-inbox", headers=headers)
        assert_problem(refused, 403)
        assert "body" not in refused.text
    assert world.client.get("/api/v1/sms/console-inbox").status_code == 401
    allowed = world.client.get("/api/v1/sms/console-inbox", headers=world.admin_headers)
    assert allowed.status_code == 200 and len(allowed.json()) == 1
