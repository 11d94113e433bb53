"""Replies to commands: the outcome lands on the ``locker_command`` row, and for a remote
open on the request the staff member is watching."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import Session

from cloud_api.models.monitoring import LockerCommand
from cloud_api.models.remote_open import RemoteOpenRequest
from cloud_api.mqtt import staff_sync
from cloud_api.services import audit
from xinbao.contract import CommandReply, ContractError


@dataclass(frozen=True)
class ReplyOutcome:
    request_id: str
    status: str


def remote_open_outcome(ok: bool, result: dict[str, Any] | None, error: str | None):
    """(status, detail) of a remote open from the locker's reply."""
    if not ok:
        return "rejected", (error or "refused")[:300]
    outcome = (result or {}).get("outcome")
    if outcome in ("opened", "jammed", "no_response"):
        return outcome, None
    if outcome == "already_open":
        return "opened", "the door was already open"
    return "rejected", f"unexpected reply: {str(result)[:250]}"


def store_reply(engine: Engine, locker_id: str, raw: bytes, now: datetime) -> ReplyOutcome | None:
    """Put the locker's answer on its command row (and on the remote-open request it served);
    None if the command already had its answer."""
    reply = CommandReply.from_bytes(raw)
    rid = str(reply.request_id)
    with Session(engine, expire_on_commit=False) as session:
        command = session.scalar(
            select(LockerCommand).where(LockerCommand.request_id == rid).with_for_update()
        )
        if command is None or command.locker_id != locker_id:
            raise ContractError(f"locker {locker_id} answered a command not sent to it: {rid}")
        # A late reply still tells the truth about the door: it replaces "timeout".
        if command.status not in ("sent", "timeout"):
            return None
        command.status = "ok" if reply.ok else "failed"
        command.result = staff_sync.merge_reply(command.result, reply.result)
        command.error = (reply.error or "")[:300] or None
        command.replied_at = now
        if command.remote_open_id is not None:
            _close_remote_open(session, command, reply, now)
        session.commit()
        return ReplyOutcome(rid, command.status)


def _close_remote_open(
    session: Session, command: LockerCommand, reply: CommandReply, now: datetime
) -> None:
    status, detail = remote_open_outcome(reply.ok, reply.result, reply.error)
    request = session.get(RemoteOpenRequest, command.remote_open_id, with_for_update=True)
    if request is None:
        return
    late = request.status == "timeout"
    request.status = status
    request.detail = (f"reply after the timeout; {detail or ''}" if late else detail) or None
    request.finished_at = now
    audit.append(
        session,
        f"locker:{command.locker_id}",
        "door.remote_open",
        f"locker:{command.locker_id}",
        {
            "request": request.id,
            "compartment": request.compartment_number,
            "outcome": status,
            "detail": request.detail,
            "request_id": command.request_id,
        },
    )
