"""Lockers: registration and listing (staff / integrators), and the calls lockers make."""

from typing import Annotated

from fastapi import APIRouter, Query

from cloud_api.api.deps import (
    CallingLocker,
    DbId,
    Limit,
    LockerIdPath,
    LockersReader,
    LockersWriter,
    NowDep,
    Offset,
    PolicyDep,
    SessionDep,
)
from cloud_api.api.problems import problem_responses
from cloud_api.errors import NotFound
from cloud_api.models.common import Latitude, Longitude
from cloud_api.models.handover import CodeCheck, CodeCheckResult, HandoverPublic
from cloud_api.models.locker import (
    CompartmentPublic,
    CompartmentSize,
    CompartmentUpdate,
    LockerCreate,
    LockerDetail,
    LockerNearby,
    LockerPublic,
    LockerRegistered,
)
from cloud_api.services import handovers, lockers
from cloud_api.services.codes import check_code

router = APIRouter(prefix="/api/v1/lockers", tags=["lockers"])


@router.post(
    "", response_model=LockerRegistered, status_code=201, responses=problem_responses(409)
)
def register_locker(body: LockerCreate, session: SessionDep, who: LockersWriter, now: NowDep):
    locker, key = lockers.register(session, body, who.name)
    return LockerRegistered(**lockers.detail(session, locker, now).model_dump(), locker_key=key)


@router.get("", response_model=list[LockerPublic])
def list_lockers(
    session: SessionDep, who: LockersReader, now: NowDep, offset: Offset = 0, limit: Limit = 100
):
    return lockers.list_lockers(session, now, offset, limit)


@router.get("/nearest", response_model=list[LockerNearby])
def nearest_lockers(
    session: SessionDep,
    who: LockersReader,
    now: NowDep,
    latitude: Annotated[Latitude, Query()],
    longitude: Annotated[Longitude, Query()],
    size: CompartmentSize = CompartmentSize.M,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
):
    """Lockers with a free compartment of ``size``, nearest first."""
    return lockers.nearest_with_space(session, latitude, longitude, size.value, limit, now)


@router.get("/{locker_id}", response_model=LockerDetail)
def get_locker(locker_id: LockerIdPath, session: SessionDep, who: LockersReader, now: NowDep):
    return lockers.detail(session, lockers.get_locker(session, locker_id), now)


@router.patch(
    "/{locker_id}/compartments/{number}",
    response_model=CompartmentPublic,
    responses=problem_responses(409),
)
def update_compartment(
    locker_id: LockerIdPath,
    number: DbId,
    body: CompartmentUpdate,
    session: SessionDep,
    who: LockersWriter,
):
    compartment = lockers.set_out_of_service(
        session, locker_id, number, body.out_of_service, who.name
    )
    return CompartmentPublic.model_validate(compartment, from_attributes=True)


@router.post(
    "/{locker_id}/codes/check",
    response_model=CodeCheckResult,
    responses=problem_responses(429),  # the locker is locked out after wrong codes
)
def check_locker_code(
    locker: CallingLocker, body: CodeCheck, session: SessionDep, policy: PolicyDep, now: NowDep
):
    """A code typed at the locker's keypad. Accepted means: open this compartment now."""
    outcome = check_code(session, policy.codes, locker.id, body.code, now, body.mobile_last4)
    if not outcome.accepted:
        return CodeCheckResult(accepted=False, attempts_left=outcome.attempts_left)
    c = outcome.compartment
    return CodeCheckResult(
        accepted=True,
        handover_id=outcome.handover.id,
        kind=outcome.handover.kind,
        compartment_number=c.number,
        board=c.board,
        channel=c.channel,
    )


def _own_handover(session, locker, handover_id):
    handover = handovers.get(session, handover_id)
    if handover.locker_id != locker.id:
        raise NotFound(f"locker {locker.id} has no handover {handover_id}")
    return handover


@router.post(
    "/{locker_id}/handovers/{handover_id}/deposited",
    response_model=HandoverPublic,
    responses=problem_responses(409),
)
def report_deposited(
    locker: CallingLocker, handover_id: DbId, session: SessionDep, policy: PolicyDep, now: NowDep
):
    """The door closed with the item inside (documents dropped off, or licence loaded)."""
    handover = _own_handover(session, locker, handover_id)
    handovers.report_deposited(session, policy, handover, f"locker:{locker.id}", now)
    return handovers.public(session, handover)


@router.post(
    "/{locker_id}/handovers/{handover_id}/collected",
    response_model=HandoverPublic,
    responses=problem_responses(409),
)
def report_collected(
    locker: CallingLocker, handover_id: DbId, session: SessionDep, policy: PolicyDep, now: NowDep
):
    """The applicant took the licence and the door closed on an empty compartment."""
    handover = _own_handover(session, locker, handover_id)
    handovers.report_collected(session, policy, handover, f"locker:{locker.id}", now)
    return handovers.public(session, handover)
