"""Whether a queued SMS still says something true when the dispatcher gets to it.

A message is queued in the transaction that causes it, but sent later. Meanwhile its code may
have been replaced (the applicant asked for a resend), the reservation cancelled or expired,
the licence collected or recovered. Sending then would hand out a dead code or a stale
reminder, so the dispatcher asks ``why_obsolete`` first and marks such a row ``superseded``.

A small window remains: a resend that commits while the provider call is in flight cannot stop
that call. The code in that SMS is already dead, so the harm is a confusing message, not an
open door.
"""

from sqlalchemy.orm import Session

from cloud_api.models.handover import Handover, HandoverKind, HandoverState
from cloud_api.sms.models import SmsMessage

# Where each kind of handover has a code worth sending.
_CODE_STATES = {
    HandoverKind.dropoff.value: {HandoverState.reserved.value},
    HandoverKind.pickup.value: {HandoverState.deposited.value, HandoverState.overdue.value},
}


def why_obsolete(session: Session, message: SmsMessage) -> str | None:
    """The reason ``message`` must not be sent any more, or None if it still applies."""
    if message.handover_id is None:
        return None
    handover = session.get(Handover, message.handover_id)
    if handover is None:
        return f"handover {message.handover_id} does not exist"
    if message.code_counter is not None:
        return _code_obsolete(handover, message.code_counter)
    if message.template == "overdue" and handover.state != HandoverState.overdue.value:
        return f"the pickup is '{handover.state}' now, no longer overdue"
    return None


def _code_obsolete(handover: Handover, counter: int) -> str | None:
    if handover.code_counter != counter:
        return f"its code (counter {counter}) was replaced by counter {handover.code_counter}"
    if handover.state not in _CODE_STATES.get(handover.kind, set()):
        return f"the {handover.kind} is '{handover.state}': its code no longer works"
    if handover.code_redeemed_at is not None:
        return "its code was used already"
    if handover.code_digest is None:
        return "its code was revoked"
    return None
