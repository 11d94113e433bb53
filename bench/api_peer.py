"""The yardstick of bench/api_bench.py: a plain FastAPI app doing the project's work.

Written the way FastAPI's tutorial writes an app ("SQL (Relational) Databases" with SQLModel,
"Security"): one ``create_engine(url)``, a ``get_session`` generator dependency, an API-key
dependency, plain ``def`` path operations with ``response_model``, ``HTTPException`` for
errors. No pre-ping, no middleware, no problem documents. Its pool is the project's size (10
connections and 20 more on demand): with the default 5 + 10, eight concurrent requests close
and reopen overflow connections all the time, a handicap that would flatter the project. On
SQLite it has the tutorial's ``check_same_thread=False`` plus the same WAL journal and busy
timeout as the project's database (the pysqlite default transactions: a BEGIN only before the
first write).

It does the same database work as the project's endpoints, on the same tables (the project's
table models are imported as the data shape; none of its engine, sessions, dependencies or
services are): the same paths, so one wrk script drives both apps. A drop-off locks the
record, checks it has no active drop-off, reads the locker's open alarms, claims a
compartment with a conditional UPDATE, allocates the code counter from the locker row, writes
the handover, the SMS outbox row and two chained audit entries, in one transaction; a code
check authenticates the locker, locks its row, finds the live handover by digest, redeems it
with a conditional UPDATE, saves the locker's lockout columns and appends two audit entries.

    DATABASE_URL=... python bench/api_peer.py PORT
"""

import hashlib
import hmac
import math
import os
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from sqlalchemy import and_, case, event, func, update
from sqlmodel import Session, create_engine, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud_api.models.audit import AuditEntry, AuditHead  # noqa: E402
from cloud_api.models.handover import CodeCheckResult, Handover, HandoverPublic  # noqa: E402
from cloud_api.models.locker import (  # noqa: E402
    Compartment,
    Locker,
    LockerDetail,
    LockerNearby,
    LockerPublic,
)
from cloud_api.models.monitoring import Alarm, LockerLink  # noqa: E402
from cloud_api.models.record import ApprovalRecord  # noqa: E402
from cloud_api.models.staff import ApiKey  # noqa: E402
from cloud_api.services.audit import current_key, entry_hash  # noqa: E402
from cloud_api.sms.models import SmsMessage  # noqa: E402
from xinbao.codes import code_digest, code_for, derive_locker_key  # noqa: E402

MASTER_SECRET = os.environ["XINBAO_MASTER_SECRET"].encode()
ACTIVE = ("reserved", "deposited", "overdue")

url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
if url.startswith("sqlite"):
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=10,
        max_overflow=20,
    )

    @event.listens_for(engine, "connect")
    def _wal(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
else:
    engine = create_engine(url, pool_size=10, max_overflow=20)


def get_session():
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
api_key_header = APIKeyHeader(name="X-API-Key")
locker_key_header = APIKeyHeader(name="X-Locker-Key")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def get_api_key(session: SessionDep, key: Annotated[str, Depends(api_key_header)]) -> ApiKey:
    _, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    row = session.get(ApiKey, int(key_id)) if key_id.isdigit() else None
    if row is None or not row.active or not hmac.compare_digest(row.key_digest, digest(secret)):
        raise HTTPException(status_code=401, detail="invalid API key")
    return row


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]
app = FastAPI()


@app.get("/constant")
def constant():
    return {"ok": True}


@app.get("/api/v1/_bench/lockers/{locker_id}")
def bare_locker(locker_id: str, session: SessionDep, api_key: ApiKeyDep):
    locker = session.get(Locker, locker_id)
    if not locker:
        raise HTTPException(status_code=404, detail="Locker not found")
    return {"id": locker.id}


def occupancy(session: Session, locker_ids: list[str]) -> dict[str, list[dict]]:
    free = func.sum(
        case((and_(Compartment.state == "free", ~Compartment.out_of_service), 1), else_=0)
    )
    rows = session.exec(
        select(Compartment.locker_id, Compartment.size, func.count(), free)
        .where(Compartment.locker_id.in_(locker_ids))
        .group_by(Compartment.locker_id, Compartment.size)
        .order_by(Compartment.locker_id, Compartment.size)
    )
    result: dict[str, list[dict]] = {i: [] for i in locker_ids}
    for locker_id, size, total, free_count in rows:
        result[locker_id].append({"size": size, "total": total, "free": int(free_count or 0)})
    return result


