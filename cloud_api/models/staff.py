"""Staff accounts and integrator API keys."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import BigInteger, Column, Integer
from sqlmodel import Field, SQLModel

from cloud_api.models.common import LockerId, ShortText, UtcDateTime, no_control, utcnow


class Role(StrEnum):
    """docs/api.md "Roles and sites". An admin covers every site; the others cover their
    ``site``, or every site when it is empty."""

    admin = "admin"  # accounts, API keys, and everything a supervisor may do, at every site
    supervisor = "supervisor"  # remote opens and locker settings at their site; daily work
    staff = "staff"  # daily work: loads, collections, recoveries, cancellations
    technician = "technician"  # reads lockers and alarms; maintenance opens at the cabinet


def _zero(big: bool = False) -> Column:
    return Column(BigInteger() if big else Integer(), nullable=False, default=0, server_default="0")


class Scope(StrEnum):
    records_write = "records:write"
    handovers_write = "handovers:write"
    lockers_write = "lockers:write"
    lockers_read = "lockers:read"
    # Read every integrator's records and handovers, not only the key's own (a supervising
    # system); it grants no writes to others' records.
    records_read_all = "records:read:all"
    # Fetch a live code once per issue (the integrator's personal centre), or receive it in
    # the code.issued webhook when the subscriber opted in (docs/integrators.md).
    codes_read = "codes:read"


class Staff(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    # The site this member works at (a locker's ``site``); None: every site.
    site: str | None = Field(default=None, max_length=200)
    password_hash: str = Field(max_length=200)
    # The dashboard's second factor; it never leaves the cloud (cabinets take staff passes,
    # xinbao.staff_pass).
    totp_secret: str | None = Field(default=None, max_length=64)
    totp_confirmed: bool = Field(default=False)
    # The TOTP time step (unix time // 30) of the last code accepted from this account: a code
    # is good for its whole window, so without this an onlooker could replay it (RFC 6238 5.2).
    totp_last_step: int | None = Field(default=None, sa_type=BigInteger)
    active: bool = Field(default=True)
    # Bearer tokens carry the generation they were issued in: raising it (log-out, password
    # change, deactivation, TOTP reset) ends every token issued before, at once.
    token_generation: int = Field(default=0, sa_column=_zero())
    # Staff passes: the next pass number, and the lowest still valid (cabinets get the floor
    # with the staff sync and refuse passes numbered below it).
    pass_counter: int = Field(default=0, sa_column=_zero(big=True))
    pass_floor: int = Field(default=0, sa_column=_zero(big=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


class LoginThrottle(SQLModel, table=True):
    """Failed log-ins per user name (known or not, so the throttle does not reveal which
    names exist), and the back-off they earned."""

    __tablename__ = "login_throttle"

    username: str = Field(primary_key=True, max_length=64)
    failures: int = Field(default=0)
    level: int = Field(default=0)
    locked_until: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


Username = ShortText


class StaffCreate(SQLModel):
    # In the OpenAPI document too: an administrator covers every site, so names none.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"role": {"const": "admin"}}, "required": ["role"]},
            "then": {"properties": {"site": {"type": "null"}}},
        }
    )

    username: str = PydanticField(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = PydanticField(min_length=10, max_length=200)
    role: Role = Role.staff
    site: ShortText | None = PydanticField(
        default=None, description="the site this member works at; omitted: every site"
    )


class StaffPublic(SQLModel):
    id: int
    username: str
    role: str
    site: str | None = None
    totp_enabled: bool
    active: bool


class PasswordChange(SQLModel):
    current_password: str = PydanticField(min_length=1, max_length=200)
    new_password: str = PydanticField(min_length=10, max_length=200)


class StaffPassRequest(SQLModel):
    locker_id: LockerId


class StaffPassIssued(SQLModel):
    locker_id: str
    staff_no: str = PydanticField(description="type this as the staff number at the kiosk")
    staff_pass: str = PydanticField(description="10 digits; shown only in this answer")
    number: int = PydanticField(description="the pass's number (a new pass gets the next)")
    valid_until: datetime = PydanticField(description="refused at the cabinet after this")


class LoginRequest(SQLModel):
    # No control characters: no account has them, and PostgreSQL refuses NUL in text.
    username: Annotated[str, AfterValidator(no_control)] = PydanticField(
        min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"
    )
    password: str = PydanticField(min_length=1, max_length=200)
    totp: str | None = PydanticField(default=None, max_length=10)


class TokenPublic(SQLModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime


class TotpEnrolment(SQLModel):
    provisioning_uri: str
    qr_svg: str


class TotpConfirm(SQLModel):
    code: str = PydanticField(min_length=1, max_length=10)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    key_digest: str = Field(max_length=64)
    scopes: str = Field(max_length=200, description="space-separated")
    active: bool = Field(default=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )
    rotated_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))


class ApiKeyCreate(SQLModel):
    name: ShortText
    scopes: list[Scope] = PydanticField(min_length=1, max_length=10)


class ApiKeyPublic(SQLModel):
    id: int
    name: str
    scopes: list[str]
    active: bool
    created_at: datetime
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, row: "ApiKey", **extra) -> "ApiKeyPublic":
        return cls(
            id=row.id,
            name=row.name,
            scopes=row.scopes.split(),
            active=row.active,
            created_at=row.created_at,
            rotated_at=row.rotated_at,
            revoked_at=row.revoked_at,
            **extra,
        )


class ApiKeyIssued(ApiKeyPublic):
    key: str = PydanticField(description="shown only once")
