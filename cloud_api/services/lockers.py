"""Lockers and compartments: registration, occupancy, nearest search, claiming."""

import math
from collections import defaultdict
from datetime import datetime

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cloud_api.core.security import new_secret, secret_digest, secret_matches
from cloud_api.errors import AuthError, Conflict, InputError, NoFreeCompartment, NotFound
from cloud_api.models.handover import Handover
from cloud_api.models.locker import (
    Compartment,
    CompartmentState,
    Locker,
    LockerCreate,
    LockerDetail,
    LockerNearby,
    LockerPublic,
    Occupancy,
)
from cloud_api.models.monitoring import LockerLink
from cloud_api.services import audit, placement
from xinbao import allocation

EARTH_RADIUS_KM = 6371.0088
# How many of the nearest lockers with free space a drop-off tries before giving up (each
# try loses only to a concurrent request that took that locker's last free compartment).
NEAREST_CANDIDATES = 10


def register(session: Session, body: LockerCreate, actor: str) -> tuple[Locker, str]:
    """Create a locker and its compartments; the locker's credential is returned only here."""
    numbers = [c.number for c in body.compartments]
    if len(set(numbers)) != len(numbers):
        raise InputError("compartment numbers must be unique within a locker")
    wiring = [(c.board, c.channel) for c in body.compartments]
    if len(set(wiring)) != len(wiring):
        raise InputError("two compartments cannot share a board address and channel")
    if session.get(Locker, body.id) is not None:
        raise Conflict(f"locker {body.id!r} is already registered")
    locker_key = new_secret()
    locker = Locker(
        id=body.id,
        site=body.site,
        address=body.address,
        latitude=body.latitude,
        longitude=body.longitude,
        key_digest=secret_digest(locker_key),
    )
    session.add(locker)
    try:
        # On PostgreSQL a concurrent registration of the same id makes this INSERT wait for
        # the other transaction, then fail on the primary key once it commits.
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"locker {body.id!r} is already registered") from None
    for c in body.compartments:
        session.add(
            Compartment(
                locker_id=body.id,
                number=c.number,
                size=c.size.value,
                board=c.board,
                channel=c.channel,
            )
        )
    audit.append(
        session,
        actor,
        "locker.registered",
        f"locker:{body.id}",
        {"compartments": len(numbers), "site": body.site},
    )
    session.commit()
    return locker, locker_key


def authenticate(session: Session, locker_id: str, presented_key: str) -> Locker:
    locker = session.get(Locker, locker_id)
    if locker is None or not secret_matches(locker.key_digest, presented_key):
        raise AuthError("the locker key does not match this locker")
    return locker


def get_locker(session: Session, locker_id: str) -> Locker:
    locker = session.get(Locker, locker_id)
    if locker is None:
        raise NotFound(f"no locker {locker_id!r}")
    return locker


def compartments_of(session: Session, locker_id: str) -> list[Compartment]:
    return list(
        session.scalars(
            select(Compartment)
            .where(Compartment.locker_id == locker_id)
            .order_by(Compartment.number)
        )
    )


def _occupancy(session: Session, locker_ids: list[str]) -> dict[str, list[Occupancy]]:
    free_case = func.sum(
        case(
            (
                and_(
                    Compartment.state == CompartmentState.free.value,
                    Compartment.out_of_service.is_(False),
                ),
                1,
            ),
            else_=0,
        )
    )
    rows = session.execute(
        select(Compartment.locker_id, Compartment.size, func.count(), free_case)
        .where(Compartment.locker_id.in_(locker_ids))
        .group_by(Compartment.locker_id, Compartment.size)
        .order_by(Compartment.locker_id, Compartment.size)
    )
    result: dict[str, list[Occupancy]] = defaultdict(list)
    for locker_id, size, total, free in rows:
        result[locker_id].append(Occupancy(size=size, total=total, free=int(free or 0)))
    return result


def _links(session: Session, locker_ids: list[str]) -> dict[str, LockerLink]:
    if not locker_ids:
        return {}
    rows = session.scalars(select(LockerLink).where(LockerLink.locker_id.in_(locker_ids)))
    return {link.locker_id: link for link in rows}


def _link_fields(link: LockerLink | None) -> dict:
    if link is None:
        return {}
    return {
        "online": link.online,
        "last_seen_at": link.last_seen_at,
        "outbox_depth": link.outbox_depth,
        "boards": link.boards or [],
    }


def _public(
    locker: Locker, occupancy: list[Occupancy], now: datetime, link: LockerLink | None = None
) -> dict:
    locked = locker.lockout_until if locker.lockout_until and locker.lockout_until > now else None
    return {
        **_link_fields(link),
        "id": locker.id,
        "site": locker.site,
        "address": locker.address,
        "latitude": locker.latitude,
        "longitude": locker.longitude,
        "locked_out_until": locked,
        "occupancy": occupancy,
    }


