"""What the lockers report and what the cloud tells them, for the staff dashboard: alarms,
ingested events, the commands sent with their outcomes, and a locker's runtime config."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import WithJsonSchema, field_validator
from sqlalchemy import select
from sqlmodel import Field, SQLModel

from cloud_api.api.deps import CurrentStaff, DbId, Limit, LockerIdPath, NowDep, Offset, SessionDep
from cloud_api.api.locker_sync import BridgeDep
from cloud_api.api.problems import problem_responses
from cloud_api.errors import Conflict, NotFound
from cloud_api.models.common import LockerId
from cloud_api.models.monitoring import (
    AlarmKind,
    AlarmPublic,
    LockerCommand,
    LockerEventPublic,
    LockerEventRecord,
)
from cloud_api.services import alarms, audit, codes, lockers
from cloud_api.services import staff as staff_service
from xinbao.contract import (
    RUNTIME_SETTINGS,
    CommandType,
    ContractError,
    check_runtime_settings,
)

router = APIRouter(prefix="/api/v1", tags=["monitoring"])


class CommandStatus(StrEnum):
    sent = "sent"  # published, no answer yet
    ok = "ok"
    failed = "failed"  # the locker refused, or it could not be published
    timeout = "timeout"  # no answer within XINBAO_MQTT_COMMAND_TIMEOUT_SECONDS


class LockerCommandPublic(SQLModel):
    request_id: str
    locker_id: str
    type: str
    issued_at: datetime
    expires_at: datetime
    status: str
    result: dict[str, Any] | None
    error: str | None
    replied_at: datetime | None
    remote_open_id: int | None


# xinbao.contract.RUNTIME_SETTINGS as a schema: the names, types and bounds a locker takes.
_SETTINGS_SCHEMA = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        name: {
            "type": "integer" if kind is int else "number",
            "minimum": low,
            "maximum": high,
        }
        for name, (kind, low, high) in RUNTIME_SETTINGS.items()
    },
}


class LockoutLiftRequest(SQLModel):
    reason: str = Field(default="", max_length=500)


class LockerConfigRequest(SQLModel):
    settings: Annotated[dict[str, Any], WithJsonSchema(_SETTINGS_SCHEMA)]

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            return check_runtime_settings(value)
        except ContractError as err:
            raise ValueError(str(err)) from None


@router.get("/alarms", response_model=list[AlarmPublic])
def list_alarms(
    staff: CurrentStaff,
    session: SessionDep,
    open: bool = False,
    locker_id: Annotated[LockerId | None, Query()] = None,
    offset: Offset = 0,
    limit: Limit = 100,
):
    """Newest first; ``open=true`` lists only alarms not cleared yet (door left open, door
    forced, door jammed, board unreachable, locker off line)."""
    return alarms.list_alarms(
        session, open_only=open, locker_id=locker_id, offset=offset, limit=limit
    )


@router.post("/alarms/{alarm_id}/ack", response_model=AlarmPublic, responses=problem_responses(409))
def acknowledge_alarm(alarm_id: DbId, staff: CurrentStaff, session: SessionDep, now: NowDep):
    """Staff have dealt with it: the alarm is cleared and the acknowledgement audited."""
    return alarms.acknowledge(session, alarm_id, f"staff:{staff.username}", now)


@router.get("/lockers/{locker_id}/events", response_model=list[LockerEventPublic])
def locker_events(
    locker_id: LockerIdPath,
    staff: CurrentStaff,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_seq: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
):
    """The events this locker sent, newest (highest seq) first."""
    lockers.get_locker(session, locker_id)
    query = select(LockerEventRecord).where(LockerEventRecord.locker_id == locker_id)
    if before_seq is not None:
        query = query.where(LockerEventRecord.seq < before_seq)
    rows = session.scalars(query.order_by(LockerEventRecord.seq.desc()).limit(limit))
    return [LockerEventPublic.model_validate(r, from_attributes=True) for r in rows]


@router.get("/commands", response_model=list[LockerCommandPublic])
def list_commands(
    staff: CurrentStaff,
    session: SessionDep,
    locker_id: Annotated[LockerId | None, Query()] = None,
    status: CommandStatus | None = None,
    type: CommandType | None = None,
    offset: Offset = 0,
    limit: Limit = 100,
):
    """Commands sent to lockers, newest first, with their outcome: ``ok`` or ``failed`` (the
    locker's reply, in ``result`` / ``error``), ``timeout``, or ``sent`` while waiting."""
    query = select(LockerCommand)
    if locker_id is not None:
        query = query.where(LockerCommand.locker_id == locker_id)
    if status is not None:
        query = query.where(LockerCommand.status == status.value)
    if type is not None:
        query = query.where(LockerCommand.type == type.value)
    rows = session.scalars(query.order_by(LockerCommand.id.desc()).offset(offset).limit(limit))
    return [LockerCommandPublic.model_validate(r, from_attributes=True) for r in rows]


@router.get("/commands/{request_id}", response_model=LockerCommandPublic)
def get_command(request_id: uuid.UUID, staff: CurrentStaff, session: SessionDep):
    found = session.scalar(select(LockerCommand).where(LockerCommand.request_id == str(request_id)))
    if found is None:
        raise NotFound(f"no command {request_id}")
    return LockerCommandPublic.model_validate(found, from_attributes=True)


@router.post(
    "/lockers/{locker_id}/config",
    response_model=LockerCommandPublic,
    status_code=201,
    responses=problem_responses(409),  # no MQTT link in this process
)
def configure_locker(
    locker_id: LockerIdPath,
    body: LockerConfigRequest,
    staff: CurrentStaff,
    session: SessionDep,
    bridge: BridgeDep,
):
    """Change runtime settings of one locker (``door_left_open_after_s``, ``poll_interval_s``,
    ``lockout_threshold``, each within its bounds): audited, sent as a signed ``config``
    command, and answered with the command once the locker replied or the command timeout
    passed (``status``). Needs an admin or a supervisor of the locker's site."""
    locker = lockers.get_locker(session, locker_id)
    staff_service.require_site_authority(staff, locker, "changing a locker's settings")
    session.commit()  # end the read: the wait below must not hold SQLite's write lock
    if bridge is None:
        raise Conflict("this API runs without MQTT (XINBAO_MQTT_URL unset): nothing can be sent")
    command = bridge.configure(locker_id, body.settings, f"staff:{staff.username}")
    return LockerCommandPublic.model_validate(command, from_attributes=True)


@router.post(
    "/lockers/{locker_id}/lockout/lift",
    response_model=LockerCommandPublic,
    status_code=201,
    responses=problem_responses(409),  # no MQTT link in this process
)
def lift_lockout(
    locker_id: LockerIdPath,
    body: LockoutLiftRequest,
    staff: CurrentStaff,
    session: SessionDep,
    bridge: BridgeDep,
    now: NowDep,
):
    """Lift a cabinet's lockouts (keypad and staff log-ins) after staff have looked: audited,
    sent as a signed ``lift_lockout`` command, answered once the locker replied (``result``
    names what was lifted) or the command timeout passed. The cloud's own code-check
    counter for the locker starts afresh too, and its open ``lockout`` alarm is cleared."""
    lockers.get_locker(session, locker_id)
    if bridge is None:
        raise Conflict("this API runs without MQTT (XINBAO_MQTT_URL unset): nothing can be sent")
    actor = f"staff:{staff.username}"
    codes.lift_lockout(session, locker_id, now, actor)
    cleared = alarms.clear_alarms(session, locker_id, AlarmKind.lockout, now)
    if cleared:
        audit.append(
            session, actor, "alarm.cleared", f"locker:{locker_id}", {"kind": "lockout"}
        )
    session.commit()  # end the write: the wait below must not hold SQLite's write lock
    command = bridge.lift_lockout(locker_id, actor, body.reason)
    return LockerCommandPublic.model_validate(command, from_attributes=True)
