"""Levels read from the database when /metrics is scraped: backlogs, open alarms, lockouts.

Read at scrape time rather than kept in each process: the SMS outbox or a command's reply is
shared by every API process (any one may claim a message or receive a reply), so whichever
worker answers the scrape reports the same figure. Each query is an aggregate over indexed
or small sets (messages waiting, commands unanswered, alarms open, lockouts running); none
reads personal data (a count and an age leave no number nor code in the output).

A backlog is any queue of work the cloud owes: ``BACKLOGS`` maps its name (the ``queue``
label) to a function of a session and the time giving its depth and the age of its oldest
item. ``webhook_backlog`` is the hook for the webhook outbox, which lands separately: it
reports nothing until it reads that table.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from cloud_api.models.common import as_utc
from cloud_api.models.locker import Locker
from cloud_api.models.monitoring import Alarm, AlarmKind, LockerCommand, LockerLink
from cloud_api.models.staff import LoginThrottle
from cloud_api.models.webhook import UNDELIVERED, WebhookEvent
from cloud_api.sms.models import SmsMessage, SmsStatus


@dataclass(frozen=True)
class Backlog:
    depth: int
    oldest_age_s: float  # 0 when empty


def _backlog(count: int, oldest: datetime | None, now: datetime) -> Backlog:
    if not count or oldest is None:
        return Backlog(0, 0.0)
    return Backlog(count, max(0.0, (now - as_utc(oldest)).total_seconds()))


def sms_backlog(session: Session, now: datetime) -> Backlog:
    """SMS not sent yet: waiting for their turn or a retry (pending), or being sent."""
    waiting = (SmsStatus.pending.value, SmsStatus.sending.value)
    count, oldest = session.execute(
        select(func.count(), func.min(SmsMessage.created_at)).where(SmsMessage.status.in_(waiting))
    ).one()
    return _backlog(count, oldest, now)


def command_backlog(session: Session, now: datetime) -> Backlog:
    """Commands sent to lockers and not answered yet (cloud_api/mqtt/commands.py records
    each before it is published; a reply or the timeout sweep ends it)."""
    count, oldest = session.execute(
        select(func.count(), func.min(LockerCommand.issued_at)).where(
            LockerCommand.status == "sent"
        )
    ).one()
    return _backlog(count, oldest, now)


def webhook_backlog(session: Session, now: datetime) -> Backlog | None:
    """Webhook deliveries not made yet (pending or sending): depth and oldest age.
    (``ix_webhook_event_due`` (status, next_attempt_at) serves the filter.)"""
    count, oldest = session.execute(
        select(func.count(), func.min(WebhookEvent.queued_at)).where(
            WebhookEvent.status.in_(UNDELIVERED)
        )
    ).one()
    return _backlog(count, oldest, now)


BACKLOGS: dict[str, Callable[[Session, datetime], Backlog | None]] = {
    "sms": sms_backlog,
    "commands": command_backlog,
    "webhooks": webhook_backlog,
}


def open_alarms(session: Session) -> dict[str, int]:
    """Open (not cleared) alarms per kind, every kind present (0 included)."""
    found = dict(
        session.execute(
            select(Alarm.kind, func.count()).where(Alarm.cleared_at.is_(None)).group_by(Alarm.kind)
        ).all()
    )
    return {kind.value: int(found.get(kind.value, 0)) for kind in AlarmKind}


def active_lockouts(session: Session, now: datetime) -> dict[str, int]:
    """Lockouts running now: lockers whose code checks through the cloud are locked
    (services/codes.py) and staff log-in names locked (services/staff_login.py). A cabinet's
    own keypad lockout is the controller's metric; its second level is an open ``lockout``
    alarm here."""
    lockers = session.scalar(select(func.count()).where(Locker.lockout_until > now))
    logins = session.scalar(select(func.count()).where(LoginThrottle.locked_until > now))
    return {"locker_codes": int(lockers or 0), "staff_login": int(logins or 0)}


def lockers_online(session: Session) -> int:
    return int(session.scalar(select(func.count()).where(LockerLink.online.is_(True))) or 0)


class DatabaseLevels(Collector):
    """A prometheus collector that reads the levels above at each scrape. The database
    being away gives ``xinbao_metrics_database_up 0`` and no levels, never a failed scrape
    (the request counters still say what the API did)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def describe(self) -> list:
        return []  # read at collect time only (no query when the collector is registered)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "xinbao_metrics_database_up",
            "1 when the levels below could be read from the database at this scrape.",
        )
        try:
            families = list(self._levels())
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _levels(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        with Session(self._engine) as session:
            backlogs = {name: read(session, now) for name, read in BACKLOGS.items()}
            alarms = open_alarms(session)
            lockouts = active_lockouts(session, now)
            online = lockers_online(session)
            session.commit()  # end the read: on SQLite it holds the write lock
        depth = GaugeMetricFamily(
            "xinbao_backlog_depth",
            "Work the cloud owes and has not done: SMS to send, commands awaiting a reply.",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "xinbao_backlog_oldest_age_seconds",
            "Age of the oldest item of each backlog (0 when it is empty).",
            labels=["queue"],
        )
        for name, backlog in backlogs.items():
            if backlog is None:
                continue
            depth.add_metric([name], backlog.depth)
            age.add_metric([name], backlog.oldest_age_s)
        yield depth
        yield age
        open_ = GaugeMetricFamily(
            "xinbao_alarms_open", "Alarms raised and not cleared, by kind.", labels=["kind"]
        )
        for kind, count in alarms.items():
            open_.add_metric([kind], count)
        yield open_
        locked = GaugeMetricFamily(
            "xinbao_lockouts_active",
            "Brute-force lockouts running now: locker_codes (code checks through the cloud), "
            "staff_login (dashboard log-in names).",
            labels=["scope"],
        )
        for scope, count in lockouts.items():
            locked.add_metric([scope], count)
        yield locked
        yield GaugeMetricFamily(
            "xinbao_lockers_online", "Lockers whose MQTT presence is online.", value=online
        )
