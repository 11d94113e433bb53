"""The audit chain detects tampering; `xinbao audit verify` and `export --csv` work."""

import csv

import pytest
import typer
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from typer.testing import CliRunner

from cloud_api.cli import audit_app
from cloud_api.core.db import make_engine
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
