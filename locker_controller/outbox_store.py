"""The outbox tables: events and command replies waiting for the broker's PUBACK.

An event is committed here before it is published and deleted only when the broker has
acknowledged it. Sequence numbers come from an AUTOINCREMENT key, which SQLite never reuses,
so ``seq`` keeps rising across deletes and restarts. Replies to cloud commands get the same
treatment (a reply lost with the link would leave the cloud not knowing whether a door
opened), in their own table so that event seqs stay gap-free.

Mixed into ``Store``, which owns the connection and ``transaction()``.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from xinbao.contract import CommandReply, EventType, LockerEvent

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    type TEXT NOT NULL,
    compartment INTEGER,
    data TEXT NOT NULL
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
            "SELECT seq, event_id, ts, type, compartment, data FROM outbox WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
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

    def delete_event(self, seq: int) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM outbox WHERE seq=?", (seq,))

    def outbox_depth(self) -> int:
        """Events not yet acknowledged by the broker."""
        return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

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
