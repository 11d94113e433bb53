"""Alembic builds the schema from nothing, and the models match what it builds."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import cloud_api.models  # noqa: F401
from cloud_api.core.db import alembic_config, make_engine, migrate


def test_upgrade_head_on_empty_database_matches_models(db_url):
    # db_url is a copy of a migrated template: go back to empty, then up again.
    command.downgrade(alembic_config(db_url), "base")
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate(db_url, "head")
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}),
                SQLModel.metadata,
            )
            head = conn.execute(text("SELECT last_seq, last_hash FROM audit_head")).one()
        assert diff == []
        assert head == (0, "0" * 64)
        assert "sms_message" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/fresh.db"])
def test_migrate_creates_a_new_sqlite_file(tmp_path, url):
    path = tmp_path / "fresh.db"
    migrate(url.format(tmp=tmp_path))
    assert path.exists()
    engine = make_engine(url.format(tmp=tmp_path))
    try:
        assert "handover" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
