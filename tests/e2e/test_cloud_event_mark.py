"""The ``events_upto`` mark of a full sync: the run of a locker's events the cloud holds from
seq 1 with no gap, so the locker can send again what a broker acknowledged and then lost."""

import pytest
from sqlmodel import Session

from cloud_api.mqtt.ingest import events_mark
from tests.e2e.conftest import BACKENDS, LOCKER_ID
from tests.e2e.test_cloud_mqtt_order import event, ingest
from xinbao.contract import EventMark

pytestmark = pytest.mark.slow


def mark(cloud) -> EventMark:
    with Session(cloud.engine) as session:
        found = events_mark(session, LOCKER_ID)
        session.commit()
    return found


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_the_mark_stops_at_the_first_gap_and_moves_on_when_it_fills(cloud):
    into = ingest(cloud, "test", 60)
    assert mark(cloud) == EventMark(seq=0)
    sent = {seq: event(seq, "door_closed", 1) for seq in range(1, 6)}
    for seq in (1, 2, 4, 5):
        into.event(LOCKER_ID, sent[seq].to_bytes())
    assert mark(cloud) == EventMark(seq=2, event_id=sent[2].event_id)
    into.event(LOCKER_ID, sent[3].to_bytes())  # the lost one, sent again
    assert mark(cloud) == EventMark(seq=5, event_id=sent[5].event_id)
    into.event(LOCKER_ID, sent[3].to_bytes())  # and again: a duplicate changes nothing
    assert mark(cloud) == EventMark(seq=5, event_id=sent[5].event_id)


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_a_locker_numbering_from_one_again_starts_a_new_run(cloud):
    into = ingest(cloud, "test", 0.1)
    for seq in range(1, 4):
        into.event(LOCKER_ID, event(seq, "door_closed", 1).to_bytes())
    assert mark(cloud).seq == 3
    # The controller's store was wiped: a new event numbered 1.
    again = [event(seq, "door_opened", 2) for seq in (1, 2)]
    into.event(LOCKER_ID, again[0].to_bytes())
    into.event(LOCKER_ID, again[1].to_bytes())
    assert mark(cloud) == EventMark(seq=2, event_id=again[1].event_id)
