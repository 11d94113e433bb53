"""The MQTT contract between the cloud and the lockers (DESIGN.md section 5), defined once.

Both sides import these models; this module imports nothing of FastAPI, SQL or paho, so the
edge controller stays small. ``docs/mqtt.md`` describes the same contract for people.

Topics live under ``xinbao/v1/lockers/{locker_id}/``:

- ``events``    edge -> cloud, QoS 1, at least once from the edge outbox (cloud dedupes on id)
- ``presence``  retained ``online`` / ``offline`` (the last will)
- ``telemetry`` edge -> cloud, QoS 0
- ``commands``  cloud -> edge, QoS 1, never retained, HMAC-signed with the locker key
- ``replies``   edge -> cloud, one per command
"""

import hashlib
import hmac
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

TOPIC_ROOT = "xinbao/v1/lockers"
SHARED_GROUP = "cloud"
MAX_PAYLOAD_BYTES = 64 * 1024
LOCKER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

PRESENCE_ONLINE = b"online"
PRESENCE_OFFLINE = b"offline"


class ContractError(ValueError):
    """A message or topic does not follow the contract; the message is dropped."""


class CommandRejected(ContractError):
    """A command failed a security check; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str, request_id: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.request_id = request_id


class Channel(StrEnum):
    EVENTS = "events"
    PRESENCE = "presence"
    TELEMETRY = "telemetry"
    COMMANDS = "commands"
    REPLIES = "replies"


def check_locker_id(locker_id: str) -> str:
    # MQTT wildcards and separators in an id would let one locker's topics match another's.
    if not isinstance(locker_id, str) or not LOCKER_ID_RE.match(locker_id):
        raise ContractError(
            f"locker id {locker_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    return locker_id


def topic(locker_id: str, channel: Channel) -> str:
    return f"{TOPIC_ROOT}/{check_locker_id(locker_id)}/{Channel(channel).value}"


def shared_subscription(channel: Channel, group: str = SHARED_GROUP) -> str:
    """Topic filter with which several cloud processes split one channel of every locker."""
    return f"$share/{group}/{TOPIC_ROOT}/+/{Channel(channel).value}"


def parse_topic(name: str) -> tuple[str, Channel]:
    """``(locker_id, channel)`` of a concrete topic, or ContractError."""
    prefix = TOPIC_ROOT + "/"
    if not name.startswith(prefix):
        raise ContractError(f"topic {name!r} is not under {TOPIC_ROOT}/")
    parts = name[len(prefix) :].split("/")
    if len(parts) != 2:
        raise ContractError(f"topic {name!r} is not {TOPIC_ROOT}/<locker_id>/<channel>")
    try:
        channel = Channel(parts[1])
    except ValueError:
        raise ContractError(f"topic {name!r} names no known channel") from None
    return check_locker_id(parts[0]), channel


def canonical_json(obj: Any) -> bytes:
    """The one byte form that signatures are computed over (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _load_json_object(raw: bytes | str) -> dict[str, Any]:
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"payload of {len(raw)} bytes is over {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ContractError(f"payload is not JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ContractError("payload is not a JSON object")
    return obj


def _parse(model: type[BaseModel], obj: dict[str, Any]) -> Any:
    try:
        return model.model_validate(obj)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise ContractError(f"{model.__name__}: {where}: {first['msg']}") from None


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))


# --- events (edge -> cloud) ---------------------------------------------------------------


