"""The data of bench/api_bench.py, written straight into a migrated database.

Both apps get the same shapes of data, each its own copy where a request uses data up (a
drop-off takes a record and a compartment, a code check redeems a code):

- ``city-{i}``: lockers both apps read (detail, nearest, the list), 40 compartments each,
  a quarter of them occupied;
- ``{side}-drop-{i}`` and records ``{side}-R{n}`` (pre-review passed, created by the side's
  API key): one drop-off each, spread over the lockers as a city's applicants would be;
- ``{side}-check-{i}``: lockers whose 40 compartments are reserved for drop-offs with live
  codes (counters 0..39, as the project issues them), each locker with its own key.
"""

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine, insert, select
from sqlmodel import Session

from cloud_api.models.common import utcnow
from cloud_api.models.handover import Handover
from cloud_api.models.locker import Compartment, Locker
from cloud_api.models.record import ApprovalRecord
from cloud_api.models.staff import Scope
from cloud_api.services import staff as staff_service
from xinbao.codes import code_digest, code_for, derive_locker_key

PER_LOCKER = 40
CITY_LOCKERS = 20
SCOPES = [Scope.records_write, Scope.handovers_write, Scope.lockers_write, Scope.lockers_read]


@dataclass
class Side:
    """What one app's requests need: its API key, its drop-off and check data."""

    name: str
    api_key: str = ""
    owner: str = ""
    dropoffs: list[tuple[str, str]] = field(default_factory=list)  # (record, locker)
    checks: list[tuple[str, str, str]] = field(default_factory=list)  # (locker, key, code)


def _locker(locker_id: str, lat: float, lon: float, key: str, counter: int = 0) -> dict:
    return {
        "id": locker_id,
        "site": "基准测试 " + locker_id,
        "address": "loopback",
        "latitude": lat,
        "longitude": lon,
        "key_digest": hashlib.sha256(key.encode()).hexdigest(),
        "next_code_counter": counter,
        "failed_code_attempts": 0,
        "lockout_level": 0,
        "created_at": utcnow(),
    }


def _compartments(locker_id: str, state: str = "free", occupied_every: int = 0) -> list[dict]:
    return [
        {
            "locker_id": locker_id,
            "number": k + 1,
            "size": "M" if k % 4 else "S",
            "board": k // 24,
            "channel": k % 24 + 1,
            "state": "occupied" if occupied_every and k % occupied_every == 0 else state,
            "out_of_service": False,
        }
        for k in range(PER_LOCKER)
    ]


def _record(number: str, owner: str, status: str) -> dict:
    now = utcnow()
    return {
        "application_number": number,
        "applicant_name": "测试",
        "mobile": "+8613800138000",
        "matter_name": "bench",
        "status": status,
        "created_by": owner,
        "created_at": now,
        "updated_at": now,
    }


def seed(engine: Engine, master_secret: bytes, dropoffs: int, checks: int) -> list[Side]:
    """The city lockers, then for each side (project, peer) ``dropoffs`` records to drop off
    and ``checks`` live codes. Drop-offs ask for size M, 30 of each locker's 40 compartments."""
    sides = [Side("project"), Side("peer")]
    with Session(engine) as session:
        session.execute(
            insert(Locker),
            [
                _locker(f"city-{i}", 34.2 + i / 50, 108.9 + (i % 5) / 50, secrets.token_hex(16))
                for i in range(CITY_LOCKERS)
            ],
        )
        session.execute(
            insert(Compartment),
            [c for i in range(CITY_LOCKERS) for c in _compartments(f"city-{i}", occupied_every=4)],
        )
        for side in sides:
            key_row, side.api_key = staff_service.create_api_key(
                session, f"bench {side.name}", SCOPES, "bootstrap"
            )
            side.owner = f"api_key:{key_row.id}"
            _seed_dropoffs(session, side, dropoffs)
            _seed_checks(session, side, checks, master_secret)
        session.commit()
    return sides


def _seed_dropoffs(session: Session, side: Side, count: int) -> None:
    lockers = -(-count // 30)  # 30 size-M compartments per locker
    session.execute(
        insert(Locker),
        [
            _locker(f"{side.name}-drop-{i}", 34.0 - i / 100, 109.2, secrets.token_hex(16))
            for i in range(lockers)
        ],
    )
    session.execute(
        insert(Compartment),
        [c for i in range(lockers) for c in _compartments(f"{side.name}-drop-{i}")],
    )
    numbers = [f"{side.name}-R{n}" for n in range(count)]
    session.execute(
        insert(ApprovalRecord), [_record(n, side.owner, "prereview_passed") for n in numbers]
    )
    side.dropoffs = [
        (number, f"{side.name}-drop-{n % lockers}") for n, number in enumerate(numbers)
    ]


def _seed_checks(session: Session, side: Side, count: int, master_secret: bytes) -> None:
    lockers = -(-count // PER_LOCKER)
    keys = [secrets.token_urlsafe(24) for _ in range(lockers)]
    ids = [f"{side.name}-check-{i}" for i in range(lockers)]
    session.execute(
        insert(Locker),
        [_locker(lid, 35.0, 110.0, keys[i], PER_LOCKER) for i, lid in enumerate(ids)],
    )
    session.execute(insert(Compartment), [c for lid in ids for c in _compartments(lid, "reserved")])
    session.execute(
        insert(ApprovalRecord),
        [
            _record(f"{side.name}-C{n}", side.owner, "prereview_passed")
            for n in range(lockers * PER_LOCKER)
        ],
    )
    record_ids = dict(
        session.execute(
            select(ApprovalRecord.application_number, ApprovalRecord.id).where(
                ApprovalRecord.application_number.like(f"{side.name}-C%")
            )
        ).all()
    )
    compartment_ids = {
        (lid, number): cid
        for lid, number, cid in session.execute(
            select(Compartment.locker_id, Compartment.number, Compartment.id).where(
                Compartment.locker_id.in_(ids)
            )
        )
    }
    now = utcnow()
    rows, codes = [], {}
    for i, lid in enumerate(ids):
        locker_key = derive_locker_key(master_secret, lid)
        for counter in range(PER_LOCKER):
            code = code_for(locker_key, counter)
            codes[(lid, counter)] = code
            rows.append(
                {
                    "ref": secrets.token_urlsafe(16),
                    "kind": "dropoff",
                    "state": "reserved",
                    "record_id": record_ids[f"{side.name}-C{i * PER_LOCKER + counter}"],
                    "locker_id": lid,
                    "compartment_id": compartment_ids[(lid, counter + 1)],
                    "code_counter": counter,
                    "code_digest": code_digest(locker_key, code),
                    "expires_at": now + timedelta(days=2),
                    "created_by": side.owner,
                    "created_at": now,
                    "updated_at": now,
                    "resend_count": 0,
                    "reminders_sent": 0,
                }
            )
    session.execute(insert(Handover), rows)
    # One check per code, spread over the lockers (checks at one locker run one at a time).
    side.checks = [
        (ids[n % lockers], keys[n % lockers], codes[(ids[n % lockers], n // lockers)])
        for n in range(lockers * PER_LOCKER)
    ][:count]
