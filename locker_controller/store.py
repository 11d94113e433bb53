"""The cabinet's local state in SQLite (WAL): layout, door states, handovers, staff, seen
commands, and (outbox_store.py) the outbox of events and command replies.

Everything the controller has promised the cloud lives here before it is acted on or sent,
committed with ``synchronous=FULL`` so a commit survives power loss.

Codes are never stored: a handover holds the HOTP counter its code derives from. Staff
secrets are not stored either: the staff table says who may log in with a staff pass, which
the cabinet checks with its own locker key (xinbao.staff_pass).

The database (and SQLite's -wal and -shm files, which take its mode) is created 0600 in a
data directory kept at 0700: the cabinet's user alone reads it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from locker_controller.errors import StoreError
from locker_controller.outbox_store import OUTBOX_SCHEMA, OutboxTables

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS compartments (
    number INTEGER PRIMARY KEY,
    size TEXT NOT NULL,
    bus INTEGER NOT NULL,
    board INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    occupied INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS handovers (
    handover_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    compartment INTEGER,
    size TEXT,
    counter INTEGER NOT NULL,
    digits INTEGER NOT NULL,
    expires_at TEXT,
    state TEXT NOT NULL,
    record_ref TEXT,
    mobile_digest TEXT
);
CREATE TABLE IF NOT EXISTS staff (
    staff_no TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    roles TEXT NOT NULL,
    pass_floor INTEGER NOT NULL DEFAULT 0
);
-- The last door state the controller saw, so a restart can tell what happened while it was
-- down (closed, forced, item taken). Written in the transaction of the event it causes.
CREATE TABLE IF NOT EXISTS doors (
    number INTEGER PRIMARY KEY,
    open INTEGER NOT NULL,
    occupied INTEGER,
    changed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_requests (request_id TEXT PRIMARY KEY, seen_at TEXT NOT NULL);
"""

# "held": the cloud ended the handover (revoked its code) while its item is inside here; the
# code opens nothing, the door stays the item's until staff take it out.
LIVE_STATES = ("reserved", "deposited", "overdue", "held")


@dataclass(frozen=True)
class Compartment:
    number: int
    size: str
    bus: int
    board: int
    channel: int
    occupied: bool


@dataclass(frozen=True)
class Handover:
    handover_id: int
    kind: str
    compartment: int | None
    size: str | None
    counter: int
    digits: int
    expires_at: datetime | None
    state: str
    record_ref: str | None
    # Keyed digest of the mobile's last 4 digits (xinbao.lockout): opens during a lockout.
    mobile_digest: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True)
class DoorRecord:
    open: bool
    occupied: bool | None  # None: no occupancy sensor
    changed_at: float  # time.time() of the last change the controller saw


@dataclass(frozen=True)
class StaffMember:
    staff_no: str
    name: str
    roles: list[str]
    pass_floor: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


