"""Creating the first accounts without the HTTP API (the demo, tests, a fresh install).

A fresh install names its first admin in the settings (``XINBAO_FIRST_ADMIN_USERNAME`` and
``_PASSWORD``; the app creates it at start if no account exists); the demo and the tests call
``create_staff`` and ``create_api_key`` directly. Everything after that goes through the API
(``POST /api/v1/staff``, ``POST /api/v1/api-keys``), so it is audited with the admin's name.
"""

from sqlalchemy import Engine, select
from sqlmodel import Session

from cloud_api.core.config import Settings
from cloud_api.models.staff import ApiKey, Role, Scope, Staff
from cloud_api.services import staff as staff_service


def ensure_first_admin(engine: Engine, settings: Settings) -> Staff | None:
    """Create the admin named in the settings if no staff account exists yet."""
    if settings.first_admin_username is None or settings.first_admin_password is None:
        return None
    with Session(engine, expire_on_commit=False) as session:
        if session.scalar(select(Staff.id).limit(1)) is not None:
            return None
        return staff_service.create_staff(
            session,
            settings.first_admin_username,
            settings.first_admin_password.get_secret_value(),
            Role.admin,
            "bootstrap",
        )


def create_staff(engine: Engine, username: str, password: str, role: Role = Role.staff) -> Staff:
    with Session(engine, expire_on_commit=False) as session:
        return staff_service.create_staff(session, username, password, role, "bootstrap")


def create_api_key(engine: Engine, name: str, scopes: list[Scope]) -> tuple[ApiKey, str]:
    with Session(engine, expire_on_commit=False) as session:
        return staff_service.create_api_key(session, name, scopes, "bootstrap")
