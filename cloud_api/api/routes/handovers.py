"""Drop-offs for integrators, and the applicant's code resend.

An integrator's key sees and cancels only handovers it created or made for its own records;
another key's are answered as missing (404)."""

from typing import Annotated

from fastapi import APIRouter, Path, Response

from cloud_api.api.deps import (
    DbId,
    HandoversWriter,
    IdempotencyKey,
    NowDep,
    PolicyDep,
    SessionDep,
)
from cloud_api.api.locker_sync import BridgeDep, sync_handover
from cloud_api.api.problems import problem_responses
from cloud_api.models.handover import DropoffRequest, HandoverPublic, ResendRequest
from cloud_api.services import handovers, idempotency

router = APIRouter(prefix="/api/v1/handovers", tags=["handovers"])
HandoverRef = Annotated[str, Path(min_length=8, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]


@router.post(
    "/dropoff",
    response_model=HandoverPublic,
    status_code=201,
    # 404: the record or locker named in the body; 409: its state, or no free compartment.
    responses=problem_responses(404, 409),
)
def request_dropoff(
    body: DropoffRequest,
    session: SessionDep,
    who: HandoversWriter,
    policy: PolicyDep,
    now: NowDep,
    response: Response,
    bridge: BridgeDep,
    idempotency_key: IdempotencyKey = None,
):
    """Reserve a compartment (at ``locker_id`` or nearest to latitude/longitude) and send the
    applicant a drop-off code by SMS. With an ``Idempotency-Key``, a repeat (even a concurrent
    one) gets the first answer and reserves nothing more."""
    if not idempotency_key:
        handover = handovers.request_dropoff(session, policy, body, who.name, now, who.owner())
        sync_handover(bridge, handover)
        return handovers.public(session, handover)
    reserved: list = []

    def reserve() -> tuple[int, dict]:
        handover = handovers.reserve_dropoff(
            session, policy, body, who.name, now, who.owner()
        )
        reserved.append(handover)
        return 201, handovers.public(session, handover).model_dump(mode="json")

    body_hash = idempotency.request_hash(body.model_dump(mode="json"))
    answer = idempotency.at_most_once(session, who.name, idempotency_key, body_hash, reserve)
    if reserved:
        sync_handover(bridge, reserved[0])  # after the commit: the locker hears of it once
    response.status_code = answer.status_code
    return answer.body


@router.get("/{handover_id}", response_model=HandoverPublic)
def get_handover(handover_id: DbId, session: SessionDep, who: HandoversWriter):
    """A handover this key created, or one of its records' (any with ``records:read:all``)."""
    handover = handovers.get(session, handover_id, who.owner(reading=True))
    return handovers.public(session, handover)


@router.post(
    "/{handover_id}/cancel", response_model=HandoverPublic, responses=problem_responses(409)
)
def cancel_handover(
    handover_id: DbId, session: SessionDep, who: HandoversWriter, now: NowDep, bridge: BridgeDep
):
    """Cancel a reservation whose item is not in yet; its code stops working."""
    handover = handovers.get(session, handover_id, who.owner())
    handovers.cancel(session, handover, who.name, now)
    sync_handover(bridge, handover)
    return handovers.public(session, handover)


@router.post(
    "/by-ref/{ref}/resend", response_model=HandoverPublic, responses=problem_responses(409, 429)
)
def resend_code(
    ref: HandoverRef,
    body: ResendRequest,
    session: SessionDep,
    policy: PolicyDep,
    now: NowDep,
    bridge: BridgeDep,
):
    """The applicant asks for the code again (rate-limited); the old code stops working.

    No log-in: the handover reference (from the applicant's account page) and the mobile
    number on the record are the proof."""
    handover = handovers.resend(session, policy, ref, body.mobile, now)
    sync_handover(bridge, handover)
    return handovers.public(session, handover)
