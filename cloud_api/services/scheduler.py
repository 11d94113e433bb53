"""Timed work: expire unused reservations, send reminders, mark overdue pickups, forget
stale log-in throttle rows.

Safe with several API processes: every step claims its handover with a conditional UPDATE
(``WHERE state = ... AND reminders_sent = n``), so only one process acts on it, and the SMS
dedupe key names the event, so even a repeat could not send twice.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from cloud_api.models.handover import Handover, HandoverKind, HandoverState
from cloud_api.models.locker import Locker
from cloud_api.models.record import ApprovalRecord
from cloud_api.services import audit, lockers, staff_login
from cloud_api.services.handovers import HandoverPolicy
from cloud_api.sms.outbox import enqueue_sms

log = logging.getLogger(__name__)
_BATCH = 200


@dataclass
class SchedulerReport:
    expired: int = 0
    reminders: int = 0
    overdue: int = 0
    throttles_forgotten: int = 0


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        policy: HandoverPolicy,
        reminder_ages: list[timedelta],
        clock: Callable[[], datetime],
    ):
        self.engine = engine
        self.policy = policy
        self.reminder_ages = sorted(reminder_ages)
        self.clock = clock

    def run_once(self) -> SchedulerReport:
        now = self.clock()
        report = SchedulerReport()
        report.expired = self._expire(now)
        report.reminders = self._remind(now)
        report.overdue = self._mark_overdue(now)
        with Session(self.engine) as session:
            report.throttles_forgotten = staff_login.forget_stale_throttles(session, now)
            session.commit()
        return report

    def _ids(self, query) -> list[int]:
        with Session(self.engine) as session:
            return list(session.scalars(query.order_by(Handover.id).limit(_BATCH)))

    def _expire(self, now: datetime) -> int:
        done = 0
        for handover_id in self._ids(
            select(Handover.id).where(
                Handover.state == HandoverState.reserved.value, Handover.expires_at <= now
            )
        ):
            with Session(self.engine, expire_on_commit=False) as session:
                won = session.execute(
                    update(Handover)
                    .where(
                        Handover.id == handover_id, Handover.state == HandoverState.reserved.value
                    )
                    .values(state=HandoverState.expired.value, finished_at=now, updated_at=now)
                ).rowcount
                if won != 1:
                    continue  # another process got there first, or it was used meanwhile
                handover = session.get(Handover, handover_id)
                lockers.release_compartment(session, handover.compartment_id, handover_id)
                audit.append(
                    session,
                    "scheduler",
                    "handover.state",
                    f"handover:{handover_id}",
                    {"from": "reserved", "to": "expired", "kind": handover.kind},
                )
                audit.append(
                    session,
                    "scheduler",
                    "code.revoked",
                    f"handover:{handover_id}",
                    {"counter": handover.code_counter, "reason": "expired"},
                )
                session.commit()
                done += 1
        return done

    def _remind(self, now: datetime) -> int:
        done = 0
        for number, age in enumerate(self.reminder_ages, start=1):
            for handover_id in self._ids(
                select(Handover.id).where(
                    Handover.kind == HandoverKind.pickup.value,
                    Handover.state == HandoverState.deposited.value,
                    Handover.reminders_sent == number - 1,
                    Handover.deposited_at <= now - age,
                )
            ):
                with Session(self.engine, expire_on_commit=False) as session:
                    won = session.execute(
                        update(Handover)
                        .where(
                            Handover.id == handover_id,
                            Handover.state == HandoverState.deposited.value,
                            Handover.reminders_sent == number - 1,
                        )
                        .values(reminders_sent=number, updated_at=now)
                    ).rowcount
                    if won != 1:
                        continue
                    handover = session.get(Handover, handover_id)
                    record = session.get(ApprovalRecord, handover.record_id)
                    locker = session.get(Locker, handover.locker_id)
                    enqueue_sms(
                        session,
                        dedupe_key=f"handover:{handover_id}:reminder:{number}",
                        to_number=record.mobile,
                        template="reminder",
                        params={"locker_name": locker.site[:30], "expires_at": handover.expires_at},
                        locker_id=handover.locker_id,
                        code_counter=handover.code_counter,
                        handover_id=handover_id,
                    )
                    audit.append(
                        session,
                        "scheduler",
                        "sms.reminder",
                        f"handover:{handover_id}",
                        {"number": number},
                    )
                    session.commit()
                    done += 1
        return done

    def _mark_overdue(self, now: datetime) -> int:
        done = 0
        for handover_id in self._ids(
            select(Handover.id).where(
                Handover.kind == HandoverKind.pickup.value,
                Handover.state == HandoverState.deposited.value,
                Handover.expires_at <= now,
            )
        ):
            with Session(self.engine, expire_on_commit=False) as session:
                values: dict = {"state": HandoverState.overdue.value, "updated_at": now}
                if not self.policy.codes.overdue_code_keeps_working:
                    values["code_digest"] = None
                won = session.execute(
                    update(Handover)
                    .where(
                        Handover.id == handover_id, Handover.state == HandoverState.deposited.value
                    )
                    .values(**values)
                ).rowcount
                if won != 1:
                    continue
                handover = session.get(Handover, handover_id)
                record = session.get(ApprovalRecord, handover.record_id)
                locker = session.get(Locker, handover.locker_id)
                enqueue_sms(
                    session,
                    dedupe_key=f"handover:{handover_id}:overdue",
                    to_number=record.mobile,
                    template="overdue",
                    params={
                        "locker_name": locker.site[:30],
                        "service_phone": self.policy.service_phone,
                    },
                    handover_id=handover_id,
                )
                audit.append(
                    session,
                    "scheduler",
                    "handover.state",
                    f"handover:{handover_id}",
                    {"from": "deposited", "to": "overdue", "kind": "pickup"},
                )
                session.commit()
                done += 1
        return done

    async def run_forever(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                report = await asyncio.to_thread(self.run_once)
                if report.expired or report.reminders or report.overdue:
                    log.info("scheduler: %s", report)
            except SQLAlchemyError as err:
                # The database may be restarting; the next round tries again.
                log.warning("scheduler round failed: %s", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
