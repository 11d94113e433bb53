"""Building the commands the cloud sends: reservation sync, staff credentials, remote unlock.

Payloads are computed from the database at sending time, never from a request body, so a
sync always says what the cloud believes now. Every command is recorded (``locker_command``)
before it is published, so whichever API process receives the reply can match it.
"""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlmodel import Session

from cloud_api.models.handover import ACTIVE_STATES, Handover
from cloud_api.models.locker import Compartment, Locker
from cloud_api.models.monitoring import LockerCommand
from cloud_api.models.record import ApprovalRecord
from cloud_api.models.staff import Role, Staff
from xinbao.codes import derive_locker_key
from xinbao.contract import (
    Command,
    CommandType,
    Reservation,
    ReservationSync,
    Revocation,
    StaffCredentials,
    StaffEntry,
    sign_command,
)
from xinbao.lockout import mobile_digest, mobile_last_digits

_STAFF_NO_MAX = 32


def reservation(
    session: Session, handover: Handover, digits: int, master_key: bytes | None = None
) -> Reservation | None:
    """What the locker must know of a live handover to check its code off line. With
    ``master_key``: also the keyed digest of the last 4 digits of the mobile the code went
    to, which opens the code during a lockout (xinbao/lockout.py); never the digits."""
    if handover.state not in {s.value for s in ACTIVE_STATES} or handover.code_counter is None:
        return None
    compartment = session.get(Compartment, handover.compartment_id)
    record = session.get(ApprovalRecord, handover.record_id)
    # Every handover names the compartment the cloud holds for it, a pickup not loaded yet
    # too: the locker opens that one for the load when the shared allocation rule allows it
    # there, and otherwise says on `deposited` which one it used and why (effects.py).
    return Reservation(
        handover_id=handover.id,
        kind=handover.kind,
        compartment=compartment.number,
        size=compartment.size,
        counter=handover.code_counter,
        digits=digits,
        expires_at=handover.expires_at,
        state=handover.state,
        record_ref=record.application_number if record else None,
        mobile_digest=_mobile_digest(master_key, handover, record),
    )


def _mobile_digest(
    master_key: bytes | None, handover: Handover, record: ApprovalRecord | None
) -> str | None:
    last = mobile_last_digits(record.mobile) if record is not None and master_key else None
    if last is None:
        return None
    key = derive_locker_key(master_key, handover.locker_id)
    return mobile_digest(key, handover.id, last)


def sync_payload(
    session: Session,
    locker_id: str,
    digits: int,
    handover_ids: list[int] | None = None,
    master_key: bytes | None = None,
) -> ReservationSync:
    """A full sync (``handover_ids`` None: every live handover, the locker forgets the rest),
    or upserts and revocations for the handovers named."""
    if handover_ids is None:
        live = session.scalars(
            select(Handover)
            .where(
                Handover.locker_id == locker_id,
                Handover.state.in_([s.value for s in ACTIVE_STATES]),
            )
            .order_by(Handover.id)
        )
        upserts = [
            r for h in live if (r := reservation(session, h, digits, master_key)) is not None
        ]
        return ReservationSync(upserts=upserts, full=True)
    upserts, revocations = [], []
    for hid in handover_ids:
        handover = session.get(Handover, hid, populate_existing=True)
        if handover is None or handover.locker_id != locker_id:
            continue
        found = reservation(session, handover, digits, master_key)
        if found is None:
            revocations.append(Revocation(handover_id=hid, reason=handover.state))
        else:
            upserts.append(found)
    return ReservationSync(upserts=upserts, revocations=revocations)


def locker_site(session: Session, locker_id: str) -> str | None:
    """The site of a registered locker; None for a locker the cloud does not know."""
    return session.scalar(select(Locker.site).where(Locker.id == locker_id))


def staff_payload(session: Session, site: str | None) -> StaffCredentials:
    """Who may log in with a staff pass at the lockers of ``site``: active members with a
    confirmed TOTP (a pass needs it) whose role and site cover it. No secret is sent: the
    locker checks passes with its own key (xinbao.staff_pass). An unknown site: nobody."""
    if site is None:
        return StaffCredentials(staff=[])
    rows = session.scalars(
        select(Staff)
        .where(
            Staff.active.is_(True),
            Staff.totp_confirmed.is_(True),
            Staff.role.in_([r.value for r in Role]),
            or_(Staff.role == Role.admin.value, Staff.site.is_(None), Staff.site == site),
            func.length(Staff.username) <= _STAFF_NO_MAX,
        )
        .order_by(Staff.username)
    )
    return StaffCredentials(
        staff=[
            StaffEntry(
                staff_no=s.username, name=s.username, roles=[s.role], pass_floor=s.pass_floor
            )
            for s in rows
        ]
    )


def signed(
    master_secret: bytes,
    locker_id: str,
    type_: CommandType,
    payload,
    ttl: timedelta,
    now: datetime,
    request_id: uuid.UUID | None = None,
) -> Command:
    return sign_command(
        derive_locker_key(master_secret, locker_id),
        type_,
        payload,
        ttl=ttl,
        now=now,
        request_id=request_id,
    )


def record(
    session: Session, locker_id: str, command: Command, remote_open_id: int | None = None
) -> LockerCommand:
    row = LockerCommand(
        request_id=str(command.request_id),
        locker_id=locker_id,
        type=command.type.value,
        issued_at=command.issued_at,
        expires_at=command.expires_at,
        remote_open_id=remote_open_id,
    )
    session.add(row)
    return row
