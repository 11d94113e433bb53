"""The outbox tables: events and command replies waiting for the broker's PUBACK.

An event is committed here before it is published. The broker's PUBACK marks it ``acked_at``
(no longer sent, no longer counted as outbox depth) but keeps it: a broker drops what it has
acknowledged when it restarts before delivering it (Mosquitto 2.0 forgets the cloud's shared
subscription then). A row leaves when the cloud says it holds that event (the ``events_upto``
mark of a full sync, ``confirm_events``) or, never confirmed, after ``ACKED_KEPT_S`` or beyond
``ACKED_KEPT_MAX`` acknowledged rows. Sequence numbers come from an AUTOINCREMENT key, which
SQLite never reuses, so ``seq`` keeps rising across deletes and restarts. Replies to cloud
commands wait for their PUBACK the same way (a reply lost with the link would leave the cloud
not knowing whether a door opened), in their own table so that event seqs stay gap-free.

Mixed into ``Store``, which owns the connection and ``transaction()``.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from xinbao.contract import CommandReply, EventMark, EventType, LockerEvent

# Acknowledged events the cloud has not confirmed are kept this long, and at most this many.
ACKED_KEPT_S = 7 * 24 * 3600.0
ACKED_KEPT_MAX = 20_000

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    type TEXT NOT NULL,
    compartment INTEGER,
    data TEXT NOT NULL,
    acked_at REAL  -- time.time() of the broker's PUBACK; NULL: still to send
);
CREATE TABLE IF NOT EXISTS reply_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    body BLOB NOT NULL
);
"""


class OutboxTables:
    _db: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _upgrade_outbox(self) -> None:
        """Bring an outbox made by an earlier version up to this one (idempotent)."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
        if "acked_at" not in columns:
            self._db.execute("ALTER TABLE outbox ADD COLUMN acked_at REAL")
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS outbox_to_send ON outbox(seq) WHERE acked_at IS NULL"
        )

    # --- events -------------------------------------------------------------------------

    def add_event(
        self,
        type_: EventType,
        compartment: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> LockerEvent:
        event_id = uuid.uuid4()
        ts = datetime.now(UTC)
        body = json.dumps(data or {}, sort_keys=True)
        with self.transaction():
            cur = self._db.execute(
                "INSERT INTO outbox(event_id, ts, type, compartment, data) VALUES (?,?,?,?,?)",
                (str(event_id), ts.isoformat(), str(type_), compartment, body),
            )
        return LockerEvent(
            event_id=event_id,
            seq=cur.lastrowid,
            ts=ts,
            type=type_,
            compartment=compartment,
            data=data or {},
        )

    def pending_events(self, after_seq: int = 0, limit: int = 500) -> list[LockerEvent]:
        rows = self._db.execute(
            "SELECT seq, event_id, ts, type, compartment, data FROM outbox "
            "WHERE seq > ? AND acked_at IS NULL ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [
            LockerEvent(
                seq=r[0],
                event_id=uuid.UUID(r[1]),
                ts=datetime.fromisoformat(r[2]),
                type=EventType(r[3]),
                compartment=r[4],
                data=json.loads(r[5]),
            )
            for r in rows
        ]

    def event_acked(self, seq: int) -> None:
        """The broker has this event: stop sending it, keep it until the cloud confirms."""
        with self.transaction():
            self._db.execute(
                "UPDATE outbox SET acked_at=? WHERE seq=? AND acked_at IS NULL", (time.time(), seq)
            )

    def confirm_events(self, mark: EventMark) -> tuple[int, int]:
        """The cloud holds every event up to ``mark``: drop those rows, and send again the
        acknowledged ones after it (the broker lost them). If the mark is not about our
        numbering (its event_id is not our event ``seq``: this store was wiped and started
        again from 1), nothing is dropped and every acknowledged row is sent again.
        Returns (dropped, to send again)."""
        with self.transaction():
            ours = mark.seq == 0
            if not ours:
                row = self._db.execute(
                    "SELECT event_id FROM outbox WHERE seq=?", (mark.seq,)
                ).fetchone()
                if row is not None:
                    ours = row[0] == str(mark.event_id)
                else:  # gone: ours only if it was ever made here (then it left confirmed)
                    ours = mark.seq <= self._last_seq()
            upto = mark.seq if ours else 0
            dropped = self._db.execute("DELETE FROM outbox WHERE seq <= ?", (upto,)).rowcount
            again = self._db.execute(
                "UPDATE outbox SET acked_at=NULL WHERE seq > ? AND acked_at IS NOT NULL", (upto,)
            ).rowcount
        return dropped, again

    def prune_acked(self, now: float | None = None) -> int:
        """Forget acknowledged events the cloud never confirmed after ACKED_KEPT_S, and the
        oldest beyond ACKED_KEPT_MAX; returns how many."""
        cutoff = (time.time() if now is None else now) - ACKED_KEPT_S
        with self.transaction():
            gone = self._db.execute(
                "DELETE FROM outbox WHERE acked_at IS NOT NULL AND acked_at < ?", (cutoff,)
            ).rowcount
            gone += self._db.execute(
                "DELETE FROM outbox WHERE acked_at IS NOT NULL AND seq NOT IN "
                "(SELECT seq FROM outbox WHERE acked_at IS NOT NULL ORDER BY seq DESC LIMIT ?)",
                (ACKED_KEPT_MAX,),
            ).rowcount
        return gone

    def _last_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        return row[0] if row else 0

    def last_event_seq(self) -> int:
        """The seq of the newest event recorded (0: none yet)."""
        return self._last_seq()

    def outbox_depth(self) -> int:
        """Events not yet acknowledged by the broker."""
        return self._db.execute("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0]

    # --- command replies ----------------------------------------------------------------

    def add_reply(self, reply: CommandReply) -> int:
        with self.transaction():
            cur = self._db.execute(
                "INSERT INTO reply_outbox(request_id, body) VALUES (?, ?)",
                (str(reply.request_id), reply.to_bytes()),
            )
        return cur.lastrowid

    def pending_replies(self, limit: int = 100) -> list[tuple[int, bytes]]:
        rows = self._db.execute(
            "SELECT id, body FROM reply_outbox ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(r[0], bytes(r[1])) for r in rows]

    def delete_reply(self, reply_id: int) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM reply_outbox WHERE id=?", (reply_id,))

    def replies_depth(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM reply_outbox").fetchone()[0]