class EventType(StrEnum):
    UNLOCK_SENT = "unlock_sent"
    DOOR_OPENED = "door_opened"
    DOOR_JAMMED = "door_jammed"
    DOOR_CLOSED = "door_closed"
    DOOR_LEFT_OPEN = "door_left_open"
    DOOR_FORCED = "door_forced"
    ITEM_DETECTED = "item_detected"
    ITEM_REMOVED = "item_removed"
    BOARD_UNREACHABLE = "board_unreachable"
    BOARD_RECOVERED = "board_recovered"
    CODE_ACCEPTED = "code_accepted"
    CODE_REFUSED = "code_refused"
    LOCKOUT = "lockout"
    # One per lockout window when it ends or is lifted: how many guesses it refused
    # unchecked (they are counted, never sent one by one; xinbao/lockout.py).
    LOCKOUT_ENDED = "lockout_ended"
    DEPOSITED = "deposited"
    COLLECTED = "collected"
    STAFF_LOGIN = "staff_login"
    STAFF_ACTION = "staff_action"
    COMMAND_REJECTED = "command_rejected"
    # The applicant at the kiosk lost the code: application number and a keyed digest of
    # the mobile's last 4 digits (xinbao/lost_code.py); the cloud may send a new code.
    CODE_REISSUE_REQUESTED = "code_reissue_requested"


def deposit_placement(event: "LockerEvent") -> tuple[int | None, str | None]:
    """``(planned, deviation)`` of a ``deposited`` event (or a ``code_accepted`` /
    ``staff_action`` that opened the door): the compartment the cloud reserved and the
    allocation rule's reason word (``xinbao.allocation.Unusable``) when the cabinet used
    the event's compartment instead; ``(None, None)`` when it used the reserved one. Added
    in data without a version bump: an older peer ignores them (docs/mqtt.md)."""
    planned = event.data.get("planned")
    deviation = event.data.get("deviation")
    if isinstance(planned, bool) or not isinstance(planned, int) or not 1 <= planned <= 10_000:
        planned = None
    if not isinstance(deviation, str) or not deviation:
        deviation = None
    return planned, deviation[:32] if deviation else None


class LockerEvent(_Message):
    event_id: uuid.UUID
    seq: int = Field(ge=1, le=2**63 - 1)
    ts: AwareDatetime
    type: EventType
    compartment: int | None = Field(default=None, ge=1, le=10_000)
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> "LockerEvent":
        return _parse(cls, _load_json_object(raw))


# --- telemetry (edge -> cloud) ------------------------------------------------------------


class BoardHealthReport(_Message):
    bus: str
    address: int = Field(ge=0, le=255)
    reachable: bool
    consecutive_timeouts: int = Field(ge=0)


class Telemetry(_Message):
    ts: AwareDatetime
    version: str
    uptime_s: float = Field(ge=0)
    outbox_depth: int = Field(ge=0)
    boards: list[BoardHealthReport] = Field(default_factory=list)

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> "Telemetry":
        return _parse(cls, _load_json_object(raw))


# --- commands (cloud -> edge) -------------------------------------------------------------


class CommandType(StrEnum):
    UNLOCK = "unlock"
    SYNC_RESERVATIONS = "sync_reservations"
    STAFF_CREDENTIALS = "staff_credentials"
    CONFIG = "config"
    PING = "ping"
    LIFT_LOCKOUT = "lift_lockout"


class UnlockPayload(_Message):
    compartment: int = Field(ge=1, le=10_000)
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    staff_no: str | None = None


class Reservation(_Message):
    """A handover the locker must know to check its code off line (counter, never the code)."""

    handover_id: int = Field(ge=1)
    kind: Literal["dropoff", "pickup"]
    compartment: int | None = Field(default=None, ge=1, le=10_000)
    size: Literal["S", "M", "L"] | None = None
    counter: int = Field(ge=0)
    digits: int = Field(ge=6, le=10)
    expires_at: AwareDatetime | None = None
    state: Literal["reserved", "deposited", "overdue"]
    record_ref: str | None = None
    # Keyed digest of the last 4 digits of the mobile the code went to
    # (xinbao.lockout.mobile_digest): during a lockout the code opens with those digits.
    mobile_digest: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class Revocation(_Message):
    handover_id: int = Field(ge=1)
    reason: str = "revoked"


class EventMark(_Message):
    """The cloud holds every event of the locker up to ``seq`` (0: none yet); ``event_id`` is
    the id of event ``seq``, so a locker whose numbering restarted (a wiped controller) can
    tell that the mark is not about its events."""

    seq: int = Field(ge=0, le=2**63 - 1)
    event_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _id_with_seq(self) -> "EventMark":
        if (self.seq == 0) != (self.event_id is None):
            raise ValueError("event_id names event seq: give both, or seq 0 alone")
        return self