def list_lockers(session: Session, now: datetime, offset: int, limit: int) -> list[LockerPublic]:
    lockers = list(session.scalars(select(Locker).order_by(Locker.id).offset(offset).limit(limit)))
    occupancy = _occupancy(session, [lk.id for lk in lockers])
    links = _links(session, [lk.id for lk in lockers])
    return [LockerPublic(**_public(lk, occupancy[lk.id], now, links.get(lk.id))) for lk in lockers]


def detail(session: Session, locker: Locker, now: datetime) -> LockerDetail:
    occupancy = _occupancy(session, [locker.id])
    return LockerDetail(
        **_public(locker, occupancy[locker.id], now, session.get(LockerLink, locker.id)),
        compartments=[c.model_dump() for c in compartments_of(session, locker.id)],
    )


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine): plenty for 'which locker is nearest' in a city."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def nearest_with_space(
    session: Session, latitude: float, longitude: float, size: str, limit: int, now: datetime
) -> list[LockerNearby]:
    rows = (
        session.execute(
            select(Locker)
            .join(Compartment, Compartment.locker_id == Locker.id)
            .where(
                Compartment.size == size,
                Compartment.state == CompartmentState.free.value,
                Compartment.out_of_service.is_(False),
            )
            .distinct()
        )
        .scalars()
        .all()
    )
    ranked = sorted(
        ((distance_km(latitude, longitude, lk.latitude, lk.longitude), lk) for lk in rows),
        key=lambda pair: (pair[0], pair[1].id),
    )[:limit]
    occupancy = _occupancy(session, [lk.id for _, lk in ranked])
    return [
        LockerNearby(**_public(lk, occupancy[lk.id], now), distance_km=round(d, 3))
        for d, lk in ranked
    ]


def claim_compartment(session: Session, locker_id: str, size: str) -> Compartment:
    """Take a compartment of ``size`` that the shared allocation rule offers (free, in
    service, held by nobody, its board answering, its door not jammed) for the caller's
    transaction.

    The conditional UPDATE (``WHERE state = 'free'``) is what makes two concurrent requests
    unable to win the same compartment: the loser's UPDATE matches no row and it tries the next.
    """
    seen = placement.slots(session, locker_id)
    numbers = allocation.usable(seen, size)
    ids = dict(
        session.execute(
            select(Compartment.number, Compartment.id).where(
                Compartment.locker_id == locker_id, Compartment.number.in_(numbers)
            )
        ).all()
    )
    for number in numbers:
        won = session.execute(
            update(Compartment)
            .where(
                Compartment.id == ids[number],
                Compartment.state == CompartmentState.free.value,
                Compartment.out_of_service.is_(False),
            )
            .values(state=CompartmentState.reserved.value)
        ).rowcount
        if won == 1:
            return session.get(Compartment, ids[number], populate_existing=True)
    raise no_free_compartment(locker_id, size, seen)


def no_free_compartment(locker_id: str, size: str, seen: list) -> NoFreeCompartment:
    """The refusal, saying why to staff (``detail``: which board is silent, which door
    jammed) and to applicants in their own words (``message_zh``/``message_en``)."""
    why = allocation.staff_reason(seen, size)
    faulty = allocation.unavailable(s for s in seen if s.size == size)
    hint = "" if faulty else ": try another locker or a larger size"
    zh, en = allocation.APPLICANT_MESSAGES[allocation.applicant_reason(seen, size)]
    error = NoFreeCompartment(f"locker {locker_id}: {why}{hint}")
    error.extra = {
        "unavailable": allocation.unavailable(seen),
        "message_zh": zh,
        "message_en": en,
    }
    return error


def assign_compartment(
    session: Session, handover: Handover, compartment: Compartment, state: CompartmentState
) -> None:
    """``handover`` holds ``compartment`` (in ``state``) from now on, in the caller's
    transaction; the compartment it held before is the caller's to free or give away."""
    session.execute(
        update(Compartment)
        .where(Compartment.id == compartment.id)
        .values(state=state.value, handover_id=handover.id)
    )
    session.execute(
        update(Handover).where(Handover.id == handover.id).values(compartment_id=compartment.id)
    )
    handover.compartment_id = compartment.id


def release_compartment(session: Session, compartment_id: int, handover_id: int) -> None:
    session.execute(
        update(Compartment)
        .where(Compartment.id == compartment_id, Compartment.handover_id == handover_id)
        .values(state=CompartmentState.free.value, handover_id=None)
    )


def set_out_of_service(
    session: Session, locker_id: str, number: int, out_of_service: bool, actor: str
) -> Compartment:
    compartment = session.scalar(
        select(Compartment).where(Compartment.locker_id == locker_id, Compartment.number == number)
    )
    if compartment is None:
        raise NotFound(f"locker {locker_id} has no compartment {number}")
    compartment.out_of_service = out_of_service
    audit.append(
        session,
        actor,
        "compartment.out_of_service" if out_of_service else "compartment.in_service",
        f"locker:{locker_id}",
        {"compartment": number},
    )
    session.commit()
    return compartment