def public(locker: Locker, occupied: list[dict], link: LockerLink | None = None) -> dict:
    now = datetime.now(UTC)
    link_fields = {}
    if link:
        link_fields = {
            "online": link.online,
            "last_seen_at": link.last_seen_at,
            "outbox_depth": link.outbox_depth,
            "boards": link.boards or [],
        }
    return {
        **locker.model_dump(include={"id", "site", "address", "latitude", "longitude"}),
        **link_fields,
        "locked_out_until": locker.lockout_until
        if locker.lockout_until and locker.lockout_until > now
        else None,
        "occupancy": occupied,
    }


@app.get("/api/v1/lockers", response_model=list[LockerPublic])
def list_lockers(
    session: SessionDep,
    api_key: ApiKeyDep,
    offset: int = 0,
    limit: Annotated[int, Query(le=500)] = 100,
):
    lockers = session.exec(select(Locker).order_by(Locker.id).offset(offset).limit(limit)).all()
    ids = [locker.id for locker in lockers]
    occupied = occupancy(session, ids)
    links = {
        ln.locker_id: ln
        for ln in session.exec(select(LockerLink).where(LockerLink.locker_id.in_(ids)))
    }
    return [public(locker, occupied[locker.id], links.get(locker.id)) for locker in lockers]


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(a)))


@app.get("/api/v1/lockers/nearest", response_model=list[LockerNearby])
def nearest(
    session: SessionDep,
    api_key: ApiKeyDep,
    latitude: float,
    longitude: float,
    size: str = "M",
    limit: Annotated[int, Query(le=50)] = 5,
):
    with_space = session.exec(
        select(Locker)
        .join(Compartment, Compartment.locker_id == Locker.id)
        .where(Compartment.size == size, Compartment.state == "free", ~Compartment.out_of_service)
        .distinct()
    ).all()
    ranked = sorted(
        (distance_km(latitude, longitude, lk.latitude, lk.longitude), lk.id, lk)
        for lk in with_space
    )[:limit]
    occupied = occupancy(session, [lk.id for _, _, lk in ranked])
    return [{**public(lk, occupied[lk.id]), "distance_km": round(d, 3)} for d, _, lk in ranked]


@app.get("/api/v1/lockers/{locker_id}", response_model=LockerDetail)
def get_locker(locker_id: str, session: SessionDep, api_key: ApiKeyDep):
    locker = session.get(Locker, locker_id)
    if not locker:
        raise HTTPException(status_code=404, detail="Locker not found")
    compartments = session.exec(
        select(Compartment).where(Compartment.locker_id == locker_id).order_by(Compartment.number)
    ).all()
    return {
        **public(
            locker, occupancy(session, [locker_id])[locker_id], session.get(LockerLink, locker_id)
        ),
        "compartments": [c.model_dump() for c in compartments],
    }


def audit(session: Session, actor: str, action: str, subject: str, detail: dict) -> None:
    seq, prev = session.exec(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(last_seq=AuditHead.last_seq + 1)
        .returning(AuditHead.last_seq, AuditHead.last_hash)
    ).one()
    at = datetime.now(UTC)
    link = entry_hash(seq, at, actor, action, subject, detail, prev, current_key())
    session.exec(update(AuditHead).where(AuditHead.id == 1).values(last_hash=link))
    session.add(
        AuditEntry(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            subject=subject,
            detail=detail,
            prev_hash=prev,
            hash=link,
        )
    )


class DropoffRequest(BaseModel):
    application_number: str
    locker_id: str
    size: str = "M"


