"""Webhook events derived from audit entries, in the audit entry's own transaction.

``services.audit.append`` calls ``derive`` for every entry it writes. An action that maps to
an event type (``EVENT_TYPES``) is fanned out to the active subscribers whose integrator key
may read the entry's record (the key created it, or holds ``records:read:all``): one outbox
row each, committed with the entry and the state change it records, or not at all. So an
event is never sent for a change that rolled back, and no committed change misses its event.

The payload is a whitelist of the entry's detail, never the actor's name (staff user names
stay inside), and never a code: ``code.issued`` holds the locker and counter, from which the
delivery worker computes the code in memory if the subscriber opted in.
"""

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.models.audit import AuditEntry
from cloud_api.models.handover import Handover
from cloud_api.models.record import ApprovalRecord
from cloud_api.models.staff import ApiKey, Scope
from cloud_api.models.webhook import WebhookEvent, WebhookEventStatus, WebhookSubscriber

#: Audit action -> webhook event type. ``sms.status`` becomes ``sms.<status>`` (sms.sent,
#: sms.delivered, sms.failed, sms.undelivered, sms.dead, sms.superseded).
EVENT_TYPES: dict[str, str] = {
    "record.created": "record.created",
    "record.updated": "record.updated",
    "record.status": "record.status_changed",
    "handover.reserved": "handover.reserved",
    "handover.state": "handover.state_changed",
    "handover.compartment_moved": "handover.compartment_moved",
    "handover.compartment_reconciled": "handover.compartment_moved",
    "handover.deposited_after_end": "handover.deposited_after_end",
    "code.issued": "code.issued",
    "code.revoked": "code.revoked",
    # Written by the lost-code reissue (kiosk or dashboard); its new code has its own
    # code.issued entry, so this event carries no code.
    "code.reissued": "code.reissued",
    "sms.status": "sms.*",
    # Written by the satisfaction rating (data: handover_id, record_id, application_no,
    # score, scale, comment).
    "rating.submitted": "rating.created",
}

# The detail fields each action passes on (renamed where the audit name is terse). Anything
# else in the detail stays in the audit trail.
_FIELDS: dict[str, dict[str, str]] = {
    "record.created": {"status": "status"},
    "record.updated": {"fields": "fields"},
    "record.status": {"from": "from", "to": "to", "reason": "reason"},
    "handover.reserved": {"kind": "kind", "locker": "locker_id", "compartment": "compartment"},
    "handover.state": {"from": "from", "to": "to", "kind": "kind"},
    "handover.compartment_moved": {"from": "from", "to": "to", "reason": "reason"},
    "handover.compartment_reconciled": {"from": "from", "to": "to"},
    "handover.deposited_after_end": {"from": "from", "compartment": "compartment"},
    "code.issued": {"counter": "counter", "locker": "locker_id"},
    "code.revoked": {"counter": "counter", "reason": "reason"},
    "code.reissued": {"via": "via", "counter": "counter"},
    "sms.status": {"template": "template", "status": "status", "error": "error"},
    "rating.submitted": {"score": "score", "scale": "scale", "comment": "comment"},
}


def _actor_kind(actor: str) -> str:
    """Who caused it, as a kind only: an integrator, staff, a locker, the applicant, the
    system. Staff user names and other keys' ids are not the subscriber's business."""
    kind = actor.partition(":")[0]
    return {"api_key": "integrator", "staff": "staff", "locker": "locker"}.get(
        kind, "applicant" if actor == "applicant" else "system"
    )


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    return None


def _handover_id(entry: AuditEntry) -> int | None:
    kind, _, ident = entry.subject.partition(":")
    if kind == "handover":
        return _int(ident)
    for name in ("handover_id", "handover"):
        found = _int(entry.detail.get(name))
        if found is not None:
            return found
    return None


def _record(session: Session, entry: AuditEntry) -> tuple[ApprovalRecord | None, int | None]:
    """The record the entry is about, and its handover if it is about one."""
    kind, _, ident = entry.subject.partition(":")
    if kind == "record":
        record = session.scalar(
            select(ApprovalRecord).where(ApprovalRecord.application_number == ident)
        )
        return record, None
    handover_id = _handover_id(entry)
    if handover_id is not None:
        handover = session.get(Handover, handover_id)
        if handover is not None:
            return session.get(ApprovalRecord, handover.record_id), handover_id
    record_id = _int(entry.detail.get("record_id"))
    if record_id is not None:
        return session.get(ApprovalRecord, record_id), handover_id
    return None, handover_id


def event_type(entry: AuditEntry) -> str | None:
    mapped = EVENT_TYPES.get(entry.action)
    if mapped == "sms.*":
        status = entry.detail.get("status")
        return f"sms.{status}" if isinstance(status, str) and status.isidentifier() else None
    return mapped


def _data(entry: AuditEntry, handover_id: int | None) -> dict[str, Any]:
    fields = _FIELDS.get(entry.action, {})
    data = {out: entry.detail[name] for name, out in fields.items() if name in entry.detail}
    if handover_id is not None:
        data["handover_id"] = handover_id
    if entry.action == "sms.status":
        data["message_id"] = _int(entry.subject.partition(":")[2])
    return data


def may_read(key: ApiKey, record: ApprovalRecord) -> bool:
    """The records-visibility rule of the API (api/deps.py Principal.owner): a key reads the
    records it created, and every record with records:read:all."""
    if not key.active:
        return False
    return (
        Scope.records_read_all.value in key.scopes.split()
        or record.created_by == f"api_key:{key.id}"
    )


def derive(session: Session, entry: AuditEntry) -> int:
    """Queue the entry's webhook events in the caller's transaction; how many were queued."""
    kind = event_type(entry)
    if kind is None:
        return 0
    subscribers = session.execute(
        select(WebhookSubscriber.id, ApiKey)
        .join(ApiKey, ApiKey.id == WebhookSubscriber.api_key_id)
        .where(WebhookSubscriber.active.is_(True), ApiKey.active.is_(True))
        .order_by(WebhookSubscriber.id)
    ).all()
    if not subscribers:
        return 0
    record, handover_id = _record(session, entry)
    if record is None or record.id is None:
        return 0  # an event nobody could be allowed to see
    payload = {
        "record": {"application_number": record.application_number, "status": record.status},
        "actor": _actor_kind(entry.actor),
        "data": _data(entry, handover_id),
    }
    queued = 0
    for subscriber_id, key in subscribers:
        if not may_read(key, record):
            continue
        session.add(
            WebhookEvent(
                event_id=str(uuid.uuid4()),
                subscriber_id=subscriber_id,
                record_id=record.id,
                type=kind,
                audit_seq=entry.seq,
                occurred_at=entry.at,
                payload=payload,
                status=WebhookEventStatus.pending.value,
                next_attempt_at=entry.at,
                queued_at=entry.at,
            )
        )
        queued += 1
    return queued