class ReservationSync(_Message):
    upserts: list[Reservation] = Field(default_factory=list)
    revocations: list[Revocation] = Field(default_factory=list)
    full: bool = False  # True: the upserts are the whole set; forget every other handover
    # With a full sync: what the cloud has stored of this locker's events. A broker's PUBACK
    # only says the broker has an event; this says the cloud has it (docs/mqtt.md).
    events_upto: EventMark | None = None


class CompartmentReport(_Message):
    """One compartment as the cabinet sees it (in the reply to a full sync)."""

    number: int = Field(ge=1, le=10_000)
    door_open: bool | None = None  # from the lock feedback; None: not read since the start
    occupied: bool = False  # what the controller believes is inside
    sensed: bool | None = None  # the occupancy sensor; None: the board has none (or unread)
    holds: int | None = Field(default=None, ge=1)  # the handover whose item it holds
    board_up: bool = True


class CabinetReport(_Message):
    """The cabinet's physical view, answered to every full sync as ``result.cabinet``, so
    the cloud can compare it with its own. ``seq``: the newest event the cabinet had
    recorded when it looked; the view reflects every event up to it."""

    seq: int = Field(ge=0, le=2**63 - 1)
    compartments: list[CompartmentReport] = Field(default_factory=list, max_length=10_000)

    @classmethod
    def from_result(cls, result: dict[str, Any] | None) -> "CabinetReport | None":
        """The report in a sync reply's result; None if there is none (an older locker) or
        it does not follow the contract."""
        found = (result or {}).get("cabinet")
        if not isinstance(found, dict):
            return None
        try:
            return cls.model_validate(found)
        except ValidationError:
            return None


class StaffEntry(_Message):
    """Who may log in at this cabinet with a staff pass (xinbao.staff_pass). No secret of the
    member's travels or is stored: the cabinet checks passes with its own locker key."""

    staff_no: Annotated[str, Field(min_length=1, max_length=32)]
    name: Annotated[str, Field(max_length=200)]
    roles: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=8)
    # Passes numbered below this are refused (a TOTP reset or a deactivation raised it).
    pass_floor: Annotated[int, Field(ge=0, le=2**62)] = 0


class StaffCredentials(_Message):
    staff: list[StaffEntry] = Field(max_length=100_000)


# What a locker lets the cloud change over the air (``config`` command): name -> (type,
# lowest, highest). The cloud refuses anything else before sending; the locker checks again.
RUNTIME_SETTINGS: dict[str, tuple[type, float, float]] = {
    "door_left_open_after_s": (float, 1.0, 86_400.0),
    "poll_interval_s": (float, 0.02, 60.0),
    # More than 10 wrong codes before a lockout gives guessers too many free tries.
    "lockout_threshold": (int, 1, 10),
}


