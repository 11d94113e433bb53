"""The dispatcher with the real twilio library against a local fake Twilio server."""

import threading
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from cloud_api.sms.dispatcher import SmsDispatcher
from cloud_api.sms.models import SmsMessage, as_utc
from cloud_api.sms.providers import TwilioProvider
from tests.cloud_api.sms.conftest import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, MASTER
from tests.cloud_api.sms.fake_twilio import Answer
from tests.cloud_api.sms.helpers import TO, add_pickup, expected_code, row, rows
from tests.support.waiting import free_port

CALLBACK = "https://xinbao.example.cn/api/v1/sms/twilio/status"


def _dispatcher(engine, provider, clock, **kwargs) -> SmsDispatcher:
    options = dict(
        master_secret=MASTER,
        digits=8,
        max_attempts=3,
        backoff_base_seconds=30,
        backoff_max_seconds=600,
        status_callback_url=CALLBACK,
        clock=clock,
    )
    options.update(kwargs)
    return SmsDispatcher(engine, provider, **options)


def test_sends_through_twilio_and_records_the_sid(engine, fake_twilio, twilio_provider, clock):
    message_id = add_pickup(engine)
    assert _dispatcher(engine, twilio_provider, clock).run_once() == 1

    [sent] = fake_twilio.creates()
    assert sent.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert sent.auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert sent.form["To"] == TO and sent.form["From"] == FROM_NUMBER
    code = expected_code(MASTER)
    assert f"取件码{code}" in sent.form["Body"] and f"Pickup code {code}" in sent.form["Body"]
    assert sent.form["StatusCallback"] == f"{CALLBACK}?message_id={message_id}"

    stored = row(engine, message_id)
    assert stored.status == "sent" and stored.attempts == 1
    assert stored.provider == "twilio"
    assert stored.provider_sid == fake_twilio.messages[0]["sid"]
    assert stored.sent_at is not None and stored.claimed_until is None
    # Nothing more is due: a second pass sends nothing.
    assert _dispatcher(engine, twilio_provider, clock).run_once() == 0
    assert len(fake_twilio.creates()) == 1


def test_the_code_is_in_no_column(engine, fake_twilio, twilio_provider, clock):
    message_id = add_pickup(engine, counter=12345)
    _dispatcher(engine, twilio_provider, clock).run_once()
    code = expected_code(MASTER, counter=12345)
    assert code in fake_twilio.creates()[0].form["Body"]
    with Session(engine) as session:
        raw = session.execute(
            SmsMessage.__table__.select().where(SmsMessage.__table__.c.id == message_id)
        ).one()
    assert all(code not in str(value) for value in raw)


def test_refusal_of_one_message_makes_it_failed_at_once(
    engine, fake_twilio, twilio_provider, clock
):
    fake_twilio.script.append(Answer(400, 21211, "The 'To' number is not a valid phone number."))
    message_id = add_pickup(engine)
    _dispatcher(engine, twilio_provider, clock).run_once()
    stored = row(engine, message_id)
    assert stored.status == "failed" and stored.attempts == 1 and stored.failures == 1
    assert "21211" in stored.last_error
    clock.advance(86400)
    assert _dispatcher(engine, twilio_provider, clock).run_once() == 0
    assert len(fake_twilio.creates()) == 1


def test_temporary_errors_back_off_then_succeed(engine, fake_twilio, twilio_provider, clock):
    fake_twilio.script += [
        Answer(503, 20500, "Service unavailable"),
        Answer(429, 20429, "Too many"),
    ]
    message_id = add_pickup(engine)
    dispatcher = _dispatcher(engine, twilio_provider, clock)

    dispatcher.run_once()
    first = row(engine, message_id)
    assert first.status == "pending" and first.attempts == 1 and "503" in first.last_error
    delay = (as_utc(first.next_attempt_at) - clock.now).total_seconds()
    assert 27 <= delay <= 33  # 30 s base, +-10 % jitter

    assert dispatcher.run_once() == 0  # not due yet
    clock.advance(delay + 1)
    dispatcher.run_once()
    second = row(engine, message_id)
    assert second.status == "pending" and second.attempts == 2 and "429" in second.last_error
    delay = (as_utc(second.next_attempt_at) - clock.now).total_seconds()
    assert 54 <= delay <= 66  # doubled

    clock.advance(delay + 1)
    dispatcher.run_once()
    third = row(engine, message_id)
    assert third.status == "sent" and third.attempts == 3 and third.last_error is None
    assert len(fake_twilio.creates()) == 3
    # Retries looked for an earlier accepted copy before sending again.
    assert sum(r.method == "GET" for r in fake_twilio.requests) == 2


