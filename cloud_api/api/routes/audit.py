"""The audit trail for administrators and inspectors."""

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from cloud_api.api.deps import CurrentAdmin, Limit, SessionDep
from cloud_api.models.audit import AuditEntry, AuditEntryPublic
from cloud_api.models.common import MAX_INT
from cloud_api.services import audit

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", response_model=list[AuditEntryPublic])
def list_entries(
    admin: CurrentAdmin,
    session: SessionDep,
    after: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    limit: Limit = 100,
):
    rows = session.scalars(
        select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(limit)
    )
    return [AuditEntryPublic.model_validate(r, from_attributes=True) for r in rows]


@router.get("/verify")
def verify_chain(admin: CurrentAdmin, session: SessionDep) -> dict:
    verdict = audit.verify(session)
    return {
        "ok": verdict.ok,
        "checked": verdict.checked,
        "broken_seq": verdict.broken_seq,
        "reason": verdict.reason,
        "head_hash": verdict.head_hash,
    }
