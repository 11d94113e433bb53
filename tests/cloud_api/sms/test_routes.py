"""The Twilio status callback and the staff listings, through FastAPI's TestClient."""

from urllib.parse import urlencode

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from cloud_api.sms.config import SmsSettings
from cloud_api.sms.dispatcher import SmsDispatcher
from cloud_api.sms.providers import ConsoleProvider
from cloud_api.sms.routes import SmsContext, mount_sms
from tests.cloud_api.sms.conftest import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, MASTER
from tests.cloud_api.sms.helpers import TO, add_pickup, expected_code, row

PUBLIC = "https://xinbao.example.cn/api/v1/sms/twilio/status"
PATH = "/api/v1/sms/twilio/status"


def _staff(x_staff: str | None = Header(default=None)) -> None:
    # Stands in for the core's CurrentStaff dependency.
    if x_staff != "yes":
        raise HTTPException(401, "staff only")


def _settings(provider: str) -> SmsSettings:
    extra = {}
    if provider == "twilio":
        extra = dict(
            twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from=FROM_NUMBER
        )
    return SmsSettings(provider=provider, status_callback_url=PUBLIC, **extra)


@pytest.fixture
def app_with(engine):
    clients = []

    def make(provider) -> TestClient:
        kind = "console" if isinstance(provider, ConsoleProvider) else "twilio"
        app = FastAPI()
        mount_sms(
            app,
            SmsContext(engine, _settings(kind), provider),
            staff_dependencies=[Depends(_staff)],
            admin_dependencies=[Depends(_staff)],
        )
        client = TestClient(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def sent_message(engine, twilio_provider, clock):
    message_id = add_pickup(engine)
    dispatcher = SmsDispatcher(
        engine, twilio_provider, master_secret=MASTER, status_callback_url=PUBLIC, clock=clock
    )
    dispatcher.run_once()
    return row(engine, message_id)


def _signed_post(client, form: dict, *, query: str = "", token: str = AUTH_TOKEN, signature=None):
    url = PUBLIC + (f"?{query}" if query else "")
    if signature is None:
        signature = RequestValidator(token).compute_signature(url, form)
    return client.post(
        PATH + (f"?{query}" if query else ""),
        content=urlencode(form),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )


def _report(message, status: str, **extra) -> dict:
    return {
        "MessageSid": message.provider_sid,
        "MessageStatus": status,
        "AccountSid": ACCOUNT_SID,
        **extra,
    }


def test_signed_delivery_report_is_recorded(engine, app_with, twilio_provider, sent_message):
    client = app_with(twilio_provider)
    query = f"message_id={sent_message.id}"
    answer = _signed_post(client, _report(sent_message, "delivered"), query=query)
    assert answer.status_code == 204, answer.text
    assert row(engine, sent_message.id).status == "delivered"
    # A late "sent" report does not take a final state back.
    assert _signed_post(client, _report(sent_message, "sent"), query=query).status_code == 204
    assert row(engine, sent_message.id).status == "delivered"


def test_undelivered_keeps_the_error_code(engine, app_with, twilio_provider, sent_message):
    client = app_with(twilio_provider)
    form = _report(sent_message, "undelivered", ErrorCode="30003")
    assert _signed_post(client, form).status_code == 204
    stored = row(engine, sent_message.id)
    assert stored.status == "undelivered" and "30003" in stored.last_error


@pytest.mark.parametrize("signature", ["", "bm9wZQ==", None])
def test_bad_or_missing_signature_is_403_and_changes_nothing(
    engine, app_with, twilio_provider, sent_message, signature
):
    client = app_with(twilio_provider)
    if signature is None:  # signed with another account's token
        answer = _signed_post(client, _report(sent_message, "delivered"), token="someone-else")
    else:
        answer = _signed_post(client, _report(sent_message, "delivered"), signature=signature)
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["status"] == 403 and "Signature" in answer.json()["detail"]
    assert row(engine, sent_message.id).status == "sent"


def test_signature_over_a_different_form_is_refused(
    engine, app_with, twilio_provider, sent_message
):
    client = app_with(twilio_provider)
    good = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC, _report(sent_message, "sent"))
    answer = _signed_post(client, _report(sent_message, "failed"), signature=good)
    assert answer.status_code == 403
    assert row(engine, sent_message.id).status == "sent"


def test_unknown_sid_is_404(app_with, twilio_provider, sent_message):
    client = app_with(twilio_provider)
    form = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered"}
    answer = _signed_post(client, form)
    assert answer.status_code == 404 and answer.json()["title"] == "Unknown message"


@pytest.mark.parametrize(
    "form, status",
    [
        ({"MessageStatus": "delivered"}, 400),
        ({"MessageSid": "SM1", "MessageStatus": "exploded"}, 400),
        ({"MessageSid": "../../etc", "MessageStatus": "delivered"}, 400),
    ],
)
def test_malformed_but_signed_form_is_4xx(
    engine, app_with, twilio_provider, sent_message, form, status
):
    client = app_with(twilio_provider)
    answer = _signed_post(client, form)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    assert row(engine, sent_message.id).status == "sent"