def test_dead_after_max_counted_failures(engine, fake_twilio, twilio_provider, clock):
    # A garbled answer may be this message's doing: it counts.
    fake_twilio.script += [Answer(201, raw="<html>proxy error</html>")] * 3
    message_id = add_pickup(engine)
    dispatcher = _dispatcher(engine, twilio_provider, clock)
    for _ in range(5):
        dispatcher.run_once()
        clock.advance(3600)
    stored = row(engine, message_id)
    assert stored.status == "dead" and stored.attempts == 3 and stored.failures == 3
    assert "gave up after 3 failed attempts" in stored.last_error
    assert len(fake_twilio.creates()) == 3


OUTAGE = [
    Answer(500, 20500, "Internal error"),
    Answer(503, 20503, "Service unavailable"),
    Answer(401, 20003, "Authenticate"),
    Answer(403, 20003, "Forbidden: wrong credentials"),
    Answer(429, 20429, "Too many requests"),
]


def test_a_long_outage_kills_no_sms(engine, fake_twilio, twilio_provider, clock):
    """Twice max_attempts rounds of provider-wide failures: nothing is counted, the back-off
    grows to its cap and stays there, and the message goes out when Twilio is back."""
    fake_twilio.script += OUTAGE * 2
    message_id = add_pickup(engine)
    dispatcher = _dispatcher(engine, twilio_provider, clock)
    delays = []
    for _ in OUTAGE * 2:
        assert dispatcher.run_once() == 1
        stored = row(engine, message_id)
        assert stored.status == "pending" and stored.failures == 0, stored
        assert stored.last_error.startswith("provider unavailable")
        delays.append((as_utc(stored.next_attempt_at) - clock.now).total_seconds())
        clock.advance(delays[-1] + 1)
    assert 27 <= delays[0] <= 33 and 54 <= delays[1] <= 66  # 30 s, doubled ...
    assert all(540 <= d <= 660 for d in delays[5:])  # ... capped at backoff_max (600 s)
    dispatcher.run_once()
    stored = row(engine, message_id)
    assert stored.status == "sent" and stored.failures == 0 and stored.attempts == 11


def test_unreachable_provider_is_an_outage(engine, clock):
    """Connection refused (nothing listens): uncounted, however often."""
    provider = TwilioProvider(
        ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, api_base=f"http://127.0.0.1:{free_port()}"
    )
    try:
        message_id = add_pickup(engine)
        dispatcher = _dispatcher(engine, provider, clock)
        for _ in range(6):
            assert dispatcher.run_once() == 1
            clock.advance(3600)
    finally:
        provider.close()
    stored = row(engine, message_id)
    assert stored.status == "pending" and stored.attempts == 6 and stored.failures == 0
    assert "Connection refused" in stored.last_error


def test_a_lease_that_runs_out_counts(engine, fake_twilio, twilio_provider, clock):
    """A message whose sender dies every time (the lease runs out) ends dead, not in a loop."""
    message_id = add_pickup(engine)
    dispatcher = _dispatcher(engine, twilio_provider, clock, claim_lease_seconds=120)
    for _ in range(3):
        assert dispatcher.claim(10) == [message_id]  # ... and the process dies
        clock.advance(121)
    assert row(engine, message_id).failures == 2  # the first claim was not a take-over
    dispatcher.run_once()  # the third take-over reaches the limit
    stored = row(engine, message_id)
    assert stored.status == "dead" and stored.failures == 3
    assert fake_twilio.creates() == []


