"""The periodic staff round (cloud_api.mqtt.staff_sync): which on-line lockers get the
current list, on SQLite and PostgreSQL, and what a round costs when nothing changed.

The bridge runs this round every few seconds for every on-line locker of the city, so a round
with nothing to send must stay one query that loads no command rows (the city bench once lost
its latency target to a round that loaded every locker's newest list)."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlmodel import Session

from cloud_api.models.common import utcnow
from cloud_api.models.locker import LockerCreate
from cloud_api.models.monitoring import LockerCommand, LockerLink
from cloud_api.mqtt import commands, staff_sync
from cloud_api.mqtt.errors import LinkDown
from cloud_api.mqtt.sender import CommandSender
from cloud_api.services import lockers
from tests.cloud_api.conftest import locker_body
from xinbao.contract import Command

OLD = "0" * 64  # the digest of a list that is no longer the current one


@pytest.fixture
def sent(settings, engine):
    """A CommandSender whose publishes land in a list of (locker_id, Command)."""
    out: list[tuple[str, Command]] = []

    def publish(locker_id: str, payload: bytes) -> None:
        out.append((locker_id, Command.model_validate_json(payload)))

    sender = CommandSender(settings, engine, publish, utcnow)
    return sender, out


def current_digest(engine) -> str:
    with Session(engine) as session:
        return staff_sync.digest(commands.staff_payload(session, locker_body("any")["site"]))


def add_locker(engine, locker_id: str, online: bool = True) -> None:
    with Session(engine) as session:
        lockers.register(session, LockerCreate.model_validate(locker_body(locker_id)), "test")
        session.add(LockerLink(locker_id=locker_id, online=online))
        session.commit()


def add_list(engine, locker_id: str, digest: str, status="ok", error=None) -> None:
    """A staff_credentials command row as the sender leaves it (the digest in ``result``)."""
    now = utcnow()
    with Session(engine) as session:
        session.add(
            LockerCommand(
                request_id=str(uuid.uuid4()),
                locker_id=locker_id,
                type="staff_credentials",
                issued_at=now,
                expires_at=now + timedelta(minutes=5),
                status=status,
                error=error,
                result={staff_sync.DIGEST_KEY: digest, "done": True},
            )
        )
        session.commit()


def test_the_current_list_reaches_every_online_locker_that_lacks_it(engine, sent):
    sender, published = sent
    current = current_digest(engine)
    for locker_id in ("xa-a", "xa-b", "xa-c", "xa-e", "xa-f", "xa-g", "xa-h"):
        add_locker(engine, locker_id)
    add_locker(engine, "xa-d", online=False)
    add_list(engine, "xa-a", current)  # up to date
    add_list(engine, "xa-b", current)
    add_list(engine, "xa-b", OLD)  # the newest is what counts
    # xa-c was never given a list
    add_list(engine, "xa-d", OLD)  # off line: gets the list with its full sync
    add_list(engine, "xa-e", OLD)
    add_list(engine, "xa-e", current, status="failed", error="not sent: broker away")
    add_list(engine, "xa-f", current, status="timeout", error="no reply in time")
    add_list(engine, "xa-g", current, status="failed", error="bad signature")
    add_list(engine, "xa-h", OLD, status="sent")  # on its way: given, until it fails to leave

    assert sender.push_changed_staff() == ["xa-b", "xa-c", "xa-e", "xa-h"]
    assert [locker for locker, _ in published] == ["xa-b", "xa-c", "xa-e", "xa-h"]
    assert {c.type.value for _, c in published} == {"staff_credentials"}
    with Session(engine) as session:
        assert staff_sync.last_pushed(session, "xa-c") == current
    # Given now: the next round has nothing to send.
    assert sender.push_changed_staff() == []
    assert len(published) == 4


def test_a_list_that_could_not_leave_is_sent_again_next_round(engine, settings):
    add_locker(engine, "xa-a")
    add_list(engine, "xa-a", OLD)
    attempts = []

    def broker_away(locker_id: str, payload: bytes) -> None:
        attempts.append(locker_id)
        raise LinkDown("broker away")

    sender = CommandSender(settings, engine, broker_away, utcnow)
    assert sender.push_changed_staff() == ["xa-a"]
    assert sender.push_changed_staff() == ["xa-a"]  # marked "not sent": not given
    assert attempts == ["xa-a", "xa-a"]


def test_a_round_with_nothing_to_send_is_one_cheap_query(engine, sent):
    """However many lockers are on line: no command row is loaded, no locker row locked, and
    the number of statements does not grow with the city."""
    sender, published = sent
    current = current_digest(engine)

    def a_round() -> tuple[int, int]:
        statements, loaded = [], []

        def on_statement(conn, cursor, statement, *args) -> None:
            statements.append(statement)

        def on_load(target, context) -> None:
            loaded.append(target)

        event.listen(engine, "before_cursor_execute", on_statement)
        event.listen(LockerCommand, "load", on_load)
        try:
            assert sender.push_changed_staff() == []
        finally:
            event.remove(engine, "before_cursor_execute", on_statement)
            event.remove(LockerCommand, "load", on_load)
        assert not [s for s in statements if "FOR UPDATE" in s.upper()]
        return len(statements), len(loaded)

    for n in range(3):
        add_locker(engine, f"xa-{n:03d}")
        add_list(engine, f"xa-{n:03d}", OLD)
        add_list(engine, f"xa-{n:03d}", current)
    small = a_round()
    for n in range(3, 40):
        add_locker(engine, f"xa-{n:03d}")
        add_list(engine, f"xa-{n:03d}", current)
    assert a_round() == small
    assert small[1] == 0
    assert published == []
