"""The SMS outbox inside create_app on the alembic schema, with the real twilio library
against the fake Twilio server: the signed status callback, per-message refusals, and staff
requeueing a failed message. Both databases."""

from urllib.parse import urlencode

import pytest
from sqlmodel import Session, select
from twilio.request_validator import RequestValidator

from cloud_api.main import create_app
from cloud_api.models.audit import AuditEntry
from tests.cloud_api.conftest import reserve_dropoff
from tests.cloud_api.helpers import assert_problem
from tests.cloud_api.sms.conftest import ACCOUNT_SID, AUTH_TOKEN, twilio_settings
from tests.cloud_api.sms.fake_twilio import Answer

PUBLIC = "https://xinbao.example.cn/api/v1/sms/twilio/status"


@pytest.fixture
def app(settings, clock, fake_twilio):
    """Replaces conftest's app: Twilio settings, so create_app builds the Twilio provider."""
    sms = twilio_settings(fake_twilio, status_callback_url=PUBLIC)
    return create_app(settings, sms_settings=sms, clock=clock)


def _message(world, handover_id) -> dict:
    r = world.client.get(
        "/api/v1/sms/outbox", params={"handover_id": handover_id}, headers=world.admin_headers
    )
    assert r.status_code == 200, r.text
    [message] = r.json()
    return message


def _report(world, message: dict, status: str, *, sid=None, signature=None, **extra):
    form = {
        "MessageSid": sid or message["provider_sid"],
        "MessageStatus": status,
        "AccountSid": ACCOUNT_SID,
        **extra,
    }
    query = f"message_id={message['id']}"
    if signature is None:
        signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{PUBLIC}?{query}", form)
    return world.client.post(
        f"/api/v1/sms/twilio/status?{query}",
        content=urlencode(form),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )


def _requeue(world, message_id, headers=None):
    return world.client.post(
        f"/api/v1/sms/outbox/{message_id}/requeue", headers=headers or world.admin_headers
    )


def test_signed_delivery_report_through_the_app(world, app, fake_twilio):
    h = reserve_dropoff(world)
    assert app.state.dispatcher.run_once() == 1
    [sent] = fake_twilio.creates()
    sent_message = _message(world, h["id"])
    assert sent_message["status"] == "sent"
    assert sent_message["provider_sid"] == fake_twilio.messages[0]["sid"]
    assert sent.form["StatusCallback"] == f"{PUBLIC}?message_id={sent_message['id']}"

    forged = _report(world, sent_message, "delivered", signature="bm9wZQ==")
    assert assert_problem(forged, 403)["detail"] == "missing or wrong X-Twilio-Signature"
    assert _message(world, h["id"])["status"] == "sent"
    assert _report(world, sent_message, "delivered").status_code == 204
    assert _message(world, h["id"])["status"] == "delivered"


def test_refused_number_is_failed_then_staff_requeue_it(world, app, engine, fake_twilio):
    h = reserve_dropoff(world)
    fake_twilio.script.append(Answer(400, 21614, "'To' number is not a valid mobile number"))
    app.state.dispatcher.run_once()
    failed = _message(world, h["id"])
    assert (failed["status"], failed["failures"]) == ("failed", 1)
    assert "21614" in failed["last_error"]
    assert app.state.dispatcher.run_once() == 0  # failed is final until someone acts

    r = _requeue(world, failed["id"])
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["failures"]) == ("pending", 0)
    assert app.state.dispatcher.run_once() == 1
    assert _message(world, h["id"])["status"] == "sent"
    assert len(fake_twilio.messages) == 1
    with Session(engine) as s:
        [entry] = s.exec(select(AuditEntry).where(AuditEntry.action == "sms.requeued")).all()
    assert entry.actor == "staff:admin" and entry.subject == f"sms:{failed['id']}"
    assert entry.detail["from"] == "failed" and "21614" in entry.detail["last_error"]


def test_late_report_on_a_requeued_send_is_ignored(world, app, fake_twilio):
    h = reserve_dropoff(world)
    app.state.dispatcher.run_once()
    first = _message(world, h["id"])
    assert _report(world, first, "undelivered", ErrorCode="30005").status_code == 204
    assert _requeue(world, first["id"]).status_code == 200
    # Twilio's next report on the old send arrives after the requeue: it changes nothing.
    assert _report(world, first, "failed").status_code == 204
    assert _message(world, h["id"])["status"] == "pending"
    app.state.dispatcher.run_once()
    again = _message(world, h["id"])
    assert again["status"] == "sent" and again["provider_sid"] != first["provider_sid"]
    assert len(fake_twilio.messages) == 2


def test_requeue_refusals(world, app, fake_twilio):
    h = reserve_dropoff(world)
    message = _message(world, h["id"])
    assert "still queued" in assert_problem(_requeue(world, message["id"]), 409)["detail"]
    app.state.dispatcher.run_once()
    assert "has it already" in assert_problem(_requeue(world, message["id"]), 409)["detail"]
    assert_problem(_requeue(world, 999_999), 404)
    assert_problem(_requeue(world, message["id"], headers=world.integrator_headers), 403)
    assert_problem(world.client.post(f"/api/v1/sms/outbox/{message['id']}/requeue"), 401)
    assert_problem(_requeue(world, 0), 422)


def test_a_superseded_message_cannot_be_requeued(world, app, fake_twilio):
    h = reserve_dropoff(world)
    r = world.client.post(f"/api/v1/handovers/{h['id']}/cancel", headers=world.integrator_headers)
    assert r.status_code == 200, r.text
    app.state.dispatcher.run_once()
    message = _message(world, h["id"])
    assert message["status"] == "superseded" and fake_twilio.creates() == []
    detail = assert_problem(_requeue(world, message["id"]), 409)["detail"]
    assert "resend" in detail
