"""The keyed, hash-chained audit trail (电子监察).

Each entry's hash is an HMAC-SHA256, under the audit key, of its own fields and the previous
entry's hash, as canonical JSON, so changing, removing or reordering any entry breaks every
link after it, and no one without the key can compute a new chain. The key comes from the
settings (``XINBAO_AUDIT_KEY``, else derived from ``XINBAO_MASTER_SECRET``), never from the
database: someone who can write the tables cannot re-chain a rewritten tail so that it
verifies. Entries written before the chain was keyed (``audit_head.keyed_from``, set by
migration 0007) keep their plain SHA-256 links and are reported as unkeyed.

A database writer can still cut the tail off and move the head back. Signed head checkpoints
(``write_checkpoint``: seq, hash, HMAC under a key derived from the audit key), appended to a
file outside the database, catch that: ``verify(..., checkpoints=...)`` requires every
checkpointed entry to be there with the hash the checkpoint recorded.

Appends are serialised on the single ``audit_head`` row: an UPDATE of that row takes its lock
(PostgreSQL row lock, SQLite write lock) before the new hash is computed, and the lock is held
until commit, so the entry commits together with the state change it records, or not at all.
The webhook events an entry maps to (cloud_api.webhooks.events) are queued in that transaction
too.
"""

import asyncio
import contextlib
import csv
import fcntl
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from cloud_api.core.db import snapshot
from cloud_api.models.audit import AuditEntry, AuditHead
from cloud_api.models.common import utcnow
from cloud_api.webhooks import events as webhook_events

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
_HEAD_ID = 1
CHECKPOINT_VERSION = 1

# The process's audit key (create_app and the CLI set it from the settings, use_key). The
# default is the demo master secret's key: a process that never configured one (a test that
# calls the services directly) still writes a chain the demo settings verify.
_key: bytes | None = None


def use_key(key: bytes) -> None:
    global _key
    if len(key) < 16:
        raise ValueError("the audit key must be at least 16 bytes")
    _key = key


def current_key() -> bytes:
    if _key is None:
        from cloud_api.core.config import Settings

        use_key(Settings(demo=True).audit_key())
    assert _key is not None
    return _key


def _checkpoint_key(key: bytes) -> bytes:
    return hmac.new(key, b"xinbao/audit-checkpoint/v1", hashlib.sha256).digest()


def entry_hash(
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    detail: dict,
    prev_hash: str,
    key: bytes | None = None,
) -> str:
    """The entry's link: HMAC-SHA256 under ``key``, or plain SHA-256 (``key=None``) for the
    entries written before the chain was keyed."""
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
    if key is None:
        return hashlib.sha256(canonical.encode()).hexdigest()
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


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
    digest = entry_hash(seq, at, actor, action, subject, detail, prev_hash, current_key())
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
    # The integrators' webhook events for this entry, in this same transaction (docs/
    # integrators.md): committed with the change they report, or not at all.
    webhook_events.derive(session, entry)
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
    # Entries before the chain was keyed (plain SHA-256 links: a database writer could
    # rewrite them and re-chain up to the first keyed entry; checkpoints still pin them).
    unkeyed: int = 0
    checkpoints: int = 0  # checkpoints checked


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


def verify(
    session: Session, *, key: bytes | None = None, checkpoints: list["Checkpoint"] | None = None
) -> Verdict:
    """Walk the chain from the start; the first broken link and why, or ok. ``checkpoints``
    (read_checkpoints): each checkpointed entry must still be there with the recorded hash,
    so a cut-off tail or a rewritten, re-chained one is caught even with the head moved.

    The head and the entries are read in one snapshot, on a connection of its own from the
    session's engine: read a statement at a time, an entry appended between reading the head
    and walking the entries made a sound chain look cut (the model walk's soak found it)."""
    with snapshot(session.get_bind()) as seen:
        return _verify(seen, key or current_key(), checkpoints)


def _verify(session: Session, key: bytes, checkpoints: list["Checkpoint"] | None) -> Verdict:
    head = session.get(AuditHead, _HEAD_ID)
    if head is None:
        return Verdict(False, 0, None, "the chain head row is missing")
    keyed_from = head.keyed_from
    pinned = {c.seq: c for c in checkpoints or []}
    for c in pinned.values():
        if c.keyed_from != keyed_from:
            return Verdict(
                False,
                0,
                None,
                f"the chain head says entries are keyed from {keyed_from}, the checkpoint of "
                f"entry {c.seq} says from {c.keyed_from}",
            )
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
            key if entry.seq >= keyed_from else None,
        )
        if not hmac.compare_digest(recomputed, entry.hash):
            return Verdict(
                False,
                checked,
                entry.seq,
                "content does not match its hash (or this is not the deployment's audit key)",
            )
        pin = pinned.get(entry.seq)
        if pin is not None and pin.hash != entry.hash:
            return Verdict(
                False, checked, entry.seq, "the entry differs from its signed checkpoint"
            )
        prev_hash = entry.hash
        expected_seq += 1
        checked += 1
    beyond = [seq for seq in pinned if seq > checked]
    if beyond:
        return Verdict(
            False,
            checked,
            checked + 1,
            f"a signed checkpoint vouches for entry {max(beyond)}; entries after {checked} "
            "are missing (the tail was cut off)",
        )
    if head.last_seq != checked or head.last_hash != prev_hash:
        return Verdict(
            False,
            checked,
            checked + 1,
            f"the chain head says {head.last_seq} entries; entries after {checked} are missing",
        )
    return Verdict(
        True,
        checked,
        head_hash=prev_hash,
        unkeyed=min(checked, keyed_from - 1),
        checkpoints=len(pinned),
    )


