"""Approval records, for the approval system (API key with ``records:write``).

An integrator's key sees and changes only the records it created; another key's record is
answered as missing (404), so its existence is not revealed. ``records:read:all`` lets a key
read every record, and change none but its own. Staff see every record."""

from fastapi import APIRouter, Response

from cloud_api.api.deps import IdempotencyKey, NowDep, PolicyDep, RecordsWriter, SessionDep
from cloud_api.api.locker_sync import BridgeDep, sync_handover
from cloud_api.api.problems import problem_responses
from cloud_api.models.common import ApplicationNumber
from cloud_api.models.record import RecordCreate, RecordPublic, RecordTransition, RecordUpdate
from cloud_api.services import handovers, idempotency, records

router = APIRouter(prefix="/api/v1/records", tags=["records"])


@router.post(
    "",
    response_model=RecordPublic,
    status_code=201,
    responses={
        200: {"description": "the same record existed already"},
        **problem_responses(409),
    },
)
def create_record(
    body: RecordCreate,
    session: SessionDep,
    who: RecordsWriter,
    response: Response,
    idempotency_key: IdempotencyKey = None,
):
    """Create an approval record; an identical repeat answers 200 with the record. With an
    ``Idempotency-Key``, a repeat (even a concurrent one) gets the first answer."""

    def add() -> tuple[int, dict]:
        record, created = records.add(session, body, who.name)
        public = RecordPublic.model_validate(record, from_attributes=True)
        return (201 if created else 200), public.model_dump(mode="json")

    if not idempotency_key:
        status_code, answer = add()
        session.commit()
    else:
        body_hash = idempotency.request_hash(body.model_dump(mode="json"))
        stored = idempotency.at_most_once(session, who.name, idempotency_key, body_hash, add)
        status_code, answer = stored.status_code, stored.body
    response.status_code = status_code
    return answer


@router.put(
    "/{application_number}",
    response_model=RecordPublic,
    responses={201: {"description": "created", "model": RecordPublic}, **problem_responses(409)},
)
def put_record(
    application_number: ApplicationNumber,
    body: RecordUpdate,
    session: SessionDep,
    who: RecordsWriter,
    policy: PolicyDep,
    now: NowDep,
    response: Response,
    bridge: BridgeDep,
):
    """Create or update a record. A new mobile number revokes every code still out for the
    record and sends a new one to the new number (audited)."""
    record, created, reissued = handovers.update_record(
        session, policy, application_number, body, who.name, now, who.owner()
    )
    for handover in reissued:
        sync_handover(bridge, handover)  # the locker drops the old code
    response.status_code = 201 if created else 200
    return RecordPublic.model_validate(record, from_attributes=True)


@router.get("/{application_number}", response_model=RecordPublic)
def get_record(application_number: ApplicationNumber, session: SessionDep, who: RecordsWriter):
    """A record this key created (any record with ``records:read:all``)."""
    return RecordPublic.model_validate(
        records.by_number(session, application_number, owner=who.owner(reading=True)),
        from_attributes=True,
    )


@router.post(
    "/{application_number}/transitions",
    response_model=RecordPublic,
    responses=problem_responses(409),
)
def move_record(
    application_number: ApplicationNumber,
    body: RecordTransition,
    session: SessionDep,
    who: RecordsWriter,
    now: NowDep,
):
    record = records.transition_by_integrator(
        session, application_number, body.status, who.name, now, body.reason, who.owner()
    )
    return RecordPublic.model_validate(record, from_attributes=True)
