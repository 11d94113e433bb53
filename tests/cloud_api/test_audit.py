"""The audit chain detects tampering; `xinbao audit verify` and `export --csv` work."""

import csv
import json

import pytest
import typer
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from sqlmodel import Session
from typer.testing import CliRunner

from cloud_api.cli import audit_app
from cloud_api.core.db import make_engine
from cloud_api.services import audit
from tests.cloud_api.conftest import reserve_dropoff
from tests.cloud_api.helpers import drop_audit_guard

# The same mounting as xinbao/cli.py, without importing the other packages' commands.
xinbao_app = typer.Typer()
xinbao_app.add_typer(audit_app, name="audit")


def _some_history(world):
    reserve_dropoff(world)


def _cli(db_url, *args):
    return CliRunner().invoke(xinbao_app, ["audit", *args], env={"DATABASE_URL": db_url})


def test_verify_ok_then_detects_edited_row(world, db_url):
    _some_history(world)
    result = _cli(db_url, "verify")
    assert result.exit_code == 0, result.output
    assert "intact" in result.output
    # The head hash an inspector notes is the last entry's, as the API reports it too.
    entries = world.client.get("/api/v1/audit?limit=500", headers=world.admin_headers).json()
    assert f"head hash: {entries[-1]['hash']}" in result.output
    verdict = world.client.get("/api/v1/audit/verify", headers=world.admin_headers).json()
    assert verdict["ok"] and verdict["head_hash"] == entries[-1]["hash"]

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            # The database refuses edits (migration 0003); an attacker with DBA rights drops
            # the guard first, and verify must still catch what they did next.
            drop_audit_guard(conn)
            conn.execute(text("UPDATE audit_entry SET actor = 'someone-else' WHERE seq = 3"))
    finally:
        engine.dispose()
    result = _cli(db_url, "verify")
    assert result.exit_code == 1
    assert "entry 3" in result.output
    verdict = world.client.get("/api/v1/audit/verify", headers=world.admin_headers).json()
    assert (verdict["ok"], verdict["broken_seq"]) == (False, 3)


def test_verify_detects_deleted_and_truncated_entries(world, db_url):
    _some_history(world)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            drop_audit_guard(conn)  # as a DBA could; see test_the_database_refuses_edits
            last = conn.execute(text("SELECT max(seq) FROM audit_entry")).scalar_one()
            conn.execute(text("DELETE FROM audit_entry WHERE seq = :s"), {"s": last})
        assert _cli(db_url, "verify").exit_code == 1  # tail cut off: the head knows
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_entry WHERE seq = 2"))
        result = _cli(db_url, "verify")
        assert result.exit_code == 1 and "entry 2" in result.output
    finally:
        engine.dispose()


def test_export_csv(world, db_url, tmp_path):
    _some_history(world)
    out = tmp_path / "audit.csv"
    result = _cli(db_url, "export", "--csv", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert f"head hash: {rows[-1]['hash']}" in result.output
    assert [int(r["seq"]) for r in rows] == list(range(1, len(rows) + 1))
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    assert "code.issued" in {r["action"] for r in rows}
    bad = _cli(db_url, "export", "--csv", str(tmp_path / "no" / "such" / "dir.csv"))
    assert bad.exit_code == 2 and "cannot write" in bad.output


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entry SET actor = 'someone-else' WHERE seq = 1",
        "UPDATE audit_entry SET hash = prev_hash",
        "DELETE FROM audit_entry WHERE seq = 1",
        "DELETE FROM audit_entry",
    ],
)
def test_the_database_refuses_edits(world, db_url, statement):
    _some_history(world)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            before = conn.execute(text("SELECT seq, actor, hash FROM audit_entry")).all()
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT seq, actor, hash FROM audit_entry")).all() == before
    finally:
        engine.dispose()
    assert _cli(db_url, "verify").exit_code == 0