# --- checkpoints: the head, signed, outside the database -----------------------------------


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted (unreadable, malformed or not signed with
    this deployment's key)."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    keyed_from: int
    at: str

    def _unsigned(self) -> dict[str, Any]:
        return {
            "v": CHECKPOINT_VERSION,
            "seq": self.seq,
            "hash": self.hash,
            "keyed_from": self.keyed_from,
            "at": self.at,
        }

    def line(self, key: bytes) -> str:
        body = self._unsigned()
        body["mac"] = _checkpoint_mac(key, body)
        return json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"


def _checkpoint_mac(key: bytes, unsigned: dict[str, Any]) -> str:
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(_checkpoint_key(key), canonical, hashlib.sha256).hexdigest()


def head_checkpoint(session: Session) -> Checkpoint | None:
    """The committed head as a checkpoint; None for an empty trail."""
    head = session.get(AuditHead, _HEAD_ID)
    if head is None or head.last_seq == 0:
        return None
    return Checkpoint(head.last_seq, head.last_hash, head.keyed_from, utcnow().isoformat())


def write_checkpoint(
    session: Session, path: Path, key: bytes | None = None, *, only_if_newer: bool = False
) -> Checkpoint | None:
    """Append the signed head to ``path`` (created 0600; only ever appended to, O_APPEND, one
    write per line, fsync'd, under an exclusive lock on the file). None if nothing was
    written: the trail is empty, or ``only_if_newer`` and the head is not past the file's
    last checkpoint (several API workers append to one file: one line per change, never an
    older head after a newer one)."""
    checkpoint = head_checkpoint(session)
    if checkpoint is None:
        return None
    data = checkpoint.line(key or current_key()).encode()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        if only_if_newer:
            last = _last_checkpointed_seq(fd)
            if last is not None and last >= checkpoint.seq:
                return None
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return checkpoint


def _last_checkpointed_seq(fd: int) -> int | None:
    """The seq of the file's last line (None: empty, or not a checkpoint: then write)."""
    size = os.fstat(fd).st_size
    tail = os.pread(fd, min(size, 4096), max(0, size - 4096))
    lines = [line for line in tail.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        return int(json.loads(lines[-1])["seq"])
    except (ValueError, KeyError, TypeError):
        return None


def read_checkpoints(path: Path, key: bytes | None = None) -> list[Checkpoint]:
    """Every checkpoint in the file, each signature checked; CheckpointError otherwise."""
    key = key or current_key()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
            mac = body.pop("mac")
            checkpoint = Checkpoint(
                int(body["seq"]), str(body["hash"]), int(body["keyed_from"]), str(body["at"])
            )
            ok = body == checkpoint._unsigned() and isinstance(mac, str)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{path} line {number} is not a checkpoint") from None
        if not ok or not hmac.compare_digest(_checkpoint_mac(key, body), mac):
            raise CheckpointError(
                f"{path} line {number}: the signature does not match (forged, edited, or not "
                "this deployment's audit key)"
            )
        found.append(checkpoint)
    return found


async def checkpoint_forever(
    engine: Engine, path: Path, stop: asyncio.Event, interval: float
) -> None:
    """The API process's checkpoint round: append the signed head every ``interval`` seconds
    when it moved (a first one at start). A failure is logged and retried next round. Every
    worker of ``xinbao api --workers N`` runs it on the one file (``only_if_newer``)."""
    last: tuple[int, str] | None = None

    def once() -> tuple[int, str] | None:
        with Session(engine) as session:
            checkpoint = head_checkpoint(session)
        if checkpoint is None or (checkpoint.seq, checkpoint.hash) == last:
            return last
        with Session(engine) as session:
            write_checkpoint(session, path, only_if_newer=True)
        return (checkpoint.seq, checkpoint.hash)

    while not stop.is_set():
        try:
            last = await asyncio.to_thread(once)
        except (SQLAlchemyError, OSError) as err:
            log.warning("audit checkpoint to %s failed: %s", path, err)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


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
