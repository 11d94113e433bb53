"""Small helpers shared by the cloud API tests."""

from sqlalchemy import Connection, text

from cloud_api.core.config import Settings
from xinbao.codes import code_for, derive_locker_key


def code_of(settings: Settings, locker_id: str, counter: int) -> str:
    """The code the applicant receives: what the locker and the SMS compute, never stored."""
    key = derive_locker_key(settings.master_key, locker_id)
    return code_for(key, counter, settings.code_digits)


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    for field in ("type", "title", "status", "detail", "instance"):
        assert field in body, body
    assert body["status"] == status
    return body


def drop_audit_guard(conn: Connection) -> None:
    """Drop the triggers that make ``audit_entry`` append-only (migration 0003), as an attacker
    with database administrator rights would before editing the trail. Only tests that check
    ``verify`` finds such tampering do this."""
    on = " ON audit_entry" if conn.dialect.name == "postgresql" else ""
    for name in ("audit_entry_no_update", "audit_entry_no_delete"):
        conn.execute(text(f"DROP TRIGGER {name}{on}"))
