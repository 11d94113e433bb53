"""DESIGN.md §4 golden vectors, sent as literal bytes over a real socket and a real pty.

Request bytes and the bcc-8a / modbus / cu48b replies are the literal vectors of DESIGN.md §4
(there taken from open drivers written against real boards). Where DESIGN gives only a frame
*format* (cu16 and cu48 status replies), the expected reply is built by hand from that format
and the test says so. Public sources named for the bytes: kerong-cu16
suryavirkapur/kerong-lib (src/kerong_client.cpp) and julio-alv/lkaas-kerong
(src/kerong/command.rs); kerong-cu48b AshurkovAV/KerongConsole ("KerongConsole/Коды для
контролера запрос ответ.txt", captured frames); modbus-relay
https://www.waveshare.com/wiki/Modbus_RTU_Relay (FC02 inputs: the "Modbus RTU Relay (D)"
board); kerong-cu48 Kerong's own "CU48 Protocol And Introduction" v2.1; bcc-8a the CSDN spec
named in tests/firmware_bridge/test_golden.py. The frames of tracker issue 12 are in
test_vendor_behaviour.py.
"""

from __future__ import annotations

import pytest

from simulator import BoardSpec
from tests.simulator.conftest import transact

H = bytes.fromhex


def test_cu16_unlock_board1_lock3_answers_with_status(make_sim, connect):
    # DESIGN.md §4 cu16: unlock board 1 lock 3 = 02 12 31 03 48. Reply built from the
    # documented format 02 ADDR 35 L1-8 L9-16 IR1-8 IR9-16 03 SUM: lock 3 now reads 0.
    sim = make_sim(BoardSpec(protocol="kerong-cu16", address=1))
    port = connect(sim)
    assert transact(port, H("02 12 31 03 48"), 9) == H("02 12 35 FB FF 00 00 03 46")
    assert sim.compartment(1, 3).door_open


def test_cu16_status_of_board0(make_sim, connect):
    # DESIGN.md §4 cu16: status of board 0 = 02 00 30 03 35; all 16 locked, nothing inside.
    sim = make_sim(BoardSpec(protocol="kerong-cu16", address=0))
    port = connect(sim)
    assert transact(port, H("02 00 30 03 35"), 9) == H("02 00 35 FF FF 00 00 03 38")


def test_cu16_status_carries_infrared_bytes(make_sim, connect):
    sim = make_sim(BoardSpec(protocol="kerong-cu16", address=0))
    port = connect(sim)
    sim.inject(0, "forced_open", channel=10)
    sim.put_item(0, 10)
    sim.close_door(0, 10)
    # Lock 10 latched again after closing; its IR bit (byte IR9-16, bit 1) sees the item.
    assert transact(port, H("02 00 30 03 35"), 9) == H("02 00 35 FF FF 00 02 03 3A")


def test_cu16_board0_locks_1_to_16_silent_board(make_sim, connect):
    # DESIGN.md §4 cu16: board 0 locks 1..16 are 02 00 31 03 36 ... 02 0F 31 03 45.
    sim = make_sim(BoardSpec(protocol="kerong-cu16", address=0, answers_unlock=False))
    port = connect(sim, timeout=0.2)
    frames = [
        bytes([0x02, lock - 1, 0x31, 0x03, (0x36 + lock - 1) & 0xFF]) for lock in range(1, 17)
    ]
    assert frames[0] == H("02 00 31 03 36") and frames[-1] == H("02 0F 31 03 45")
    for frame in frames:
        port.write(frame)
    seen = 0
    for _ in range(16):
        event = sim.truth.wait_for("door_opened", since=seen, timeout=5)
        assert event is not None
        seen = event.seq
    opened = [e.channel for e in sim.truth.events("door_opened")]
    assert opened == list(range(1, 17))
    assert port.read(1) == b""  # this board stays silent after an unlock


