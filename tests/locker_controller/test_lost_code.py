"""Forgot my code at the kiosk (issue 13), the cabinet's side in this process: what the page
posts, what goes to the outbox, and the one answer the kiosk gives whatever the cloud decides.

The kiosk answers the same for any well-formed request (no oracle for application numbers or
mobiles); only input that cannot be a request, and a cabinet that cannot reach the cloud, are
told apart. The digits never leave the cabinet: the event holds a keyed digest."""

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from locker_controller.config import KioskSettings, MetricsSettings
from locker_controller.kiosk import build_app
from locker_controller.lost_code import LostCodeDesk
from tests.locker_controller.conftest import LOCKER_KEY
from xinbao.lost_code import parse_request, request_digest


class Outbox:
    """The EventLog's interface: what would be committed to the outbox."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, dict]] = []

    def record(self, type_, compartment=None, **data):
        self.events.append((type_.value, compartment, data))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kiosk():
    """``(client, outbox, link, clock)``: the kiosk app on a desk whose link is up."""
    config = SimpleNamespace(
        code_digits=8,
        kiosk=KioskSettings(rate_burst=1000, rate_per_s=1000),
        reopen_window_s=60.0,
        locker_key=LOCKER_KEY,
        lost_code_per_hour=3,
        metrics=MetricsSettings(),
    )
    outbox, link, clock = Outbox(), SimpleNamespace(up=True), Clock()
    desk = LostCodeDesk(config, outbox, lambda: link.up, clock)
    with TestClient(build_app(SimpleNamespace(config=config, lost_code=desk))) as client:
        yield client, outbox, link, clock


def _ask(client, number="XA-2025-0001", digits="8000"):
    return client.post("/api/lost-code", json={"application_no": number, "mobile_last4": digits})


def test_a_request_goes_to_the_outbox_as_a_digest_and_the_answer_is_fixed(kiosk):
    client, outbox, _, _ = kiosk
    answers = [_ask(client, n, d) for n, d in [(" XA-2025-0001 ", "8000"), ("XA-9", "1234")]]
    for r in answers:
        assert r.status_code == 200, r.text
    # Whatever was typed, the same words: the kiosk cannot tell and does not pretend to.
    assert answers[0].json() == answers[1].json()
    body = answers[0].json()
    assert body["ok"] is True and body["reason"] == "lost_code_sent"
    assert "如信息无误" in body["message_zh"] and "If the details match" in body["message_en"]

    [(kind, compartment, data), _] = outbox.events
    assert (kind, compartment) == ("code_reissue_requested", None)
    assert parse_request(data) == (
        "XA-2025-0001",
        request_digest(LOCKER_KEY, "XA-2025-0001", "8000"),
    )
    assert "8000" not in str(data)  # never the digits themselves


def test_off_line_the_kiosk_says_it_cannot_do_this_now(kiosk):
    client, outbox, link, _ = kiosk
    link.up = False
    r = _ask(client)
    assert r.status_code == 503 and r.json()["reason"] == "offline"
    assert "网络" in r.json()["message_zh"] and "No network" in r.json()["message_en"]
    assert outbox.events == []  # nothing waits in the outbox for a later, surprising SMS
    link.up = True
    assert _ask(client).status_code == 200 and len(outbox.events) == 1


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"application_no": "XA-1", "mobile_last4": "800"}, "malformed_mobile"),
        ({"application_no": "XA-1", "mobile_last4": "８０００"}, "malformed_mobile"),
        ({"application_no": "", "mobile_last4": "8000"}, "malformed_application_no"),
        ({"application_no": "XA 1", "mobile_last4": "8000"}, "malformed_application_no"),
        ({"application_no": "X" * 65, "mobile_last4": "8000"}, "malformed_application_no"),
        ({"application_no": "XA-1"}, "bad_request"),
        ({"application_no": "X" * 81, "mobile_last4": "8000"}, "bad_request"),
        ({"application_no": 12, "mobile_last4": "8000"}, "bad_request"),
    ],
)
def test_malformed_input_is_refused_in_both_languages_and_sends_nothing(kiosk, body, reason):
    client, outbox, _, _ = kiosk
    r = client.post("/api/lost-code", json=body)
    assert r.status_code == 422 and r.json()["reason"] == reason, r.text
    assert r.json()["message_zh"] and r.json()["message_en"]
    assert outbox.events == []


def test_a_keypad_flood_is_answered_but_not_forwarded_beyond_the_hourly_cap(kiosk):
    client, outbox, _, clock = kiosk
    answers = {_ask(client, f"XA-{n}").json()["reason"] for n in range(10)}
    assert answers == {"lost_code_sent"}
    assert len(outbox.events) == 3  # lost_code_per_hour
    clock.now += 3600
    _ask(client)
    assert len(outbox.events) == 4
