"""How requests use the database (core/db.py, api/deps.py): a GET reads without the write
lock and cannot write unless its route says so, SQLite's writers are served in turn, a request
takes one pooled connection on PostgreSQL, and a connection that died while idle is replaced
before anyone uses it."""

import sqlite3
import threading
import time

import psycopg
import pytest
from sqlalchemy import event, text, update
from sqlalchemy.engine import make_url
from sqlmodel import Session

from cloud_api.api.deps import SessionDep, writes_on_read
from cloud_api.core import db
from cloud_api.core.db import WriterQueue, make_engine
from cloud_api.models.locker import Locker
from tests.cloud_api.conftest import make_record
from tests.support.postgres import PG_ADMIN
from tests.support.waiting import wait_until


def _sqlite_path(db_url: str) -> str:
    return make_url(db_url).database


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL readers never wait
def test_a_get_answers_while_another_process_holds_the_sqlite_write_lock(world, db_url):
    # Another process (the controller's sync, a second API worker) is in a write
    # transaction. Before GETs read in deferred transactions, every request began with BEGIN
    # IMMEDIATE and waited the 30 s busy timeout for it, then failed.
    holder = sqlite3.connect(_sqlite_path(db_url), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        r = world.client.get(f"/api/v1/lockers/{world.locker_id}", headers=world.integrator_headers)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == world.locker_id
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _rename(session, locker_id: str, site: str) -> dict:
    """Through the ORM: a changed object flushed at commit."""
    locker = session.get(Locker, locker_id)
    locker.site = site
    session.add(locker)
    session.commit()
    return {"ok": True}


def _add_writing_gets(app) -> None:
    @app.get("/_test/rename-quietly")
    def rename_quietly(session: SessionDep) -> dict:
        session.exec(update(Locker).values(site="renamed by a GET"))
        session.commit()
        return {"ok": True}

    @app.get("/_test/rename-by-flush/{locker_id}")
    def rename_by_flush(locker_id: str, session: SessionDep) -> dict:
        return _rename(session, locker_id, "renamed by a GET")

    @app.get("/_test/rename-openly/{locker_id}")
    @writes_on_read
    def rename_openly(locker_id: str, session: SessionDep) -> dict:
        return _rename(session, locker_id, "renamed by a declared GET")


def _site(engine, locker_id: str) -> str:
    with Session(engine) as session:
        return session.get(Locker, locker_id).site


def test_a_get_route_writes_only_if_it_says_it_does(world, app, engine):
    _add_writing_gets(app)
    before = _site(engine, world.locker_id)
    assert world.client.get("/_test/rename-quietly").status_code == 500
    assert world.client.get(f"/_test/rename-by-flush/{world.locker_id}").status_code == 500
    assert _site(engine, world.locker_id) == before
    r = world.client.get(f"/_test/rename-openly/{world.locker_id}")
    assert r.status_code == 200, r.text
    assert _site(engine, world.locker_id) == "renamed by a declared GET"


# (SQLite reads who is calling in a transaction of its own: api/deps.py)
@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_request_takes_one_pooled_connection_on_postgres(world, app, db_url):
    checkouts = []
    pool = app.state.engine.pool
    listener = lambda *_: checkouts.append(1)  # noqa: E731
    event.listen(pool, "checkout", listener)
    try:
        r = world.client.get(f"/api/v1/lockers/{world.locker_id}", headers=world.integrator_headers)
        assert r.status_code == 200, r.text
        assert len(checkouts) == 1  # the credential check and the route share it
        checkouts.clear()
        make_record(world.client, world.integrator_headers)
        assert len(checkouts) == 1
    finally:
        event.remove(pool, "checkout", listener)


@pytest.mark.postgres
def test_a_postgres_connection_that_died_while_idle_is_replaced_unseen(pg_url, monkeypatch):
    monkeypatch.setattr(db, "IDLE_PING_AFTER", 0.1)  # 1 s in production
    engine = make_engine(pg_url)
    try:
        with Session(engine) as session:
            pid = session.exec(text("SELECT pg_backend_pid()")).one()[0]
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)  # idle longer than IDLE_PING_AFTER: pinged at its next checkout
        with Session(engine) as session:
            assert session.exec(text("SELECT 1")).one()[0] == 1
            assert session.exec(text("SELECT pg_backend_pid()")).one()[0] != pid
    finally:
        engine.dispose()


def test_sqlite_writers_are_served_in_the_order_they_came():
    queue = WriterQueue()
    assert queue.acquire(timeout=1)
    served: list[int] = []

    def writer(n: int) -> None:
        assert queue.acquire(timeout=10)
        served.append(n)
        queue.release()

    threads = []
    for n in range(6):
        thread = threading.Thread(target=writer, args=(n,))
        thread.start()
        threads.append(thread)
        # the next one comes only once this one waits
        wait_until(lambda n=n: len(queue._waiting) == n + 1, 5, f"writer {n} waiting")
    queue.release()
    for thread in threads:
        thread.join(10)
    assert served == list(range(6))


def test_a_writer_that_gave_up_waiting_does_not_stall_the_queue():
    queue = WriterQueue()
    assert queue.acquire(timeout=1)
    assert not queue.acquire(timeout=0.05)  # gave up
    queue.release()
    assert queue.acquire(timeout=0)  # free: nobody left waiting holds it
    queue.release()


def test_sqlite_writers_through_the_engine_all_get_their_turn(tmp_path):
    # 8 threads, each appending 20 rows in read-then-write transactions: none fails with
    # "database is locked", none is lost, and the queue is empty afterwards.
    engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (n INTEGER NOT NULL)"))
        errors: list[Exception] = []

        def writer() -> None:
            try:
                for _ in range(20):
                    with engine.begin() as conn:
                        count = conn.execute(text("SELECT count(*) FROM t")).scalar_one()
                        conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": count})
            except Exception as err:  # noqa: BLE001
                errors.append(err)

        threads = [threading.Thread(target=writer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        with engine.connect() as conn:
            numbers = conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all()
        # each transaction saw every earlier one: the numbers run 0..159 with no repeat
        assert numbers == list(range(160))
    finally:
        engine.dispose()