@app.post("/api/v1/handovers/dropoff", response_model=HandoverPublic, status_code=201)
def dropoff(body: DropoffRequest, session: SessionDep, api_key: ApiKeyDep):
    owner = f"api_key:{api_key.id}"
    record = session.exec(
        select(ApprovalRecord)
        .where(
            ApprovalRecord.application_number == body.application_number,
            ApprovalRecord.created_by == owner,
        )
        .with_for_update()
    ).first()
    if not record:
        raise HTTPException(status_code=404, detail="Record not found")
    if record.status != "prereview_passed":
        raise HTTPException(status_code=409, detail="Record not ready for a drop-off")
    active = session.exec(
        select(Handover.id).where(
            Handover.record_id == record.id, Handover.kind == "dropoff", Handover.state.in_(ACTIVE)
        )
    ).first()
    if active:
        raise HTTPException(status_code=409, detail="Record has an active drop-off")
    locker = session.get(Locker, body.locker_id)
    if not locker:
        raise HTTPException(status_code=404, detail="Locker not found")
    faulty = set(
        session.exec(
            select(Alarm.compartment).where(
                Alarm.locker_id == locker.id, Alarm.cleared_at.is_(None)
            )
        )
    )
    candidates = session.exec(
        select(Compartment.id, Compartment.number)
        .where(
            Compartment.locker_id == locker.id,
            Compartment.size == body.size,
            Compartment.state == "free",
            ~Compartment.out_of_service,
        )
        .order_by(Compartment.number)
    ).all()
    compartment = None
    for compartment_id, number in candidates:
        if number in faulty:
            continue
        claimed = session.exec(
            update(Compartment)
            .where(Compartment.id == compartment_id, Compartment.state == "free")
            .values(state="reserved")
        ).rowcount
        if claimed:
            compartment = session.get(Compartment, compartment_id)
            break
    if not compartment:
        raise HTTPException(status_code=409, detail="No free compartment")
    now = datetime.now(UTC)
    handover = Handover(
        ref=secrets.token_urlsafe(16),
        kind="dropoff",
        state="reserved",
        record_id=record.id,
        locker_id=locker.id,
        compartment_id=compartment.id,
        expires_at=now + timedelta(days=2),
        created_by=owner,
        created_at=now,
        updated_at=now,
        code_sent_at=now,
    )
    session.add(handover)
    session.flush()
    compartment.handover_id = handover.id
    counter = (
        session.exec(
            update(Locker)
            .where(Locker.id == locker.id)
            .values(next_code_counter=Locker.next_code_counter + 1)
            .returning(Locker.next_code_counter)
        ).scalar_one()
        - 1
    )
    key = derive_locker_key(MASTER_SECRET, locker.id)
    handover.code_counter = counter
    handover.code_digest = code_digest(key, code_for(key, counter))
    session.add(
        SmsMessage(
            dedupe_key=f"handover:{handover.id}:dropoff_code:c{counter}",
            to_number=record.mobile,
            template="dropoff_code",
            params={"locker_name": locker.site[:30], "expires_at": handover.expires_at.isoformat()},
            locker_id=locker.id,
            code_counter=counter,
            handover_id=handover.id,
        )
    )
    subject = f"handover:{handover.id}"
    audit(
        session,
        owner,
        "handover.reserved",
        subject,
        {
            "kind": "dropoff",
            "record": record.application_number,
            "locker": locker.id,
            "compartment": compartment.number,
        },
    )
    audit(session, owner, "code.issued", subject, {"counter": counter, "locker": locker.id})
    answer = {
        "application_number": record.application_number,
        "compartment_number": compartment.number,
    }
    session.commit()
    session.refresh(handover)
    return {**handover.model_dump(), **answer}


class CodeCheck(BaseModel):
    code: str


@app.post("/api/v1/lockers/{locker_id}/codes/check", response_model=CodeCheckResult)
def check_code(
    locker_id: str,
    body: CodeCheck,
    session: SessionDep,
    locker_key: Annotated[str, Depends(locker_key_header)],
):
    locker = session.get(Locker, locker_id)
    if not locker or not hmac.compare_digest(locker.key_digest, digest(locker_key)):
        raise HTTPException(status_code=401, detail="invalid locker key")
    locker = session.exec(select(Locker).where(Locker.id == locker_id).with_for_update()).one()
    now = datetime.now(UTC)
    if locker.lockout_until and locker.lockout_until > now:
        raise HTTPException(status_code=429, detail="Locked out")
    wanted = code_digest(derive_locker_key(MASTER_SECRET, locker_id), body.code)
    handover = session.exec(
        select(Handover).where(
            Handover.locker_id == locker_id,
            Handover.state.in_(ACTIVE),
            Handover.code_digest == wanted,
        )
    ).first()
    redeemed = (
        handover
        and session.exec(
            update(Handover)
            .where(Handover.id == handover.id, Handover.code_redeemed_at.is_(None))
            .values(code_redeemed_at=now, updated_at=now)
        ).rowcount
    )
    if not redeemed:
        session.exec(
            update(Locker)
            .where(Locker.id == locker_id)
            .values(failed_code_attempts=Locker.failed_code_attempts + 1)
        )
        audit(session, f"locker:{locker_id}", "code.refused", f"locker:{locker_id}", {})
        session.commit()
        return {"accepted": False}
    session.exec(
        update(Locker)
        .where(Locker.id == locker_id)
        .values(
            failed_code_attempts=locker.failed_code_attempts, lockout_state=locker.lockout_state
        )
    )
    compartment = session.get(Compartment, handover.compartment_id)
    actor = f"locker:{locker_id}"
    audit(
        session,
        actor,
        "code.accepted",
        f"handover:{handover.id}",
        {
            "handover": handover.id,
            "kind": handover.kind,
            "counter": handover.code_counter,
            "compartment": compartment.number,
        },
    )
    audit(
        session,
        actor,
        "door.opened",
        actor,
        {"compartment": compartment.number, "cause": "code", "handover": handover.id},
    )
    answer = {
        "accepted": True,
        "handover_id": handover.id,
        "kind": handover.kind,
        "compartment_number": compartment.number,
        "board": compartment.board,
        "channel": compartment.channel,
    }
    session.commit()
    return answer


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
