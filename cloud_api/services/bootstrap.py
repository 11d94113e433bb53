"""Creating the first accounts without the HTTP API (the demo, tests, a fresh install).

    python -m cloud_api.services.bootstrap staff NAME --role admin   (password from stdin)
is available through ``xinbao`` too; these functions are what those commands call.
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
