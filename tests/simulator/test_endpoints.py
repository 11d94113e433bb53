"""Endpoints: reassembly of split frames, reconnects, stopping, and a cabinet of two buses."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from simulator import BoardSpec, Cabinet, Simulator, SpecError
from tests.simulator.conftest import transact

H = bytes.fromhex
STATUS_B1 = H("02 10 30 03 45")  # DESIGN.md §4 cu16 frame format, board 1 status
OK_B1 = H("02 10 35 FF FF 00 00 03 48")


def cu16_sim(make_sim, **options):
    return make_sim(BoardSpec(protocol="kerong-cu16", address=1), **options)


def test_frame_written_byte_by_byte_is_reassembled(make_sim, connect):
    sim = cu16_sim(make_sim)
    port = connect(sim)
    for byte in STATUS_B1:
        port.write(bytes([byte]))
        port.flush()
        time.sleep(0.005)  # well under the 100 ms inter-byte reset of a board's receiver
    assert port.read(9) == OK_B1


def test_stale_fragment_is_dropped_before_the_next_request(make_sim, connect):
    sim = cu16_sim(make_sim)
    port = connect(sim)
    port.write(STATUS_B1[:3])  # a master killed mid-frame
    port.flush()
    assert sim.truth.wait_for("noise_dropped", timeout=5).data["hex"] == "02 10 30"
    assert transact(port, STATUS_B1, 9) == OK_B1


def test_new_tcp_master_takes_the_line_over(make_sim, open_port):
    sim = cu16_sim(make_sim)
    url = sim.start_tcp("127.0.0.1", 0)
    first = open_port(url)
    assert transact(first, STATUS_B1, 9) == OK_B1
    second = open_port(url)  # e.g. a controller restarted after kill -9
    assert transact(second, STATUS_B1, 9) == OK_B1
    reasons = [e.data["reason"] for e in sim.truth.events("master_disconnected")]
    assert reasons == ["replaced"]


def test_pty_survives_the_master_closing_and_reopening(make_sim, open_port):
    sim = cu16_sim(make_sim)
    dev = sim.start_pty()
    port = open_port(dev, baud=sim.baud)
    assert transact(port, STATUS_B1, 9) == OK_B1
    port.close()
    port = open_port(dev, baud=sim.baud)
    assert transact(port, STATUS_B1, 9) == OK_B1


def test_pty_master_at_the_wrong_speed_is_not_heard(make_sim, open_port):
    """A cu16 bus runs at 19200; a master set to 9600 puts framing errors on the line, so no
    board answers and the bytes are logged as noise with the speed they came at."""
    sim = cu16_sim(make_sim)
    assert sim.baud == 19200
    dev = sim.start_pty()
    port = open_port(dev, timeout=0.3, baud=9600)
    assert transact(port, STATUS_B1, 9) == b""
    noise = sim.truth.wait_for("noise_dropped", timeout=5)
    assert noise.data["baud"] == 9600 and noise.data["hex"] == STATUS_B1.hex(" ")
    assert sim.truth.events("frame_received") == []
    port.baudrate = 19200  # the technician fixes --baud: answered at once
    assert transact(port, STATUS_B1, 9) == OK_B1


def test_stop_closes_every_endpoint_and_is_idempotent():
    sim = Simulator([BoardSpec(protocol="bcc-8a", address=1)], wire_timing=False)
    with sim:
        url = sim.start_tcp("127.0.0.1", 0)
        ctl = sim.start_control("127.0.0.1", 0)
        assert sim.start_pty().startswith("/dev/")
    sim.stop()
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    with pytest.raises(httpx.ConnectError):
        httpx.get(ctl + "/boards", timeout=2)
    # The pty's reader thread must be gone too (the autouse health fixture checks it); we
    # do not write to the old path: another process on this machine may own it by now.
    with pytest.raises(SpecError):
        sim.start_tcp("127.0.0.1", 0)


def test_cabinet_control_api_picks_the_bus(open_port):
    with Cabinet() as cabinet:
        cabinet.add_bus("lockers", [BoardSpec(protocol="kerong-cu16", address=1)])
        cabinet.add_bus("aux", [BoardSpec(protocol="bcc-8a", address=1)])
        base = cabinet.start_control("127.0.0.1", 0)
        with httpx.Client(base_url=base, timeout=5) as client:
            body = {"board": 1, "fault": "forced_open", "channel": 2}
            ambiguous = client.post("/faults", json=body)
            assert ambiguous.status_code == 400 and "bus" in ambiguous.json()["error"]
            assert client.post("/faults", json={**body, "bus": "aux"}).status_code == 201
            assert client.post("/faults", json={**body, "bus": "attic"}).status_code == 404
            boards = client.get("/boards").json()["boards"]
        open_doors = [
            (b["bus"], c["channel"]) for b in boards for c in b["channels"] if c["door_open"]
        ]
        assert open_doors == [("aux", 2)]
        assert [e.bus for e in cabinet.truth.events("door_opened")] == ["aux"]
