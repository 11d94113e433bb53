"""Staff actions on the SMS outbox (the listings live in cloud_api/sms/routes.py)."""

from fastapi import APIRouter

from cloud_api.api.deps import CurrentStaff, DbId, SessionDep
from cloud_api.services import outbox
from cloud_api.sms.models import SmsMessagePublic

router = APIRouter(prefix="/api/v1/sms/outbox", tags=["sms"])


@router.post("/{message_id}/requeue", response_model=SmsMessagePublic)
def requeue_message(message_id: DbId, staff: CurrentStaff, session: SessionDep):
    """Send a ``dead``, ``failed`` or ``undelivered`` message again (after fixing the number or
    the provider settings); audited. A code SMS whose code has since been replaced is marked
    ``superseded`` by the dispatcher instead of sent."""
    message = outbox.requeue(session, message_id, f"staff:{staff.username}")
    return SmsMessagePublic.model_validate(message, from_attributes=True)