def test_lost_reply_is_not_sent_twice(engine, fake_twilio, twilio_provider, clock):
    # Twilio accepted the message but we saw a 502 (a proxy lost the answer).
    fake_twilio.script.append(Answer(502, None, "Bad gateway", accept_anyway=True))
    message_id = add_pickup(engine)
    dispatcher = _dispatcher(engine, twilio_provider, clock)
    dispatcher.run_once()
    assert row(engine, message_id).status == "pending"
    clock.advance(3600)
    dispatcher.run_once()
    stored = row(engine, message_id)
    assert stored.status == "sent"
    assert stored.provider_sid == fake_twilio.messages[0]["sid"]
    assert len(fake_twilio.messages) == 1 and len(fake_twilio.creates()) == 1


def test_crash_after_accept_is_reconciled_after_the_lease(
    engine, fake_twilio, twilio_provider, clock
):
    message_id = add_pickup(engine)
    dispatcher = _dispatcher(engine, twilio_provider, clock, claim_lease_seconds=120)
    # Play the crash: claim and send, but never record (the process died there).
    [claimed] = dispatcher.claim(10)
    body = dispatcher.render_body(row(engine, claimed))
    twilio_provider.send(TO, body, None)
    assert row(engine, message_id).status == "sending"

    assert dispatcher.run_once() == 0  # the lease still holds
    clock.advance(121)
    assert dispatcher.run_once() == 1
    stored = row(engine, message_id)
    assert stored.status == "sent" and stored.provider_sid == fake_twilio.messages[0]["sid"]
    assert len(fake_twilio.creates()) == 1


def test_same_body_twice_is_still_sent_twice(engine, fake_twilio, twilio_provider, clock):
    # Two messages with an identical body: reconciliation must not give the second one the
    # first one's sid.
    first = add_pickup(engine, "a")
    second = add_pickup(engine, "b")
    fake_twilio.script += [Answer(201), Answer(503, 20500, "later")]
    dispatcher = _dispatcher(engine, twilio_provider, clock)
    dispatcher.run_once()
    clock.advance(3600)
    dispatcher.run_once()
    a, b = row(engine, first), row(engine, second)
    assert a.status == b.status == "sent"
    assert a.provider_sid != b.provider_sid
    assert len(fake_twilio.messages) == 2


def test_two_dispatchers_never_send_one_message_twice(engine, fake_twilio, clock):
    ids = [add_pickup(engine, f"k{i}", counter=i) for i in range(30)]
    providers = [
        TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, api_base=fake_twilio.base)
        for _ in range(3)
    ]
    start = threading.Barrier(len(providers))
    errors = []

    def work(provider):
        dispatcher = _dispatcher(engine, provider, clock)
        start.wait()
        try:
            while dispatcher.run_once(limit=4):
                pass
        except Exception as err:  # noqa: BLE001 - reported to the test thread below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(p,)) for p in providers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for p in providers:
            p.close()
    assert not errors
    bodies = [r.form["Body"] for r in fake_twilio.creates()]
    assert len(bodies) == len(ids) == len(set(bodies))
    assert {r.status for r in rows(engine)} == {"sent"}


def test_without_callback_url_no_status_callback_is_sent(fake_twilio, twilio_provider):
    sid = twilio_provider.send(TO, "hello", None)
    [sent] = fake_twilio.creates()
    assert sid == fake_twilio.messages[0]["sid"]
    assert "StatusCallback" not in sent.form and sent.form["Body"] == "hello"


def test_stale_row_is_not_stolen_while_leased(engine, fake_twilio, twilio_provider, clock):
    message_id = add_pickup(engine)
    with Session(engine) as session, session.begin():
        session.execute(
            update(SmsMessage)
            .where(SmsMessage.id == message_id)
            .values(status="sending", claimed_until=clock.now + timedelta(seconds=60), attempts=1)
        )
    assert _dispatcher(engine, twilio_provider, clock).run_once() == 0
    assert fake_twilio.requests == []
