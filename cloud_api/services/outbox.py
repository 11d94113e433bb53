"""Staff actions on the SMS outbox (sending a dead or failed message again), and the audit
line of each delivery outcome."""

from sqlalchemy import update
from sqlmodel import Session

from cloud_api.errors import Conflict, NotFound
from cloud_api.services import audit
from cloud_api.sms.models import REQUEUEABLE_STATUSES, SmsMessage, SmsStatus, utcnow

_WHY_NOT = {
    SmsStatus.pending: "it is still queued",
    SmsStatus.sending: "it is being sent right now",
    SmsStatus.sent: "the provider has it already",
    SmsStatus.delivered: "it was delivered",
    SmsStatus.superseded: "it no longer applies (its code was replaced or its handover "
    "ended): ask for a code resend instead",
}


def requeue(session: Session, message_id: int, actor: str) -> SmsMessage:
    """Queue a dead, failed or undelivered message again, due now; its failures count afresh.

    The provider's sid of the earlier send stays on the row until the new one replaces it, so
    a late report about the old send is recognised and ignored (sms/routes.py).
    """
    message = session.get(SmsMessage, message_id, with_for_update=True)
    if message is None:
        raise NotFound(f"no SMS {message_id}")
    old = SmsStatus(message.status)
    if old not in REQUEUEABLE_STATUSES:
        raise Conflict(
            f"SMS {message_id} is '{old.value}': {_WHY_NOT.get(old, 'it cannot be requeued')}"
        )
    # The outbox's own clock, as enqueue_sms uses: the dispatcher compares with it.
    now = utcnow()
    session.execute(
        update(SmsMessage)
        .where(SmsMessage.id == message_id, SmsMessage.status == old.value)
        .values(
            status=SmsStatus.pending.value,
            failures=0,
            next_attempt_at=now,
            claimed_until=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    audit.append(
        session,
        actor,
        "sms.requeued",
        f"sms:{message_id}",
        {
            "from": old.value,
            "template": message.template,
            "handover": message.handover_id,
            "last_error": message.last_error,
        },
    )
    session.commit()
    session.refresh(message)
    return message


# The outcomes worth an audit line (and a webhook event): a retry going back to pending is not.
_AUDITED_STATUSES = frozenset(
    {
        SmsStatus.sent,
        SmsStatus.delivered,
        SmsStatus.failed,
        SmsStatus.undelivered,
        SmsStatus.dead,
        SmsStatus.superseded,
    }
)


def audit_status(
    session: Session, message: SmsMessage, status: str, error: str | None, actor: str
) -> None:
    """The dispatcher's and the delivery reports' status hook: ``sms.status`` in the
    transaction that records the status, so the integrators' ``sms.<status>`` webhook event is
    queued with it (cloud_api/webhooks/events.py). No number and no body: the integrator knows
    the record, and the body would hold the code."""
    if status not in _AUDITED_STATUSES:
        return
    detail = {"handover": message.handover_id, "template": message.template, "status": status}
    if error:
        detail["error"] = error
    audit.append(session, actor, "sms.status", f"sms:{message.id}", detail)
