"""Two submits of one rating link at the same moment (a double tap, two tabs): exactly one
rating and one audit entry, and the other submit is told it was already rated. SQLite and
PostgreSQL.

The first test forces the worst interleaving: one submit has written its row and holds its
transaction open while the other passes the "already rated?" look-up (PostgreSQL: the row
is not committed, so the look-up finds nothing) and runs into the unique key. The second
fires real HTTP submits together, several times over.
"""

import threading

import pytest
from sqlalchemy import event, text
from sqlmodel import Session, select

from cloud_api.core.db import make_engine
from cloud_api.errors import Conflict
from cloud_api.models.audit import AuditEntry
from cloud_api.models.rating import Rating
from cloud_api.services import ratings
from tests.cloud_api.test_ratings import FORM, collected_pickup
from tests.support.waiting import wait_until


def _rows(engine):
    with Session(engine) as s:
        found = list(s.exec(select(Rating)).all())
        audited = list(
            s.exec(select(AuditEntry).where(AuditEntry.action == "rating.submitted")).all()
        )
    return found, audited


def _waiting_on_a_lock(engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def test_a_submit_that_passed_the_lookup_still_cannot_add_a_second_rating(
    world, app, console, db_url, clock
):
    handover, _ = collected_pickup(world, app, console)
    first_engine, second_engine = make_engine(db_url), make_engine(db_url)
    written, release, second_begins = threading.Event(), threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    class HeldOpen(Session):
        """The first submit: its row is written, its commit waits for the test."""

        def commit(self) -> None:
            written.set()
            assert release.wait(30), "the test never let the first submit commit"
            super().commit()

    # The second submit reaching the database (SQLite: it then waits for the write lock,
    # which the first holds from its BEGIN IMMEDIATE to its commit, at connect or at BEGIN).
    @event.listens_for(second_engine, "connect", insert=True)
    def _connects(dbapi_connection, record):
        second_begins.set()

    def first() -> None:
        with HeldOpen(first_engine) as session:
            outcome["first"] = ratings.submit(session, handover["id"], 5, "first", clock.now)

    def second() -> None:
        with Session(second_engine) as session:
            try:
                ratings.submit(session, handover["id"], 1, "second", clock.now)
                outcome["second"] = "stored"
            except Conflict as err:
                outcome["second"] = err.extra["reason"]

    threads = [threading.Thread(target=first, name="rating-first")]
    try:
        threads[0].start()
        assert written.wait(30), "the first submit did not write its row"
        threads.append(threading.Thread(target=second, name="rating-second"))
        threads[1].start()
        if first_engine.dialect.name == "postgresql":
            # Past the look-up, stopped at the unique key by the uncommitted row.
            wait_until(lambda: _waiting_on_a_lock(first_engine), 10, "the second INSERT to wait")
        else:
            wait_until(second_begins.is_set, 10, "the second submit to reach the database")
        release.set()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()
    finally:
        release.set()
        first_engine.dispose()
        second_engine.dispose()
    assert outcome["second"] == "already_rated"
    found, audited = _rows(app.state.engine)
    assert [(r.handover_id, r.score, r.comment) for r in found] == [(handover["id"], 5, "first")]
    assert [e.detail["comment"] for e in audited] == ["first"]


@pytest.mark.parametrize("rounds", [4])
def test_two_http_submits_at_once_leave_exactly_one_rating(world, app, console, rounds):
    tokens = [
        collected_pickup(world, app, console, number=f"XA-RACE-{n}")[1] for n in range(rounds)
    ]
    for token in tokens:
        start = threading.Barrier(2)
        statuses: list[int] = []

        def submit(
            score: int,
            token: str = token,
            start: threading.Barrier = start,
            statuses: list[int] = statuses,
        ) -> None:
            start.wait(10)
            r = world.client.post(
                f"/rate/{token}",
                content=f"score={score}&comment=tap{score}",
                headers=FORM,
                follow_redirects=False,
            )
            statuses.append(r.status_code)

        threads = [threading.Thread(target=submit, args=(s,)) for s in (2, 4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(statuses) == [303, 409], statuses
    found, audited = _rows(app.state.engine)
    assert len(found) == rounds == len({r.handover_id for r in found})
    assert sorted(e.detail["handover_id"] for e in audited) == sorted(r.handover_id for r in found)
    for rating in found:
        [entry] = [e for e in audited if e.detail["handover_id"] == rating.handover_id]
        assert (entry.detail["score"], entry.detail["comment"]) == (rating.score, rating.comment)
