"""Approval records for staff on the dashboard: search, open, create by hand, move (approve,
reject, ...) and import a CSV batch of finished licences.

The roles that do daily work (admin, supervisor, staff) search, open, create and move
records; importing a batch needs a supervisor or an admin; a technician gets 403 for all of
it (``services.staff.RECORD_WORK``). Records are not site-scoped (docs/security.md). A move
obeys exactly the integrators' rules (``records.transition_by_integrator``): the same table,
the '*_in_locker' states left to the lockers, no reject while a handover is active. Every
change is audited with the staff member as the actor.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from cloud_api.api.deps import CurrentStaff, NowDep, Offset, SessionDep
from cloud_api.api.problems import problem_responses
from cloud_api.models.common import ApplicationNumber
from cloud_api.models.record import RecordCreate, RecordPublic, RecordStatus, RecordTransition
from cloud_api.models.staff import Staff
from cloud_api.services import record_import, records
from cloud_api.services import staff as staff_service
from cloud_api.web.records import RecordDetail, RecordPage, detail, search
from cloud_api.web.routes import SearchText

router = APIRouter(prefix="/api/v1/staff/records", tags=["staff"])


async def get_record_staff(staff: CurrentStaff) -> Staff:
    staff_service.require_record_work(staff)
    return staff


RecordStaff = Annotated[Staff, Depends(get_record_staff)]
MobileTail = Annotated[
    str | None,
    Query(pattern=r"^[0-9]{1,11}$", description="the last digits of the applicant's mobile"),
]


@router.get("", response_model=RecordPage)
def search_records(
    staff: RecordStaff,
    session: SessionDep,
    q: SearchText = None,
    mobile: MobileTail = None,
    status: RecordStatus | None = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 25,
):
    """Records matching every filter given, most recently changed first, one page at a
    time (``total`` counts every page)."""
    text = q.strip() if q else None
    return search(session, status, text or None, mobile, offset, limit)


@router.post(
    "",
    response_model=RecordPublic,
    status_code=201,
    responses={200: {"description": "the same record existed already"}, **problem_responses(409)},
)
def create_record(body: RecordCreate, staff: RecordStaff, session: SessionDep, response: Response):
    """A record typed in by hand (an application that reached the centre on paper); an
    identical repeat answers 200 with the record, one with other details 409. Audited."""
    record, created = records.create(session, body, f"staff:{staff.username}")
    response.status_code = 201 if created else 200
    return RecordPublic.model_validate(record, from_attributes=True)


# The body is read by hand (size limit, encoding checked on the bytes), so it is declared here.
_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "UTF-8 (a BOM is fine), header row: application_number, applicant, "
        "mobile, matter (or 申请编号, 申请人, 手机号, 事项)",
    }
}


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > record_import.MAX_BYTES:
            break  # enough to know: the rest is never read into memory
    return bytes(body)


@router.post(
    "/import",
    response_model=record_import.ImportReport,
    openapi_extra=_CSV_BODY,
    responses=problem_responses(409, 413),
)
async def import_records(staff: CurrentStaff, request: Request, session: SessionDep, now: NowDep):
    """A CSV batch of finished licences: each row's record is created ``approved``, moved to
    ``approved``, left ``unchanged`` (already approved or past it, same details) or refused
    with its reason; one transaction for the batch (docs/staff.md). A broken file (over
    1 MB, not UTF-8, not CSV, no header) is refused whole (413/422 with ``reason``) and
    changes nothing. Needs a supervisor or an admin."""
    staff_service.require_record_import(staff)
    data = await _read_body(request)
    # The import reads and writes the database: off the event loop.
    return await run_in_threadpool(
        record_import.import_csv, session, data, f"staff:{staff.username}", now
    )


@router.get("/{application_number}", response_model=RecordDetail)
def open_record(application_number: ApplicationNumber, staff: RecordStaff, session: SessionDep):
    """One record with its handovers, its audit trail (the record's and its handovers'
    entries, newest first) and ``moves``: the states it may be moved to now."""
    return detail(session, application_number)


@router.post(
    "/{application_number}/transitions",
    response_model=RecordDetail,
    responses=problem_responses(409),
)
def move_record(
    application_number: ApplicationNumber,
    body: RecordTransition,
    staff: RecordStaff,
    session: SessionDep,
    now: NowDep,
):
    """Approve, reject, ... with the integrators' rules exactly (409 ``illegal-transition``
    naming both states otherwise, or a conflict while a handover is active); audited with
    the staff member and the reason."""
    records.transition_by_integrator(
        session, application_number, body.status, f"staff:{staff.username}", now, body.reason
    )
    return detail(session, application_number)