def test_cu48_unlock_is_silent_and_query_answers(make_sim, connect):
    # Kerong's "CU48 Protocol And Introduction" v2.1 (Boudha25/CasierIntelligent,
    # Datasheet/): unlock 02 01 02 51 03 59 (LOCK 0-based) has no reply; query
    # 02 01 00 50 03 56 -> 02 ADDR xx 65 D1..D6 03 SUM (xx pinned to 00 here; by default the
    # simulated board puts junk there, see test_vendor_behaviour.py).
    sim = make_sim(BoardSpec(protocol="kerong-cu48", address=1, reply_lock_byte=0))
    port = connect(sim, timeout=0.1)
    expected = H("02 01 00 65 FB FF FF FF FF FF 03 61")
    assert sum(expected[:-1]) & 0xFF == 0x61
    assert transact(port, H("02 01 02 51 03 59"), 12) == b""
    # The board takes requests in order: the query's answer shows the unlock's effect.
    assert transact(port, H("02 01 00 50 03 56"), 12) == expected
    assert sim.compartment(1, 3).door_open


@pytest.mark.parametrize("query", ["02 01 00 60 03 66", "02 01 30 60 03 96"])
def test_cu48b_query_accepts_both_lock_byte_forms(make_sim, connect, query):
    # DESIGN.md §4 cu48b: query with LOCK byte 00, and with 30 as one driver sends it.
    sim = make_sim(BoardSpec(protocol="kerong-cu48b", address=1))
    port = connect(sim)
    sim.inject(1, "forced_open", channel=2)
    sim.put_item(1, 2)
    reply = transact(port, H(query), 18)
    assert reply[:4] == H("02 01 00 75")
    assert reply[4:10] == H("FD FF FF FF FF FF")  # lock 2 open
    assert reply[10:16] == H("02 00 00 00 00 00")  # S1: sensor 2 sees the item
    assert reply[16] == 0x03 and reply[17] == sum(reply[:17]) & 0xFF


def test_cu48b_unlock_and_captured_reply(make_sim, connect):
    # DESIGN.md §4 cu48b: unlock 02 01 02 61 03 69; captured reply 02 00 00 75 + 12 x 00 +
    # 03 7A from board 0, noted "all cells open" in AshurkovAV/KerongConsole's captured codes:
    # every lock input 0 (open, at the default polarity 1 = locked) and every sensor empty.
    sim = make_sim(
        BoardSpec(protocol="kerong-cu48b", address=0),
        BoardSpec(protocol="kerong-cu48b", address=1, answers_unlock=False),
    )
    sim.inject(0, "forced_open")  # every door of board 0
    port = connect(sim, timeout=0.3)
    assert transact(port, H("02 00 00 60 03 65"), 18) == H("02 00 00 75") + bytes(12) + H("03 7A")
    assert transact(port, H("02 01 02 61 03 69"), 18) == b""
    assert sim.compartment(1, 3).door_open and not sim.compartment(1, 2).door_open


def test_bcc8a_unlock_and_query_all_24_inputs(make_sim, connect):
    # DESIGN.md §4 bcc-8a: unlock 8A 01 03 11 99; query all 80 01 00 33 B2; a 24-input board
    # with channel 3 low answers 80 01 00 00 FB 33 49. The vector reads 0 on inputs 9-24:
    # a 24-input board with 8 locks wired (unwired inputs read 0).
    sim = make_sim(BoardSpec(protocol="bcc-8a", address=1, channels=8, status_width=24))
    port = connect(sim)
    # Unlock reply 8A BOARD CH ST BCC; ST 00 = input low (unlocked, polarity 1 = locked).
    assert transact(port, H("8A 01 03 11 99"), 5) == H("8A 01 03 00 88")
    assert transact(port, H("80 01 00 33 B2"), 7) == H("80 01 00 00 FB 33 49")