def test_truncate_is_refused_on_postgres(world, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has no TRUNCATE (its DELETE is covered above)")
    _some_history(world)
    engine = make_engine(db_url)
    try:
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_entry"))
    finally:
        engine.dispose()
    assert _cli(db_url, "verify").exit_code == 0


# --- attacks with write access to the database but without the audit key ------------------


def _rechain_from(conn, seq: int, actor: str) -> None:
    """The rewrite attack: change entry ``seq``, recompute every link after it as anyone
    without the key can (the old unkeyed SHA-256), and move the head to the new last hash."""
    from datetime import datetime

    from cloud_api.services.audit import entry_hash

    rows = conn.execute(
        text(
            "SELECT seq, at, actor, action, subject, detail, prev_hash FROM audit_entry "
            "WHERE seq >= :s ORDER BY seq"
        ),
        {"s": seq},
    ).all()
    prev = rows[0].prev_hash
    for row in rows:
        at = row.at if isinstance(row.at, datetime) else datetime.fromisoformat(row.at)
        if at.tzinfo is None:
            from datetime import UTC

            at = at.replace(tzinfo=UTC)
        detail = row.detail if isinstance(row.detail, dict) else json.loads(row.detail)
        who = actor if row.seq == seq else row.actor
        digest = entry_hash(row.seq, at, who, row.action, row.subject, detail, prev)
        conn.execute(
            text("UPDATE audit_entry SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s"),
            {"a": who, "p": prev, "h": digest, "s": row.seq},
        )
        prev = digest
    conn.execute(
        text("UPDATE audit_head SET last_hash = :h WHERE id = 1"),
        {"h": prev},
    )


def test_a_rewritten_and_rechained_tail_does_not_verify(world, db_url):
    _some_history(world)
    assert _cli(db_url, "verify").exit_code == 0
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            drop_audit_guard(conn)  # as a DBA could
            _rechain_from(conn, 2, "someone-else")
    finally:
        engine.dispose()
    result = _cli(db_url, "verify")
    assert result.exit_code == 1, result.output
    assert "entry 2" in result.output
    verdict = world.client.get("/api/v1/audit/verify", headers=world.admin_headers).json()
    assert (verdict["ok"], verdict["broken_seq"]) == (False, 2)


def test_moving_the_keyed_start_is_reported_and_caught_by_a_checkpoint(world, db_url, tmp_path):
    """The attacker also claims every entry predates the keyed chain (audit_head.keyed_from)
    so that plain SHA-256 links pass: verify says so loudly, and a checkpoint catches it."""
    _some_history(world)
    marks = tmp_path / "audit.checkpoints"
    assert _cli(db_url, "checkpoint", "--file", str(marks)).exit_code == 0
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            drop_audit_guard(conn)
            _rechain_from(conn, 1, "someone-else")
            conn.execute(text("UPDATE audit_head SET keyed_from = last_seq + 1"))
    finally:
        engine.dispose()
    plain = _cli(db_url, "verify")
    assert "predate the keyed chain" in plain.output
    result = _cli(db_url, "verify", "--checkpoint", str(marks))
    assert result.exit_code == 1, result.output
    assert "BROKEN" in result.output


def test_a_cut_off_tail_is_caught_by_a_checkpoint(world, db_url, tmp_path):
    _some_history(world)
    marks = tmp_path / "audit.checkpoints"
    written = _cli(db_url, "checkpoint", "--file", str(marks))
    assert written.exit_code == 0, written.output
    assert marks.stat().st_mode & 0o777 == 0o600
    ok = _cli(db_url, "verify", "--checkpoint", str(marks))
    assert ok.exit_code == 0 and "signed checkpoints match" in ok.output, ok.output
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            drop_audit_guard(conn)
            last = conn.execute(text("SELECT max(seq) FROM audit_entry")).scalar_one()
            keep = last - 2
            conn.execute(text("DELETE FROM audit_entry WHERE seq > :k"), {"k": keep})
            new_head = conn.execute(
                text("SELECT hash FROM audit_entry WHERE seq = :k"), {"k": keep}
            ).scalar_one()
            conn.execute(
                text("UPDATE audit_head SET last_seq = :k, last_hash = :h WHERE id = 1"),
                {"k": keep, "h": new_head},
            )
    finally:
        engine.dispose()
    # The database alone cannot tell: its head was moved back with the tail.
    assert _cli(db_url, "verify").exit_code == 0
    result = _cli(db_url, "verify", "--checkpoint", str(marks))
    assert result.exit_code == 1, result.output
    assert f"vouches for entry {last}" in result.output


def test_a_forged_checkpoint_is_refused(world, db_url, tmp_path):
    _some_history(world)
    marks = tmp_path / "audit.checkpoints"
    assert _cli(db_url, "checkpoint", "--file", str(marks)).exit_code == 0
    line = json.loads(marks.read_text())
    line["seq"] += 5  # claims more entries than there are, to fake a "truncation"
    marks.write_text(json.dumps(line) + "\n")
    result = _cli(db_url, "verify", "--checkpoint", str(marks))
    assert result.exit_code == 1 and "signature does not match" in result.output
    marks.write_text("not json\n")
    result = _cli(db_url, "verify", "--checkpoint", str(marks))
    assert result.exit_code == 1 and "not a checkpoint" in result.output
    missing = _cli(db_url, "verify", "--checkpoint", str(tmp_path / "none"))
    assert missing.exit_code == 1 and "cannot read" in missing.output


def test_insert_or_replace_is_refused_on_sqlite(world, db_url):
    """INSERT OR REPLACE deletes the old row without firing the DELETE trigger (unless the
    connection turned recursive_triggers on): migration 0007's BEFORE INSERT trigger refuses
    it whatever the connection's pragmas."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL has no INSERT OR REPLACE; ON CONFLICT DO UPDATE is an UPDATE")
    _some_history(world)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            before = conn.execute(text("SELECT seq, actor, hash FROM audit_entry")).all()
        for pragma in ("PRAGMA recursive_triggers = OFF", "PRAGMA recursive_triggers = ON"):
            with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
                conn.execute(text(pragma))
                conn.execute(
                    text(
                        "INSERT OR REPLACE INTO audit_entry "
                        "(seq, at, actor, action, subject, detail, prev_hash, hash) "
                        "SELECT seq, at, 'someone-else', action, subject, detail, prev_hash, "
                        "hash FROM audit_entry WHERE seq = 2"
                    )
                )
        with engine.connect() as conn:
            assert conn.execute(text("SELECT seq, actor, hash FROM audit_entry")).all() == before
    finally:
        engine.dispose()
    assert _cli(db_url, "verify").exit_code == 0


def test_the_checkpoint_round_appends_the_head_when_it_moves(world, db_url, tmp_path):
    import asyncio

    from sqlmodel import Session

    from cloud_api.services import audit

    _some_history(world)
    marks = tmp_path / "marks"
    engine = make_engine(db_url)

    async def two_rounds() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(audit.checkpoint_forever(engine, marks, stop, 0.05))
        await asyncio.sleep(0.3)  # several rounds, one head: one line
        stop.set()
        await task

    try:
        asyncio.run(two_rounds())
        assert len(audit.read_checkpoints(marks)) == 1
        with Session(engine) as session:
            audit.append(session, "test", "test.moved", "head")
            session.commit()
        asyncio.run(two_rounds())
    finally:
        engine.dispose()
    found = audit.read_checkpoints(marks)
    assert len(found) == 2 and found[1].seq > found[0].seq
    assert _cli(db_url, "verify", "--checkpoint", str(marks)).exit_code == 0


def test_verify_reads_the_head_and_the_entries_at_one_moment(world, db_url, monkeypatch):
    # An entry is appended (and committed) after verify has read the chain head and before
    # it walks the entries, as happens whenever the locker's events go on during a check.
    # Read a statement at a time, the chain looked cut: "the chain head says N entries".
    _some_history(world)
    engine = make_engine(db_url)
    walk = audit._entries
    appended = []

    def entries_after_an_append(session, *args, **kwargs):
        if not appended:
            with Session(engine) as other:
                audit.append(other, "system:test", "test.appended", "race", {})
                other.commit()
            appended.append(True)
        return walk(session, *args, **kwargs)

    monkeypatch.setattr(audit, "_entries", entries_after_an_append)
    try:
        verdict = world.client.get("/api/v1/audit/verify", headers=world.admin_headers).json()
        assert appended and verdict["ok"], verdict
        result = _cli(db_url, "verify")
        assert result.exit_code == 0, result.output  # the next check sees the new entry too
    finally:
        engine.dispose()
