"""Every table of the service, imported here so that ``SQLModel.metadata`` (and alembic)
sees them all, including the SMS outbox owned by ``cloud_api.sms``."""

from cloud_api.models.audit import AuditEntry, AuditHead
from cloud_api.models.code_reissue import CodeReissue
from cloud_api.models.handover import Handover, HandoverKind, HandoverState
from cloud_api.models.idempotency import IdempotentRequest
from cloud_api.models.locker import Compartment, CompartmentState, Locker
from cloud_api.models.monitoring import Alarm, LockerCommand, LockerEventRecord, LockerLink
from cloud_api.models.rating import Rating
from cloud_api.models.record import ApprovalRecord, RecordStatus
from cloud_api.models.remote_open import RemoteOpenRequest
from cloud_api.models.staff import ApiKey, LoginThrottle, Role, Scope, Staff
from cloud_api.models.webhook import CodeFetch, WebhookEvent, WebhookSubscriber
from cloud_api.sms.models import SmsMessage

__all__ = [
    "ApiKey",
    "Alarm",
    "ApprovalRecord",
    "AuditEntry",
    "AuditHead",
    "CodeFetch",
    "CodeReissue",
    "Compartment",
    "CompartmentState",
    "Handover",
    "HandoverKind",
    "HandoverState",
    "IdempotentRequest",
    "Locker",
    "LockerCommand",
    "LoginThrottle",
    "LockerEventRecord",
    "LockerLink",
    "Rating",
    "RecordStatus",
    "RemoteOpenRequest",
    "Role",
    "Scope",
    "SmsMessage",
    "Staff",
    "WebhookEvent",
    "WebhookSubscriber",
]
