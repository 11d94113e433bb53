"""The hash-chained audit trail (电子监察).

Each entry's hash covers its own fields and the previous entry's hash, as canonical JSON, so
changing, removing or reordering any entry breaks every link after it. Appends are serialised
on the single ``audit_head`` row: an UPDATE of that row takes its lock (PostgreSQL row lock,
SQLite write lock) before the new hash is computed, and the lock is held until commit, so the
entry commits together with the state change it records, or not at all.
"""

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import select, update
from sqlmodel import Session

from cloud_api.models.audit import AuditEntry, AuditHead
from cloud_api.models.common import utcnow

GENESIS_HASH = "0" * 64
_HEAD_ID = 1


def entry_hash(
    seq: int, at: datetime, actor: str, action: str, subject: str, detail: dict, prev_hash: str
) -> str:
    canonical = json.dumps(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "subject": subject,
            "detail": detail,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def append(
    session: Session, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None
) -> AuditEntry:
    """Add one entry to the chain inside the caller's transaction (not committed).

    Call it last in a transaction: the chain head stays locked until the commit.
    """
    # Round-trip through JSON so the hash covers exactly what the database will hand back.
    detail = json.loads(json.dumps(detail or {}, default=str))
    row = session.execute(
        update(AuditHead)
        .where(AuditHead.id == _HEAD_ID)
        .values(last_seq=AuditHead.last_seq + 1)
        .returning(AuditHead.last_seq, AuditHead.last_hash)
    ).one()
    seq, prev_hash = row
    at = utcnow()
    digest = entry_hash(seq, at, actor, action, subject, detail, prev_hash)
    session.execute(update(AuditHead).where(AuditHead.id == _HEAD_ID).values(last_hash=digest))
    entry = AuditEntry(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        subject=subject,
        detail=detail,
        prev_hash=prev_hash,
        hash=digest,
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str | None = None
    # The hash of the last entry of an intact chain: it vouches for every entry before it, so
    # an inspector who notes it can later tell whether anything up to there was changed.
    head_hash: str | None = None


def _entries(session: Session, batch: int = 1000) -> Iterator[AuditEntry]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def verify(session: Session) -> Verdict:
    """Walk the chain from the start; the first broken link and why, or ok."""
    prev_hash = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for entry in _entries(session):
        if entry.seq != expected_seq:
            return Verdict(False, checked, expected_seq, f"entry {expected_seq} is missing")
        if entry.prev_hash != prev_hash:
            return Verdict(False, checked, entry.seq, "prev_hash does not match the entry before")
        recomputed = entry_hash(
            entry.seq,
            entry.at,
            entry.actor,
            entry.action,
            entry.subject,
            entry.detail,
            entry.prev_hash,
        )
        if recomputed != entry.hash:
            return Verdict(False, checked, entry.seq, "content does not match its hash")
        prev_hash = entry.hash
        expected_seq += 1
        checked += 1
    head = session.get(AuditHead, _HEAD_ID)
    if head is None:
        return Verdict(False, checked, None, "the chain head row is missing")
    if head.last_seq != checked or head.last_hash != prev_hash:
        return Verdict(
            False,
            checked,
            checked + 1,
            f"the chain head says {head.last_seq} entries; entries after {checked} are missing",
        )
    return Verdict(True, checked, head_hash=prev_hash)


CSV_COLUMNS = ["seq", "at", "actor", "action", "subject", "detail", "prev_hash", "hash"]


@dataclass(frozen=True)
class Export:
    count: int
    head_hash: str  # the last exported entry's hash (the genesis hash for an empty trail)


def export_csv(session: Session, out: TextIO) -> Export:
    writer = csv.writer(out)
    head_hash = GENESIS_HASH
    writer.writerow(CSV_COLUMNS)
    count = 0
    for entry in _entries(session):
        writer.writerow(
            [
                entry.seq,
                entry.at.isoformat(timespec="microseconds"),
                entry.actor,
                entry.action,
                entry.subject,
                json.dumps(entry.detail, sort_keys=True, ensure_ascii=False),
                entry.prev_hash,
                entry.hash,
            ]
        )
        count += 1
        head_hash = entry.hash
    return Export(count, head_hash)