def _private_file(path: Path) -> None:
    """The data directory 0700 and the database file 0600, created so (no moment with wider
    rights) and narrowed if an older version left them readable to others."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if name.exists():
            os.chmod(name, 0o600)


class Store(OutboxTables):
    def __init__(self, path: Path) -> None:
        try:
            _private_file(path)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one place, see transaction().
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # Deleted rows are overwritten, not left in free pages for a copied file to show.
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._forget_staff_secrets()
            self._db.executescript(SCHEMA + OUTBOX_SCHEMA)
            self._upgrade_outbox()
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(handovers)")}
            if "mobile_digest" not in columns:
                self._db.execute("ALTER TABLE handovers ADD COLUMN mobile_digest TEXT")
        except OSError as err:
            raise StoreError(f"cannot prepare the state database {path}: {err}") from None
        except sqlite3.Error as err:
            raise StoreError(f"cannot open the state database {path}: {err}") from None
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    def _forget_staff_secrets(self) -> None:
        """A database from before staff passes holds every member's TOTP secret: drop that
        table (the next staff sync fills the new one) and wipe it from the file and the WAL."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(staff)")}
        if "totp_secret" not in columns:
            return
        self._db.execute("DROP TABLE staff")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing; nests (inner blocks join the outer transaction)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    # --- meta ---------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def metas(self, prefix: str) -> dict[str, str]:
        """Every non-empty meta value whose key starts with ``prefix``, in one query."""
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? AND value != ''",
            (len(prefix), prefix),
        ).fetchall()
        return dict(rows)

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    # --- layout -------------------------------------------------------------------------

    def sync_layout(self, layout: Iterable[tuple[int, str, int, int, int]]) -> None:
        """Make the compartments table match the config; keeps ``occupied`` of known ones."""
        rows = list(layout)
        with self.transaction():
            numbers = [r[0] for r in rows]
            marks = ",".join("?" * len(numbers))
            self._db.execute(f"DELETE FROM compartments WHERE number NOT IN ({marks})", numbers)
            self._db.execute(f"DELETE FROM doors WHERE number NOT IN ({marks})", numbers)
            for number, size, bus, board, channel in rows:
                self._db.execute(
                    "INSERT INTO compartments(number, size, bus, board, channel) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(number) DO UPDATE SET "
                    "size=excluded.size, bus=excluded.bus, board=excluded.board, "
                    "channel=excluded.channel",
                    (number, size, bus, board, channel),
                )

    def compartments(self) -> list[Compartment]:
        rows = self._db.execute(
            "SELECT number, size, bus, board, channel, occupied FROM compartments ORDER BY number"
        ).fetchall()
        return [Compartment(*r[:5], occupied=bool(r[5])) for r in rows]

    def compartment(self, number: int) -> Compartment | None:
        row = self._db.execute(
            "SELECT number, size, bus, board, channel, occupied FROM compartments WHERE number=?",
            (number,),
        ).fetchone()
        return Compartment(*row[:5], occupied=bool(row[5])) if row else None

    def set_occupied(self, number: int, occupied: bool) -> None:
        with self.transaction():
            self._db.execute(
                "UPDATE compartments SET occupied=? WHERE number=?", (int(occupied), number)
            )

    # --- doors ---------------------------------------------------------------------------

    def door_records(self) -> dict[int, DoorRecord]:
        rows = self._db.execute("SELECT number, open, occupied, changed_at FROM doors").fetchall()
        return {
            r[0]: DoorRecord(bool(r[1]), None if r[2] is None else bool(r[2]), r[3]) for r in rows
        }

    def save_door(self, number: int, record: DoorRecord) -> None:
        occupied = None if record.occupied is None else int(record.occupied)
        with self.transaction():
            self._db.execute(
                "INSERT INTO doors(number, open, occupied, changed_at) VALUES (?,?,?,?) "
                "ON CONFLICT(number) DO UPDATE SET open=excluded.open, "
                "occupied=excluded.occupied, changed_at=excluded.changed_at",
                (number, int(record.open), occupied, record.changed_at),
            )

    # --- handovers ----------------------------------------------------------------------

    def _handover(self, row: tuple[Any, ...]) -> Handover:
        expires = datetime.fromisoformat(row[6]) if row[6] else None
        return Handover(row[0], row[1], row[2], row[3], row[4], row[5], expires, *row[7:])

    _HANDOVER_COLUMNS = (
        "handover_id, kind, compartment, size, counter, digits, expires_at, state, record_ref,"
        " mobile_digest"
    )

    def upsert_handover(self, h: Handover) -> None:
        with self.transaction():
            self._db.execute(
                f"INSERT INTO handovers({self._HANDOVER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(handover_id) DO UPDATE SET kind=excluded.kind, "
                "compartment=excluded.compartment, size=excluded.size, counter=excluded.counter,"
                " digits=excluded.digits, expires_at=excluded.expires_at, state=excluded.state,"
                " record_ref=excluded.record_ref, mobile_digest=excluded.mobile_digest",
                (
                    h.handover_id,
                    h.kind,
                    h.compartment,
                    h.size,
                    h.counter,
                    h.digits,
                    h.expires_at.isoformat() if h.expires_at else None,
                    h.state,
                    h.record_ref,
                    h.mobile_digest,
                ),
            )

    def delete_handover(self, handover_id: int) -> bool:
        with self.transaction():
            cur = self._db.execute("DELETE FROM handovers WHERE handover_id=?", (handover_id,))
        return cur.rowcount > 0

    def delete_handovers_except(self, keep: Iterable[int]) -> int:
        ids = list(keep)
        marks = ",".join("?" * len(ids))
        with self.transaction():
            cur = self._db.execute(f"DELETE FROM handovers WHERE handover_id NOT IN ({marks})", ids)
        return cur.rowcount

    def handover(self, handover_id: int) -> Handover | None:
        row = self._db.execute(
            f"SELECT {self._HANDOVER_COLUMNS} FROM handovers WHERE handover_id=?", (handover_id,)
        ).fetchone()
        return self._handover(row) if row else None

    def live_handovers(self) -> list[Handover]:
        rows = self._db.execute(
            f"SELECT {self._HANDOVER_COLUMNS} FROM handovers WHERE state IN (?,?,?,?) "
            "ORDER BY handover_id",
            LIVE_STATES,
        ).fetchall()
        return [self._handover(r) for r in rows]

    def finished_handovers(self) -> list[Handover]:
        marks = ",".join("?" * len(LIVE_STATES))
        rows = self._db.execute(
            f"SELECT {self._HANDOVER_COLUMNS} FROM handovers WHERE state NOT IN ({marks}) "
            "ORDER BY handover_id",
            LIVE_STATES,
        ).fetchall()
        return [self._handover(r) for r in rows]

    def set_handover_state(
        self, handover_id: int, state: str, compartment: int | None = None
    ) -> None:
        with self.transaction():
            if compartment is None:
                self._db.execute(
                    "UPDATE handovers SET state=? WHERE handover_id=?", (state, handover_id)
                )
            else:
                self._db.execute(
                    "UPDATE handovers SET state=?, compartment=? WHERE handover_id=?",
                    (state, compartment, handover_id),
                )

    # --- staff --------------------------------------------------------------------------

    def replace_staff(self, members: Iterable[StaffMember]) -> int:
        """The synced set replaces the old one (members left out can no longer log in)."""
        members = list(members)
        with self.transaction():
            self._db.execute("DELETE FROM staff")
            self._db.executemany(
                "INSERT INTO staff(staff_no, name, roles, pass_floor) VALUES (?,?,?,?)",
                [(m.staff_no, m.name, json.dumps(m.roles), m.pass_floor) for m in members],
            )
        return len(members)

    def staff_member(self, staff_no: str) -> StaffMember | None:
        row = self._db.execute(
            "SELECT staff_no, name, roles, pass_floor FROM staff WHERE staff_no=?", (staff_no,)
        ).fetchone()
        if row is None:
            return None
        return StaffMember(row[0], row[1], json.loads(row[2]), row[3])

    # --- commands seen ------------------------------------------------------------------

    def remember_request(self, request_id: str) -> bool:
        """True the first time a request_id is seen, False for a replay."""
        with self.transaction():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO seen_requests(request_id, seen_at) VALUES (?, ?)",
                (request_id, _now().isoformat()),
            )
        return cur.rowcount == 1

    def forget_requests_before(self, moment: datetime) -> None:
        """Drop ids of commands that have expired anyway (an expired replay is refused)."""
        with self.transaction():
            self._db.execute("DELETE FROM seen_requests WHERE seen_at < ?", (moment.isoformat(),))
