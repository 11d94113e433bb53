"""Live codes for an integrator's personal centre (``codes:read``, docs/integrators.md).

The cloud stores no code: a handover holds the HOTP counter of its live code and a digest of
it. The plain code is computed from the locker's key and the counter (xinbao.codes) at the
moment it is handed over, in memory, exactly as the SMS dispatcher renders it:

- ``GET /api/v1/handovers/{id}/code`` hands it out once per issued code (a ``code_fetch`` row,
  unique per handover and counter, says it went; a second fetch is refused), audited;
- a subscriber that opted in (``include_codes``) gets it in the body of the ``code.issued``
  event, computed when the event is sent.

Either way only while the code still opens something: a replaced, used or ended code is not
handed out (a dead code in a personal centre only confuses the applicant).
"""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cloud_api.errors import Conflict
from cloud_api.models.handover import Handover, HandoverKind, HandoverState
from cloud_api.models.record import ApprovalRecord
from cloud_api.models.webhook import CodeFetch, CodeRelease
from cloud_api.services import audit
from cloud_api.services import handovers as handover_service
from xinbao.codes import code_for, derive_locker_key

# Where each kind of handover holds a code that opens (or will open, for a pickup being
# loaded) its compartment.
_CODE_STATES = {
    HandoverKind.dropoff.value: {HandoverState.reserved.value},
    HandoverKind.pickup.value: {
        HandoverState.reserved.value,
        HandoverState.deposited.value,
        HandoverState.overdue.value,
    },
}


def why_not_live(handover: Handover, counter: int | None, now: datetime) -> str | None:
    """Why the code with ``counter`` must not be handed out now; None if it may."""
    if counter is None or handover.code_counter is None or handover.code_digest is None:
        return "no code is out for this handover"
    if handover.code_counter != counter:
        return (
            f"this code was replaced (the handover's code is now counter {handover.code_counter})"
        )
    if handover.state not in _CODE_STATES.get(handover.kind, set()):
        return f"the {handover.kind} is '{handover.state}': its code no longer opens anything"
    if handover.code_redeemed_at is not None:
        return "the code was used already"
    if handover.state == HandoverState.reserved and handover.expires_at <= now:
        return "the reservation has expired"
    return None


def plain_code(master_key: bytes, digits: int, locker_id: str, counter: int) -> str:
    return code_for(derive_locker_key(master_key, locker_id), counter, digits)


def _refusal(reason: str, detail: str, zh: str) -> Conflict:
    error = Conflict(detail)
    error.extra = {"reason": reason, "message_zh": zh, "message_en": detail}
    return error


def fetch_once(
    session: Session,
    handover_id: int,
    actor: str,
    owner: str | None,
    master_key: bytes,
    digits: int,
    now: datetime,
) -> CodeRelease:
    """The live code of a handover the caller may see (``owner``: its key, None for
    records:read:all), once per issued code; audited (``code.fetched``) and committed."""
    handover_service.get(session, handover_id, owner)  # 404 for what the key may not see
    handover = session.get(Handover, handover_id, with_for_update=True, populate_existing=True)
    counter = handover.code_counter
    why = why_not_live(handover, counter, now)
    if why is not None:
        raise _refusal("code-not-live", f"handover {handover_id}: {why}", "此开箱码当前不可用")
    taken = _refusal(
        "code-already-fetched",
        f"the code of handover {handover_id} (counter {counter}) was fetched already: each "
        "issued code is handed out once; a new code needs a reissue",
        "此开箱码已被获取过，每个开箱码只能获取一次",
    )
    if session.scalar(
        select(CodeFetch.id).where(
            CodeFetch.handover_id == handover_id, CodeFetch.counter == counter
        )
    ):
        raise taken
    try:
        # A savepoint: a concurrent fetch that committed first makes only this insert fail.
        with session.begin_nested():
            session.add(
                CodeFetch(
                    handover_id=handover_id, counter=counter, fetched_by=actor, fetched_at=now
                )
            )
    except IntegrityError:
        raise taken from None
    record = session.get(ApprovalRecord, handover.record_id)
    audit.append(
        session,
        actor,
        "code.fetched",
        f"handover:{handover_id}",
        {"counter": counter, "record": record.application_number, "kind": handover.kind},
    )
    session.commit()
    return CodeRelease(
        handover_id=handover_id,
        application_number=record.application_number,
        kind=handover.kind,
        locker_id=handover.locker_id,
        counter=counter,
        code=plain_code(master_key, digits, handover.locker_id, counter),
        expires_at=handover.expires_at,
    )
