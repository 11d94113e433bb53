"""The MQTT contract: topics, event parsing, command signing and every rejection path."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from xinbao.codes import derive_locker_key
from xinbao.contract import (
    Channel,
    Command,
    CommandRejected,
    CommandReply,
    CommandType,
    ContractError,
    LockerEvent,
    ReservationSync,
    UnlockPayload,
    parse_topic,
    shared_subscription,
    sign_command,
    topic,
    verify_command,
)

KEY = derive_locker_key(b"master", "XA-0001")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def unlock_command(**kw):
    return sign_command(KEY, CommandType.UNLOCK, UnlockPayload(compartment=3, reason="phone"),
                        now=NOW, **kw)


def test_topics_round_trip_and_shared_subscription():
    t = topic("XA-0001", Channel.EVENTS)
    assert t == "xinbao/v1/lockers/XA-0001/events"
    assert parse_topic(t) == ("XA-0001", Channel.EVENTS)
    assert shared_subscription(Channel.EVENTS) == "$share/cloud/xinbao/v1/lockers/+/events"


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "", "x" * 65, "a b"])
def test_locker_ids_that_could_escape_their_subtree_are_refused(bad):
    with pytest.raises(ContractError):
        topic(bad, Channel.EVENTS)


@pytest.mark.parametrize(
    "name",
    ["other/v1/lockers/A/events", "xinbao/v1/lockers/A/events/x", "xinbao/v1/lockers/A/nope"],
)
def test_foreign_topics_are_refused(name):
    with pytest.raises(ContractError):
        parse_topic(name)


def test_event_round_trip():
    event = LockerEvent(event_id=uuid.uuid4(), seq=7, ts=NOW, type="door_closed", compartment=3)
    assert LockerEvent.from_bytes(event.to_bytes()) == event


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"event_id": "x", "seq": 1, "ts": "2026-01-01T00:00:00Z", "type": "door_closed"}',
        json.dumps({"event_id": str(uuid.uuid4()), "seq": 0, "ts": "2026-01-01T00:00:00Z",
                    "type": "door_closed"}).encode(),
        json.dumps({"event_id": str(uuid.uuid4()), "seq": 1, "ts": "2026-01-01T00:00:00",
                    "type": "door_closed"}).encode(),
        json.dumps({"event_id": str(uuid.uuid4()), "seq": 1, "ts": "2026-01-01T00:00:00Z",
                    "type": "self_destruct"}).encode(),
        b"{" + b" " * (70 * 1024) + b"}",
    ],
)
def test_malformed_events_raise_contract_error_only(raw):
    with pytest.raises(ContractError):
        LockerEvent.from_bytes(raw)


def test_signed_command_verifies_and_parses_payload():
    cmd = verify_command(KEY, unlock_command().to_bytes(), now=NOW + timedelta(seconds=1))
    assert cmd.type is CommandType.UNLOCK
    assert cmd.parsed_payload() == UnlockPayload(compartment=3, reason="phone")


def test_forged_command_is_rejected():
    other = derive_locker_key(b"master", "XA-0002")
    forged = sign_command(other, CommandType.UNLOCK, UnlockPayload(compartment=3, reason="x"),
                          now=NOW)
    with pytest.raises(CommandRejected) as info:
        verify_command(KEY, forged.to_bytes(), now=NOW)
    assert info.value.reason == "bad_signature"
    assert info.value.request_id == str(forged.request_id)


def test_tampered_payload_is_rejected():
    obj = json.loads(unlock_command().to_bytes())
    obj["payload"]["compartment"] = 4
    with pytest.raises(CommandRejected, match="bad_signature"):
        verify_command(KEY, json.dumps(obj), now=NOW)


def test_unsigned_expired_future_and_retained_commands_are_rejected():
    obj = json.loads(unlock_command().to_bytes())
    del obj["sig"]
    with pytest.raises(CommandRejected, match="unsigned"):
        verify_command(KEY, json.dumps(obj), now=NOW)
    raw = unlock_command().to_bytes()
    with pytest.raises(CommandRejected, match="expired"):
        verify_command(KEY, raw, now=NOW + timedelta(minutes=6))
    with pytest.raises(CommandRejected, match="from_future"):
        verify_command(KEY, raw, now=NOW - timedelta(minutes=10))
    with pytest.raises(CommandRejected, match="retained"):
        verify_command(KEY, raw, now=NOW, retained=True)


def test_signed_but_malformed_payload_is_rejected():
    # Correctly signed, but the payload does not fit the unlock model.
    cmd = sign_command(KEY, CommandType.SYNC_RESERVATIONS, ReservationSync(), now=NOW)
    obj = json.loads(cmd.to_bytes())
    obj["type"] = "unlock"
    obj.pop("sig")
    from xinbao.contract import _signature  # the only way to sign a hostile object

    obj["sig"] = _signature(KEY, obj)
    with pytest.raises(CommandRejected, match="malformed"):
        verify_command(KEY, json.dumps(obj), now=NOW)


def test_payload_type_must_match_command_type():
    with pytest.raises(TypeError):
        sign_command(KEY, CommandType.UNLOCK, ReservationSync(), now=NOW)


def test_replies_need_an_error_when_not_ok():
    rid = uuid.uuid4()
    assert CommandReply.from_bytes(CommandReply(request_id=rid, ok=True, result={}).to_bytes()).ok
    with pytest.raises(ContractError):
        CommandReply.from_bytes(json.dumps({"request_id": str(rid), "ok": False}))
    with pytest.raises(ValueError):
        Command.model_validate({"request_id": str(rid)})