def check_runtime_settings(settings: dict[str, Any]) -> dict[str, float | int]:
    """The settings converted to their types; ContractError naming the first bad one."""
    if not settings:
        raise ContractError("name at least one setting")
    checked: dict[str, float | int] = {}
    for name, value in settings.items():
        if name not in RUNTIME_SETTINGS:
            known = ", ".join(sorted(RUNTIME_SETTINGS))
            raise ContractError(f"unknown setting {str(name)[:64]!r} (known: {known})")
        kind, low, high = RUNTIME_SETTINGS[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ContractError(f"{name} must be a number")
        if not low <= value <= high or (kind is int and value != int(value)):
            raise ContractError(f"{name} must be {kind.__name__} in {low:g}..{high:g}")
        checked[name] = kind(value)
    return checked


class ConfigPayload(_Message):
    settings: dict[str, Any]


class PingPayload(_Message):
    pass


class LiftLockoutPayload(_Message):
    """Staff on the dashboard lift the cabinet's lockouts (keypad and staff log-ins)."""

    by: Annotated[str, Field(min_length=1, max_length=100)]
    reason: Annotated[str, Field(max_length=500)] = ""


PAYLOAD_MODELS: dict[CommandType, type[_Message]] = {
    CommandType.UNLOCK: UnlockPayload,
    CommandType.SYNC_RESERVATIONS: ReservationSync,
    CommandType.STAFF_CREDENTIALS: StaffCredentials,
    CommandType.CONFIG: ConfigPayload,
    CommandType.PING: PingPayload,
    CommandType.LIFT_LOCKOUT: LiftLockoutPayload,
}


class Command(_Message):
    request_id: uuid.UUID
    type: CommandType
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    payload: dict[str, Any]
    sig: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

    def parsed_payload(self) -> Any:
        return _parse(PAYLOAD_MODELS[self.type], self.payload)


def _signature(key: bytes, unsigned: dict[str, Any]) -> str:
    return hmac.new(key, canonical_json(unsigned), hashlib.sha256).hexdigest()


def sign_command(
    key: bytes,
    type: CommandType,
    payload: BaseModel,
    *,
    ttl: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
    request_id: uuid.UUID | None = None,
) -> Command:
    """A command for one locker, signed with that locker's key."""
    model = PAYLOAD_MODELS[CommandType(type)]
    if not isinstance(payload, model):
        raise TypeError(f"{type} takes a {model.__name__} payload")
    issued = now or datetime.now(UTC)
    unsigned = {
        "request_id": str(request_id or uuid.uuid4()),
        "type": CommandType(type).value,
        "issued_at": issued.isoformat(),
        "expires_at": (issued + ttl).isoformat(),
        "payload": payload.model_dump(mode="json"),
    }
    # Sign the exact JSON form that to_bytes() will put on the wire.
    draft = Command.model_validate({**unsigned, "sig": "0" * 64})
    wire = draft.model_dump(mode="json", exclude={"sig"})
    return draft.model_copy(update={"sig": _signature(key, wire)})


def verify_command(
    key: bytes,
    raw: bytes | str,
    *,
    now: datetime | None = None,
    retained: bool = False,
    max_clock_skew: timedelta = timedelta(minutes=2),
) -> Command:
    """Check a received command; raise CommandRejected (reason word + detail) if it fails.

    The signature is checked over the JSON object exactly as received (minus ``sig``), so a
    sender in another language only has to produce the same canonical form. Replay of a seen
    ``request_id`` is the caller's check: only it knows which ids it has seen.
    """
    try:
        obj = _load_json_object(raw)
    except ContractError as err:
        raise CommandRejected("malformed", str(err)) from None
    request_id = obj.get("request_id") if isinstance(obj.get("request_id"), str) else None
    if retained:
        raise CommandRejected("retained", "commands are never retained", request_id)
    sig = obj.pop("sig", None)
    if not isinstance(sig, str):
        raise CommandRejected("unsigned", "the command has no signature", request_id)
    if not hmac.compare_digest(_signature(key, obj).encode(), sig.encode()):
        raise CommandRejected("bad_signature", "the signature does not match", request_id)
    try:
        command = _parse(Command, {**obj, "sig": sig})
        command.parsed_payload()
    except ContractError as err:
        raise CommandRejected("malformed", str(err), request_id) from None
    moment = now or datetime.now(UTC)
    if command.expires_at <= moment:
        raise CommandRejected("expired", f"expired at {command.expires_at}", request_id)
    if command.issued_at > moment + max_clock_skew:
        raise CommandRejected("from_future", f"issued at {command.issued_at}", request_id)
    return command


class CommandReply(_Message):
    request_id: uuid.UUID
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None

    @model_validator(mode="after")
    def _result_or_error(self) -> "CommandReply":
        if self.ok and self.error is not None:
            raise ValueError("a successful reply carries no error")
        if not self.ok and not self.error:
            raise ValueError("a failed reply says what went wrong in 'error'")
        return self

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> "CommandReply":
        return _parse(cls, _load_json_object(raw))