def test_bcc8a_open_all_and_query_one(make_sim, connect):
    # https://blog.csdn.net/u012909822/article/details/147892413: open all of board 1 is
    # 8A 01 00 11 9A (no reply documented: the simulated board stays silent); query lock 1
    # is 80 01 01 33 B3, answered 80 01 01 00 80 when it is open (11 would mean shut).
    sim = make_sim(BoardSpec(protocol="bcc-8a", address=1, channels=8))
    port = connect(sim, timeout=0.3)
    assert transact(port, H("80 01 01 33 B3"), 5) == H("80 01 01 11 91")
    assert transact(port, H("8A 01 00 11 9A"), 5) == b""
    assert [e.channel for e in sim.truth.events("lock_pulse")] == list(range(1, 9))
    assert transact(port, H("80 01 01 33 B3"), 5) == H("80 01 01 00 80")


def test_bcc8a_query_one_and_first_byte_order(make_sim, connect):
    sim = make_sim(BoardSpec(protocol="bcc-8a", address=2, channels=16, status_byte_order="first"))
    port = connect(sim)
    sim.inject(2, "forced_open", channel=9)
    # 80 02 09 33 + BCC -> 80 02 09 ST BCC
    assert transact(port, H("80 02 09 33 B8"), 5) == H("80 02 09 00 8B")
    assert transact(port, H("80 02 01 33 B0"), 5) == H("80 02 01 11 92")
    # Query all, channels 1-8 first: FF then FE (channel 9 low).
    assert transact(port, H("80 02 00 33 B1"), 6) == H("80 02 FF FE 33 B0")


def test_modbus_flash_and_read_inputs(make_sim, connect):
    # DESIGN.md §4 modbus-relay: flash channel 3 for 200 ms = 01 05 02 02 00 02 EC 73 (echoed);
    # read 8 inputs 01 02 00 00 00 08 79 CC -> 01 02 01 FB E0 0B. FB = 1111 1011: bit 2
    # (channel 3) is 0 and the rest 1, so DESIGN implies bit i = input i+1 and an input
    # reads 1 while its door is closed/locked: our default locked_level=1.
    sim = make_sim(BoardSpec(protocol="modbus-relay", address=1))
    port = connect(sim)
    assert transact(port, H("01 05 02 02 00 02 EC 73"), 8) == H("01 05 02 02 00 02 EC 73")
    pulse = sim.truth.events("lock_pulse")[0]
    assert (pulse.channel, pulse.data["duration_s"]) == (3, 0.2)
    assert transact(port, H("01 02 00 00 00 08 79 CC"), 6) == H("01 02 01 FB E0 0B")


def test_modbus_exceptions_and_plain_relay(make_sim, connect):
    from firmware_bridge.checksums import crc16_modbus

    def seal(body: str) -> bytes:
        return H(body) + crc16_modbus(H(body))

    sim = make_sim(BoardSpec(protocol="modbus-relay", address=1, channels=8))
    port = connect(sim)
    # Read holding registers is not a relay-board function: exception 01.
    assert transact(port, seal("01 03 00 00 00 01"), 5) == seal("01 83 01")
    # Inputs past the board: exception 02 (illegal data address).
    assert transact(port, seal("01 02 00 00 00 10"), 5) == seal("01 82 02")
    # Plain relay on (FF00) holds the latch released; FC01 shows it; off re-arms.
    assert transact(port, seal("01 05 00 04 FF 00"), 8) == seal("01 05 00 04 FF 00")
    assert sim.compartment(1, 5).door_open
    assert transact(port, seal("01 01 00 00 00 08"), 6) == seal("01 01 01 10")
    assert transact(port, seal("01 05 00 04 00 00"), 8) == seal("01 05 00 04 00 00")
    assert transact(port, seal("01 01 00 00 00 08"), 6) == seal("01 01 01 00")
    # A coil value that is neither FF00 nor 0000: exception 03.
    assert transact(port, seal("01 05 00 04 12 34"), 5) == seal("01 85 03")
