"""Schemathesis against the app's own OpenAPI document, in process, with real credentials:
no request it can build, valid or not, gets a 5xx, and every error is a problem document.

Each operation gets schema-valid and schema-violating examples (capped, so a database takes
well under two minutes), sent once with an admin's bearer token and once with an API key that
has every scope; locker calls carry the real locker key. The database is seeded with a record,
a reservation and a deposited pickup, so generated ids sometimes hit real rows.
"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from sqlmodel import Session, select

from cloud_api.models.staff import Role, Scope, Staff
from cloud_api.services import bootstrap
from tests.cloud_api.conftest import ADMIN_PASSWORD, login, reserve_dropoff
from tests.cloud_api.test_pickup import _approved, _deposit, _load

# Per generation mode and credential; raise it for a deeper run (XINBAO_FUZZ_EXAMPLES=50).
EXAMPLES_PER_OPERATION = int(os.environ.get("XINBAO_FUZZ_EXAMPLES", "5"))
AUTH_HEADERS = {"authorization", "x-api-key", "x-locker-key"}


def _seed(world):
    reserve_dropoff(world)
    _approved(world, number="XA-P-1")
    _deposit(world, _load(world, number="XA-P-1"))


# Operations that end the caller's tokens (log-out, TOTP reset, password change): they get an
# admin of their own, so the shared admin token stays good for every other operation.
SESSION_ENDING = {
    "POST /api/v1/staff/logout",
    "POST /api/v1/staff/me/password",
    "POST /api/v1/staff/{staff_id}/totp/reset",
    "POST /api/v1/staff/{staff_id}/deactivate",
}


def _own_admin(world, engine, n: int) -> dict[str, str]:
    bootstrap.create_staff(engine, f"fuzz.admin.{n}", ADMIN_PASSWORD, Role.admin)
    return login(world.client, f"fuzz.admin.{n}", ADMIN_PASSWORD)


def _restore_admin(world, engine, headers: dict[str, str]) -> None:
    """The shared admin as it was (a generated id may have hit it: deactivated, or its TOTP
    reset and its tokens ended), with a fresh token in ``headers``."""
    with Session(engine) as session:
        admin = session.exec(select(Staff).where(Staff.username == "admin")).one()
        admin.active = True
        session.commit()
    headers.update(login(world.client, "admin", ADMIN_PASSWORD))


def _credentials(world, engine) -> dict[str, dict[str, str]]:
    _, key = bootstrap.create_api_key(engine, "fuzz: every scope", list(Scope))
    return {"staff bearer": world.admin_headers, "api key": {"X-API-Key": key}}


def _send(client, case, credential: dict[str, str], locker_headers: dict[str, str]):
    kwargs = case.as_transport_kwargs(base_url="")
    headers = {k: v for k, v in kwargs.pop("headers").items() if k.lower() not in AUTH_HEADERS}
    headers |= locker_headers if "x-locker-key" in {k.lower() for k in case.headers or {}} else {}
    headers |= credential
    kwargs.pop("cookies", None)
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")  # raw bytes, as schemathesis built them
    method, url = kwargs.pop("method"), kwargs.pop("url")
    return client.request(method, url, headers=headers, **kwargs)


def _check(case, response) -> None:
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, (where, response.status_code, response.text[:500])
    if response.status_code >= 400:
        media_type = response.headers.get("content-type", "")
        assert media_type.startswith("application/problem+json"), (
            where,
            response.status_code,
            media_type,
            response.text[:300],
        )
        body = response.json()
        assert body["status"] == response.status_code and body["detail"], (where, body)


@pytest.mark.timeout(3600)
def test_no_generated_request_gets_a_5xx(world, app, engine):
    _seed(world)
    credentials = _credentials(world, engine)
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40, [f"{o.method} {o.path}" for o in operations]
    failures: list[str] = []
    statuses: dict[int, int] = {}

    def fuzz(operation, mode, credential) -> None:
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # report, do not shrink: time
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(mode))
        def run(case):
            response = _send(world.client, case, credential, world.locker_headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            _check(case, response)

        run()

    for n, operation in enumerate(operations):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for label, credential in credentials.items():
                where = f"{operation.method.upper()} {operation.path}"
                ending = label == "staff bearer" and where in SESSION_ENDING
                if ending:
                    own = 2 * n + (mode is GenerationMode.NEGATIVE)
                    credential = _own_admin(world, engine, own)
                try:
                    fuzz(operation, mode, credential)
                except AssertionError as err:
                    failures.append(f"{mode} with {label}: {err}")
                except Unsatisfiable:
                    # Nothing in this operation can be made invalid (no parameters, no body):
                    # its positive examples cover it.
                    assert mode is GenerationMode.NEGATIVE, operation.label
                if ending:
                    _restore_admin(world, engine, credentials["staff bearer"])
    assert not failures, "\n".join(failures)
    # The run exercised the API: many requests, and not only refusals (examples can be fewer
    # where a schema allows few values).
    print("statuses:", dict(sorted(statuses.items())))
    assert sum(statuses.values()) > len(operations) * 2 * 2 * 2, statuses
    assert sum(n for status, n in statuses.items() if status < 300) > len(operations), statuses
