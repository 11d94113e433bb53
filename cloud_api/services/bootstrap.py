"""Creating the first accounts without the HTTP API (the demo, tests, a fresh install).

A fresh install names its first admin in the settings (``XINBAO_FIRST_ADMIN_USERNAME`` and
``_PASSWORD``; the app creates it at start if no account exists); the demo and the tests call
``create_staff`` and ``create_api_key`` directly. Everything after that goes through the API
(``POST /api/v1/staff``, ``POST /api/v1/api-keys``), so it is audited with the admin's name.
"""

from sqlalchemy import Engine, select
from sqlmodel import Session

from cloud_api.core.config import Settings
from cloud_api.errors import Conflict
from cloud_api.models.common import utcnow
from cloud_api.models.record import ApprovalRecord, RecordCreate, RecordStatus
from cloud_api.models.staff import ApiKey, Role, Scope, Staff
from cloud_api.services import records
from cloud_api.services import staff as staff_service


def ensure_first_admin(engine: Engine, settings: Settings) -> Staff | None:
    """Create the admin named in the settings if no staff account exists yet.

    Every API worker starts with this at once (``xinbao api --workers N``): the one whose
    insert loses to another's finds the account there and goes on (a failed start-up would
    make uvicorn stop every worker)."""
    if settings.first_admin_username is None or settings.first_admin_password is None:
        return None
    with Session(engine, expire_on_commit=False) as session:
        if session.scalar(select(Staff.id).limit(1)) is not None:
            return None
        try:
            return staff_service.create_staff(
                session,
                settings.first_admin_username,
                settings.first_admin_password.get_secret_value(),
                Role.admin,
                "bootstrap",
            )
        except Conflict:
            return None  # another worker created it a moment ago


def create_staff(engine: Engine, username: str, password: str, role: Role = Role.staff) -> Staff:
    with Session(engine, expire_on_commit=False) as session:
        return staff_service.create_staff(session, username, password, role, "bootstrap")


def create_api_key(engine: Engine, name: str, scopes: list[Scope]) -> tuple[ApiKey, str]:
    with Session(engine, expire_on_commit=False) as session:
        return staff_service.create_api_key(session, name, scopes, "bootstrap")


# The demo's records, so the dashboard's records page is not empty: (number, applicant,
# mobile, matter, the moves after creation). Console SMS only; nobody receives these.
_P, _D, _A = "prereview_passed", "documents_received", "approved"
DEMO_RECORDS = [
    ("XA-2026-0001", "王小明", "+8613800138001", "食品经营许可证", []),
    ("XA-2026-0002", "李华", "+8613800138002", "营业执照（变更登记）", [_P]),
    ("XA-2026-0003", "张伟", "+8613800138003", "药品经营许可证", [_P, _D]),
    ("XA-2026-0004", "欧阳娜娜", "+8613800138004", "建筑工程施工许可证", [_P, _D, _A]),
    ("XA-2026-0005", "陈静", "+8613800138005", "个体工商户营业执照", [_P, _D, _A]),
    ("XA-2026-0006", "赵敏", "+8613800138006", "卫生许可证", ["rejected"]),
    ("XA-2026-0007", "孙丽", "+8613800138007", "道路运输经营许可证", [_P, _D, _A, "collected"]),
]


def seed_demo_records(engine: Engine) -> int:
    """The demo's records in several states, through the same services (and audit trail) as
    the API, as the actor ``demo``; numbers that exist already are left alone. How many were
    added."""
    added = 0
    with Session(engine, expire_on_commit=False) as session:
        for number, applicant, mobile, matter, moves in DEMO_RECORDS:
            taken = select(ApprovalRecord.id).where(ApprovalRecord.application_number == number)
            if session.scalar(taken) is not None:
                continue
            body = RecordCreate(
                application_number=number,
                applicant_name=applicant,
                mobile=mobile,
                matter_name=matter,
            )
            record, _ = records.add(session, body, "demo")
            for status in moves:
                records.move(session, record, RecordStatus(status), "demo", utcnow())
            session.commit()
            added += 1
    return added
