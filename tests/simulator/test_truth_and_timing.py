"""Ground-truth log content and the wire-time arithmetic (floors by construction, no speeds)."""

from __future__ import annotations

import io
import json
import threading
import time

from simulator import BoardSpec, Cabinet, GroundTruth
from tests.simulator.conftest import transact

H = bytes.fromhex


def test_log_records_a_whole_pickup_in_order(make_sim, connect):
    sim = make_sim(BoardSpec(protocol="kerong-cu16", address=1))
    port = connect(sim)
    transact(port, H("02 12 31 03 48"), 9)
    sim.put_item(1, 3)
    sim.close_door(1, 3)
    kinds = [e.kind for e in sim.truth.events() if e.kind != "master_connected"]
    assert kinds == [
        "frame_received",
        "lock_pulse",
        "door_opened",
        "reply_sent",
        "item_put",
        "door_closed",
    ]
    frame = sim.truth.events("frame_received")[0]
    assert frame.data["hex"] == "02 12 31 03 48" and frame.data["command"] == "unlock"
    assert (frame.board, frame.channel) == (1, 3)
    assert frame.mono == frame.data["on_wire_complete"]
    seqs = [e.seq for e in sim.truth.events()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    later = sim.truth.events(since=frame.seq)
    assert frame not in later and later[0].seq == frame.seq + 1


def test_jsonl_dump_round_trips():
    truth = GroundTruth()
    truth.record("door_opened", board=1, channel=2, by="forced")
    truth.record("item_put", board=1, channel=2, by="tester", items=1)
    out = io.StringIO()
    assert truth.dump_jsonl(out) == 2
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["kind"] for r in rows] == ["door_opened", "item_put"]
    assert rows[1]["data"] == {"items": 1} and rows[0]["by"] == "forced"
    assert {"wall", "mono", "seq"} <= set(rows[0])


def test_wait_for_sees_an_event_from_another_thread():
    truth = GroundTruth()
    timer = threading.Timer(0.05, lambda: truth.record("door_closed", board=1, channel=1))
    timer.start()
    try:
        event = truth.wait_for("door_closed", timeout=5)
    finally:
        timer.join()
    assert event is not None and event.channel == 1
    assert truth.wait_for("door_opened", timeout=0.05) is None


def test_wire_timing_frame_is_complete_no_earlier_than_its_bytes_allow(make_sim, open_port):
    sim = make_sim(
        BoardSpec(protocol="kerong-cu16", address=1), wire_timing=True, reply_delay=0.001
    )
    port = open_port(sim.start_pty(), timeout=2, baud=sim.baud)
    sent_at = time.monotonic()
    reply = transact(port, H("02 10 30 03 45"), 9)
    got_at = time.monotonic()
    assert len(reply) == 9
    frame = sim.truth.events("frame_received")[0]
    sent = sim.truth.events("reply_sent")[0]
    char = 10 / 19200
    # Floors that hold by construction: 5 request bytes and 9 reply bytes of 10 bits.
    assert frame.mono >= sent_at + 5 * char
    assert sent.mono >= frame.mono + 0.001 + 9 * char
    assert got_at >= sent.mono


def test_modbus_board_waits_out_the_end_of_frame_silence(make_sim, open_port):
    """An RTU slave knows a request ended only after 3.5 characters of silence (11-bit
    characters at 9600 baud: 4.01 ms), so its reply starts no sooner than that plus its
    think time."""
    sim = make_sim(
        BoardSpec(protocol="modbus-relay", address=1), wire_timing=True, reply_delay=0.001
    )
    port = open_port(sim.start_pty(), timeout=2, baud=sim.baud)
    assert transact(port, H("01 02 00 00 00 08 79 CC"), 6) == H("01 02 01 FF E1 C8")
    frame = sim.truth.events("frame_received")[0]
    sent = sim.truth.events("reply_sent")[0]
    t35 = 3.5 * 11 / 9600
    assert sent.mono >= frame.mono + t35 + 0.001 + 6 * 10 / 9600


def test_cabinet_shares_one_truth_log(open_port):
    with Cabinet() as cabinet:
        lockers = cabinet.add_bus(
            "lockers", [BoardSpec(protocol="kerong-cu16", address=1)], wire_timing=False
        )
        aux = cabinet.add_bus("aux", [BoardSpec(protocol="bcc-8a", address=1)], wire_timing=False)
        lockers.board(1).unlock(1)
        aux.board(1).unlock(2)
        opened = [(e.bus, e.channel) for e in cabinet.truth.events("door_opened")]
        assert opened == [("lockers", 1), ("aux", 2)]
