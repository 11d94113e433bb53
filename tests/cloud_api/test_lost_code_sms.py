"""The new code reaches the applicant through the real twilio library against the fake
Twilio server (issue 13): after a lost-code request at the kiosk and after a staff resend.
Only the newest code goes out; a request whose details do not match sends nothing."""

import re

import pytest

from cloud_api.main import create_app
from tests.cloud_api.conftest import reserve_dropoff
from tests.cloud_api.helpers import code_of
from tests.cloud_api.lost_code_helpers import cabinet, handover, sms
from tests.cloud_api.sms.conftest import twilio_settings


@pytest.fixture
def app(settings, clock, fake_twilio):
    """Replaces conftest's app: Twilio settings, so create_app builds the Twilio provider."""
    return create_app(settings, sms_settings=twilio_settings(fake_twilio), clock=clock)


def _bodies(fake_twilio) -> list[tuple[str, str]]:
    return [(r.form["To"], r.form["Body"]) for r in fake_twilio.creates()]


def _shows(body: str, code: str) -> bool:
    return re.search(rf"(?<!\d){code}(?!\d)", body) is not None


def test_the_new_code_goes_out_by_twilio_and_the_queued_old_one_never(
    world, app, engine, clock, settings, fake_twilio
):
    h = reserve_dropoff(world, "XA-SMS-L1")
    old = code_of(settings, world.locker_id, h["code_counter"])
    kiosk = cabinet(app, engine, clock, world.locker_id)
    kiosk.ask("XA-SMS-L1", "8000")  # before the first SMS went: that one is now void
    new = code_of(settings, world.locker_id, handover(engine, h["id"]).code_counter)
    assert app.state.dispatcher.run_once() == 2

    [(to, body)] = _bodies(fake_twilio)
    assert to == "+8613800138000"
    assert _shows(body, new) and not _shows(body, old)
    assert "原码已失效" in body and "old one void" in body
    assert [m.status for m in sms(engine, h["id"])] == ["superseded", "sent"]


def test_a_staff_resend_goes_out_by_twilio_and_a_mismatch_sends_nothing(
    world, app, engine, clock, settings, fake_twilio
):
    h = reserve_dropoff(world, "XA-SMS-L2")
    app.state.dispatcher.run_once()
    assert len(fake_twilio.creates()) == 1
    kiosk = cabinet(app, engine, clock, world.locker_id)
    kiosk.ask("XA-SMS-L2", "1234")
    assert app.state.dispatcher.run_once() == 0 and len(fake_twilio.creates()) == 1

    clock.advance(minutes=3)
    r = world.client.post(
        "/api/v1/staff/records/XA-SMS-L2/resend-code", headers=world.admin_headers
    )
    assert r.status_code == 200, r.text
    assert app.state.dispatcher.run_once() == 1
    new = code_of(settings, world.locker_id, r.json()["handovers"][0]["code_counter"])
    to, body = _bodies(fake_twilio)[-1]
    assert to == "+8613800138000" and _shows(body, new) and body.startswith("【信包箱】")
    templates = [(m.template, m.status) for m in sms(engine, h["id"])]
    assert templates == [("dropoff_code", "sent"), ("dropoff_code_new", "sent")]