@pytest.mark.parametrize(
    "content, content_type, status",
    [
        (b'{"MessageSid": "SM1"}', "application/json", 415),
        (b"\xff\xfe\x00", "application/x-www-form-urlencoded", 400),
        (b"a=1&&&=", "application/x-www-form-urlencoded", 400),
        (b"x" * 70_000, "application/x-www-form-urlencoded", 413),
    ],
)
def test_unreadable_bodies_are_4xx(app_with, twilio_provider, content, content_type, status):
    client = app_with(twilio_provider)
    answer = client.post(
        PATH, content=content, headers={"Content-Type": content_type, "X-Twilio-Signature": "x"}
    )
    assert answer.status_code == status
    assert answer.json()["status"] == status


def test_report_finds_a_row_whose_sid_was_never_recorded(
    engine, app_with, fake_twilio, twilio_provider, clock
):
    # The dispatcher died after Twilio accepted the message: the row is "sending", no sid.
    message_id = add_pickup(engine)
    dispatcher = SmsDispatcher(engine, twilio_provider, master_secret=MASTER, clock=clock)
    dispatcher.claim(1)
    sid = twilio_provider.send(TO, "body", None)
    client = app_with(twilio_provider)
    form = {"MessageSid": sid, "MessageStatus": "sent"}
    assert _signed_post(client, form, query=f"message_id={message_id}").status_code == 204
    stored = row(engine, message_id)
    assert stored.status == "sent" and stored.provider_sid == sid and stored.claimed_until is None


def test_console_provider_refuses_callbacks(app_with, engine):
    client = app_with(ConsoleProvider())
    answer = client.post(
        PATH,
        content="MessageSid=SM1&MessageStatus=delivered",
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"},
    )
    assert answer.status_code == 403


def test_outbox_listing_is_for_staff_and_has_no_code(
    engine, app_with, twilio_provider, sent_message
):
    client = app_with(twilio_provider)
    assert client.get("/api/v1/sms/outbox").status_code == 401
    add_pickup(engine, "second", counter=8)
    answer = client.get("/api/v1/sms/outbox", headers={"X-Staff": "yes"})
    assert answer.status_code == 200
    listed = answer.json()
    assert [m["dedupe_key"] for m in listed] == ["second", "h1"]
    assert listed[1]["status"] == "sent" and listed[1]["provider_sid"] == sent_message.provider_sid
    assert expected_code(MASTER) not in answer.text and "body" not in listed[0]
    only_sent = client.get("/api/v1/sms/outbox?status=sent&limit=5", headers={"X-Staff": "yes"})
    assert [m["dedupe_key"] for m in only_sent.json()] == ["h1"]
    page = client.get(f"/api/v1/sms/outbox?before_id={listed[0]['id']}", headers={"X-Staff": "yes"})
    assert [m["dedupe_key"] for m in page.json()] == ["h1"]


@pytest.mark.parametrize(
    "query", ["status=lost", "limit=0", "limit=99999", "handover_id=abc", "before_id=-1"]
)
def test_outbox_bad_query_is_422(app_with, twilio_provider, query):
    client = app_with(twilio_provider)
    assert client.get(f"/api/v1/sms/outbox?{query}", headers={"X-Staff": "yes"}).status_code == 422


def test_console_inbox_shows_what_the_phone_got(engine, app_with, clock):
    console = ConsoleProvider(capacity=10)
    add_pickup(engine)
    SmsDispatcher(engine, console, master_secret=MASTER, clock=clock).run_once()
    client = app_with(console)
    assert client.get("/api/v1/sms/console-inbox").status_code == 401
    answer = client.get(
        f"/api/v1/sms/console-inbox?to={TO.replace('+', '%2B')}", headers={"X-Staff": "yes"}
    )
    [sms] = answer.json()
    assert sms["to"] == TO and expected_code(MASTER) in sms["body"]
    assert (
        client.get("/api/v1/sms/console-inbox?to=%2B10000000000", headers={"X-Staff": "yes"}).json()
        == []
    )


def test_console_inbox_is_not_mounted_with_twilio(app_with, twilio_provider):
    client = app_with(twilio_provider)
    answer = client.get("/api/v1/sms/console-inbox", headers={"X-Staff": "yes"})
    assert answer.status_code == 404
    assert "/api/v1/sms/console-inbox" not in client.get("/openapi.json").json()["paths"]


def test_console_inbox_is_off_when_settings_say_twilio(engine, clock):
    """A console provider swapped in under Twilio settings still shows no inbox: the inbox
    follows the configured provider, not whatever object happens to be installed."""
    console = ConsoleProvider(capacity=10)
    add_pickup(engine)
    SmsDispatcher(engine, console, master_secret=MASTER, clock=clock).run_once()
    app = FastAPI()
    context = SmsContext(engine, _settings("console"), console)
    mount_sms(app, context, staff_dependencies=[Depends(_staff)], admin_dependencies=[])
    context.settings = _settings("twilio")
    with TestClient(app) as client:
        answer = client.get("/api/v1/sms/console-inbox", headers={"X-Staff": "yes"})
    assert answer.status_code == 404 and answer.json()["title"] == "No console inbox"


@pytest.mark.parametrize("message_id", ["²", "9" * 40, "-1", "abc"])
def test_odd_message_id_in_the_callback_url_is_a_clean_404(app_with, twilio_provider, message_id):
    client = app_with(twilio_provider)
    form = {"MessageSid": "SM" + "e" * 32, "MessageStatus": "sent"}
    answer = _signed_post(client, form, query=urlencode({"message_id": message_id}))
    assert answer.status_code == 404
