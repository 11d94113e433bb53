"""Schemathesis against the app's own OpenAPI document with every check it has
(``not_a_server_error``, status code, content type, headers and body conformance, negative
data rejected, positive data accepted, missing required header, unsupported method, ignored
auth ...), over real HTTP (the app served by uvicorn in a thread, so the checks that send
requests of their own reach it too), with real credentials.

Each operation gets schema-valid and schema-violating examples, sent with an admin's bearer
token or an API key that has every scope (the one each database uses for each, ``_turn``:
over the two databases every operation meets both credentials in both modes), capped so a
database takes a minute or two; the operations are split over SHARDS tests so workers share
them. Locker calls carry the real locker key. The database is seeded with a record,
a reservation and a deposited pickup, so generated ids sometimes hit real rows.
"""

import itertools
import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode
from sqlmodel import Session, select

from cloud_api.models.staff import Role, Scope, Staff
from cloud_api.services import bootstrap
from tests.cloud_api.conftest import ADMIN_PASSWORD, login, reserve_dropoff
from tests.cloud_api.test_pickup import _approved, _deposit, _load
from tests.support.browser import serve, stop_serving

# Per generation mode and credential; raise it for a deeper run (XINBAO_FUZZ_EXAMPLES=50).
EXAMPLES_PER_OPERATION = int(os.environ.get("XINBAO_FUZZ_EXAMPLES", "5"))
# The operations are split over this many tests, so parallel workers share them.
SHARDS = 3

# Checks left out for one operation, each with its reason.
EXCUSED = {
    # A well-formed one-time code that is not the phone's is refused (422): the schema cannot
    # know the code the phone shows.
    ("POST", "/api/v1/staff/me/totp/confirm"): {"positive_data_acceptance"},
    # Compartment numbers (and board channels) must differ within a locker (422 otherwise):
    # JSON Schema cannot say that items differ in one property.
    ("POST", "/api/v1/lockers"): {"positive_data_acceptance"},
    # A CSV file's content (a header row naming the columns, then rows) cannot be said in
    # JSON Schema: a generated string is refused (422, reason no_header) as a whole.
    ("POST", "/api/v1/staff/records/import"): {"positive_data_acceptance"},
}


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


_KEYS = itertools.count()


def _send(case, base: str, http: requests.Session, credential: dict, locker: dict):
    negative_header = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    for name, value in list((case.headers or {}).items()):
        if name.lower() == "idempotency-key" and not negative_header and len(str(value)) < 180:
            # A client uses a new key per request; a key reused with another body is refused
            # (422), which the schema cannot know of. Still printable ASCII, still <= 200.
            case.headers[name] = f"{value}-{next(_KEYS)}"
    headers = dict(credential)
    if "LockerKey" in str(case.operation.definition.raw.get("security", "")):
        headers |= locker
    if negative_header:
        # The invalid header may be the credential itself: keep what schemathesis made.
        generated = {name.lower() for name in case.headers or {}}
        headers = {k: v for k, v in headers.items() if k.lower() not in generated}
    return case.call(base_url=base, session=http, headers=headers), headers


def _problem_body(case, response) -> None:
    """Beyond the schema: every error is a problem document with its status and a detail."""
    where = f"{case.method} {case.formatted_path}"
    if response.status_code >= 400:
        media_type = (response.headers.get("content-type") or [""])[0]
        assert media_type.startswith("application/problem+json"), (
            where,
            response.status_code,
            media_type,
            response.text[:300],
        )
        body = response.json()
        assert body["status"] == response.status_code and body["detail"], (where, body)


def _turn(engine, n: int, mode: GenerationMode, credentials: int) -> int:
    """Which credential operation ``n`` is fuzzed with in ``mode`` on this database. Both
    credentials may do everything, so input is judged alike under either; what differs is
    the code that admits the caller (roles or scopes), and each database covers one of the
    two for valid input, the other for invalid. Between the two databases every operation
    gets both credentials with valid input and both with invalid input."""
    first = engine.dialect.name == "sqlite"
    return (n + first + (mode is GenerationMode.NEGATIVE)) % credentials


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("shard", range(SHARDS), ids=lambda s: f"shard{s + 1}of{SHARDS}")
def test_the_api_conforms_to_its_schema_under_every_check(world, app, engine, shard):
    _seed(world)
    credentials = _credentials(world, engine)
    load_all_checks()
    every_check = CHECKS.get_all()
    assert len(every_check) >= 14, [c.__name__ for c in every_check]
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40, [f"{o.method} {o.path}" for o in operations]
    failures: list[str] = []
    statuses: dict[int, int] = {}
    server, thread, base = serve(app)
    http = requests.Session()

    def fuzz(operation, mode, credential) -> None:
        excused = EXCUSED.get((operation.method.upper(), operation.path), set())
        checks = [c for c in every_check if c.__name__ not in excused]

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # report, do not shrink: time
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(mode))
        def run(case):
            response, headers = _send(case, base, http, credential, world.locker_headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(
                response,
                checks=checks,
                headers=headers,
                transport_kwargs={"base_url": base, "session": http, "headers": headers},
            )
            _problem_body(case, response)

        run()

    try:
        for n, operation in enumerate(operations):
            if n % SHARDS != shard:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                for i, (label, credential) in enumerate(credentials.items()):
                    if i != _turn(engine, n, mode, len(credentials)):
                        continue
                    where = f"{operation.method.upper()} {operation.path}"
                    ending = label == "staff bearer" and where in SESSION_ENDING
                    if ending:
                        own = 2 * n + (mode is GenerationMode.NEGATIVE)
                        credential = _own_admin(world, engine, own)
                    try:
                        fuzz(operation, mode, credential)
                    except (AssertionError, BaseExceptionGroup) as err:
                        failures.append(f"{operation.label} {mode} with {label}: {err}")
                    except Unsatisfiable:
                        # Nothing in this operation can be made invalid (no parameters, no
                        # body): its positive examples cover it.
                        assert mode is GenerationMode.NEGATIVE, operation.label
                    if ending:
                        _restore_admin(world, engine, credentials["staff bearer"])
    finally:
        http.close()
        stop_serving(server, thread)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
    # The run exercised the API: many requests, and not only refusals (examples can be fewer
    # where a schema allows few values).
    print("statuses:", dict(sorted(statuses.items())))
    mine = len(operations[shard::SHARDS])
    assert sum(statuses.values()) > mine * 2 * 2, statuses
    assert sum(n for status, n in statuses.items() if status < 300) > mine // 2, statuses
