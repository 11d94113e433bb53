"""Golden vectors of tracker issue 12: the lock boards as their vendors document them.

Each test names where its bytes come from:

- KERONG: Kerong's "CU48 Protocol And Introduction" v2.1 (2020-03-23), a copy committed in
  the public repository Boudha25/CasierIntelligent, Datasheet/cu48-protocol-and-introduction-
  v2.1.pdf (the frame format, the 0A broadcast, LOCK 30, the examples, "no reply" to 51).
- CAPTURE: AshurkovAV/KerongConsole, "KerongConsole/Коды для контролера запрос ответ.txt"
  (frames captured from a cu48b, among them the unexplained 77 frame).
- ISSUE: facts the tracker issue gathered from field drivers and captures (the 8A batch,
  keep-power and report heads, the 33-in-data reply, cu16 CMD 37 in 10 ms steps, the cu16
  broadcast nibble F). Where only a head byte is known, the rest of the frame is our
  assumption, said so in firmware_bridge/protocols/bcc8a.py, and the test says it too.
- WAVESHARE: https://www.waveshare.com/wiki/Modbus_RTU_Relay (FC05 flash, 100 ms steps) and
  https://www.waveshare.com/wiki/Modbus_RTU_Relay_(D) (FC02 door inputs).
"""

from __future__ import annotations

import logging

import pytest

from firmware_bridge import BoardConfig, ConfigError, LockBus
from firmware_bridge.config import check_address
from firmware_bridge.protocols import get_protocol
from firmware_bridge.protocols.bcc8a import (
    BatchUnlock,
    BoardStateReply,
    DoorReport,
    KeepPowerOff,
    KeepPowerOn,
    QueryAll,
)
from firmware_bridge.protocols.kerong import (
    Cu16PulseTime,
    Cu48bQuery,
    Cu48bStatusReply,
    Cu48bUnknown77,
    Cu48Query,
    Cu48StatusReply,
    Cu48Unlock,
    Cu48UnlockAll,
)
from firmware_bridge.protocols.modbus_relay import WriteCoil


def b(text: str) -> bytes:
    return bytes.fromhex(text)


CU48 = get_protocol("kerong-cu48")
BCC = get_protocol("bcc-8a")


def locked_channels(codec, frame, config) -> list[int]:
    levels, _ = codec.inputs(frame, config)
    return [i + 1 for i, level in enumerate(levels) if level == config.locked_level]


# -- kerong-cu48 ------------------------------------------------------------------------------

# (request built by the codec, bytes) -- all KERONG.
CU48_REQUESTS = [
    (lambda: CU48.query_all(0, 48), "02 00 00 50 03 55"),  # status of board 0
    (lambda: CU48.query_all(CU48.broadcast, 48), "02 0A 00 50 03 5F"),  # every board
    (lambda: CU48.unlock(0, 0, 500), "02 00 00 51 03 56"),  # lock 1 of board 0
    (lambda: CU48.unlock_all(0), "02 00 30 51 03 86"),  # LOCK 30: every lock of board 0
    (lambda: CU48.unlock_all(CU48.broadcast), "02 0A 30 51 03 90"),  # every lock, whole bus
]


@pytest.mark.parametrize(("build", "expected"), CU48_REQUESTS)
def test_cu48_requests(build, expected):
    request = build()
    assert request.pack() == b(expected)
    # The requests decode back to what they are (the simulator's side of the vectors).
    assert CU48.decode(b(expected), CU48.REQUESTS) == (6, request)


def test_cu48_unlock_all_is_its_own_request():
    # KERONG: LOCK 30 means every lock; 00-2F are locks 1-48, so a 30 never reads as lock 49.
    assert CU48.decode(b("02 00 30 51 03 86"), CU48.REQUESTS)[1] == Cu48UnlockAll(0)
    assert CU48.decode(b("02 00 2F 51 03 85"), CU48.REQUESTS)[1] == Cu48Unlock(0, 0x2F)
    with pytest.raises(ConfigError, match="lock must be 0..47"):
        Cu48Unlock(0, 0x30)


def test_cu48_vendor_status_example():
    # KERONG: 02 00 00 50 03 55 -> 02 00 00 65 07 00 00 00 00 C0 03 31, locks 1, 2, 3, 47
    # and 48 locked (1 = locked for the usual switch).
    used, frame = CU48.decode(b("02 00 00 65 07 00 00 00 00 C0 03 31"), Cu48Query.REPLIES)
    assert used == 12 and frame == Cu48StatusReply(0, b("07 00 00 00 00 C0"))
    assert Cu48Query(0).answered_by(frame)
    assert locked_channels(CU48, frame, BoardConfig("kerong-cu48", 0)) == [1, 2, 3, 47, 48]
    # Normally-closed switches read the other way round: polarity stays configurable.
    inverted = BoardConfig("kerong-cu48", 0, locked_level=0)
    assert len(locked_channels(CU48, frame, inverted)) == 43


def test_cu48_broadcast_reply_from_board_1():
    # KERONG: the broadcast query 02 0A 00 50 03 5F also drew this from board 1: lock 24.
    raw = b("02 01 00 65 00 00 80 00 00 00 03 EB")
    used, frame = CU48.decode(raw)
    assert used == 12 and frame.board == 1
    assert locked_channels(CU48, frame, BoardConfig("kerong-cu48", 1)) == [24]


@pytest.mark.parametrize("lock_byte", [0x00, 0x01, 0x30, 0xA5, 0xFF])
def test_cu48_reply_lock_byte_carries_no_meaning(lock_byte):
    # KERONG: the reply's LOCK byte "doesn't need to be dealt with": any value is a status.
    raw = bytearray(b("02 00 00 65 07 00 00 00 00 C0 03 00"))
    raw[2] = lock_byte
    raw[-1] = sum(raw[:-1]) & 0xFF
    used, frame = CU48.decode(bytes(raw), Cu48Query.REPLIES)
    assert used == 12 and frame.locks == b("07 00 00 00 00 C0")
    assert Cu48Query(0).answered_by(frame) and frame.pack() == bytes(raw)


def test_cu48_unlock_has_no_reply_by_default():
    # KERONG: 02 00 00 51 03 56 has no reply, so a cu48 board is not expected to answer.
    assert BoardConfig("kerong-cu48", 0).answers_unlock is False
    assert BoardConfig("kerong-cu48", 0, answers_unlock=True).answers_unlock is True  # kept
    assert BoardConfig("kerong-cu16", 0).answers_unlock is True
    assert BoardConfig("kerong-cu48b", 0).answers_unlock is True


@pytest.mark.parametrize("address", [10, 0x0A, 11, 255, -1])
def test_cu48_addresses_are_0_to_9(address):
    # KERONG: ADDR 00-09 are DIP settings; 0A is every board and never a board of its own.
    with pytest.raises(ConfigError, match=r"kerong-cu48 board address must be 0..9"):
        BoardConfig("kerong-cu48", address)
    with pytest.raises(ConfigError):
        check_address(CU48, address)


def test_cu48_scan_never_tries_the_broadcast(make_bus):
    assert list(CU48.scan_addresses) == list(range(10))
    bus = make_bus("loop://", "kerong-cu48")
    with pytest.raises(ConfigError, match="must be 0..9, not 10"):
        bus.scan([9, 10])


# -- kerong-cu48b -----------------------------------------------------------------------------


def test_cu48b_unknown_77_frame_is_valid_but_no_reply():
    # CAPTURE: 02 00 0a 77 01 00 00 00 00 00 01 00 00 00 00 00 03 88, a valid sum, meaning
    # unknown. It decodes as a notice, never as the answer to a query, never as garbage.
    raw = b("02 00 0A 77 01 00 00 00 00 00 01 00 00 00 00 00 03 88")
    codec = get_protocol("kerong-cu48b")
    rejected = []
    kinds = (*Cu48bQuery.REPLIES, *codec.NOTICES)
    used, frame = codec.decode(raw, kinds, lambda raw, why: rejected.append(why))
    assert used == 18 and isinstance(frame, Cu48bUnknown77) and frame.UNKNOWN
    assert frame.board == 0 and frame.lock_byte == 0x0A and frame.pack() == raw
    assert rejected == []
    assert not Cu48bQuery(0).answered_by(frame)
    # The replies of the same capture still decode as before (two drivers agree on them).
    used, frame = codec.decode(b("02 00 00 75 01 00 00 00 00 00 01 00 00 00 00 00 03 7C"))
    assert used == 18 and frame == Cu48bStatusReply(0, b("01 00 00 00 00 00"), b("01" + "00" * 5))


def test_cu48b_unknown_frame_is_logged_once_and_the_reply_used(make_peer, make_bus, caplog):
    # CAPTURE: a board that sends the 77 frame before each status reply.
    unknown = b("02 00 0A 77 01 00 00 00 00 00 01 00 00 00 00 00 03 88")
    status = b("02 00 00 75 01 00 00 00 00 00 01 00 00 00 00 00 03 7C")
    peer = make_peer("kerong-cu48b", lambda request: [(0, unknown), (0, status)])
    bus = make_bus(peer.url, "kerong-cu48b", retries=0)
    with caplog.at_level(logging.INFO, logger="firmware_bridge"):
        for _ in range(3):
            assert [c.channel for c in bus.status(0).channels if c.locked] == [1]
    noted = [r for r in caplog.records if "no documented meaning" in r.getMessage()]
    assert len(noted) == 1 and "02 00 0a 77" in noted[0].getMessage()
    assert bus.health(0).consecutive_timeouts == 0


# -- bcc-8a -----------------------------------------------------------------------------------


def test_bcc8a_reply_with_33_in_its_data_is_not_cut_short():
    # ISSUE: 80 01 00 33 B2 33 33 is one whole 24-channel reply (S3=00, S2=33, S1=B2), and
    # 80 01 00 33 B2 checks out on its own: framed on the width, or on silence, never on it.
    raw = b("80 01 00 33 B2 33 33")
    for kinds, final in ((QueryAll(1, width=24).expected(), False), (QueryAll.REPLIES, True)):
        used, frame = BCC.decode(raw, kinds, final=final)
        assert used == 7 and frame.data == b("00 33 B2"), kinds
    assert BCC.decode(raw, QueryAll.REPLIES) == (0, None)  # unknown width: wait for silence
    config = BoardConfig("bcc-8a", 1)
    levels, _ = BCC.inputs(frame, config)
    assert levels == [0, 1, 0, 0, 1, 1, 0, 1] + [1, 1, 0, 0, 1, 1, 0, 0] + [0] * 8


def test_bcc8a_byte_order_follows_the_width():
    # ISSUE: 24-channel boards hold channels 1-8 in the last data byte, 50-channel boards
    # (7 data bytes) in the first; configurable either way.
    wide = BoardStateReply(1, b("01 00 00 00 00 00 80"))
    assert locked_channels(BCC, wide, BoardConfig("bcc-8a", 1)) == [1, 56]
    narrow = BoardStateReply(1, b("80 00 01"))
    assert locked_channels(BCC, narrow, BoardConfig("bcc-8a", 1)) == [1, 24]
    last = BoardConfig("bcc-8a", 1, status_byte_order="last")
    assert locked_channels(BCC, wide, last) == [8, 49]
    first = BoardConfig("bcc-8a", 1, status_byte_order="first")
    assert locked_channels(BCC, narrow, first) == [8, 17]


def test_bcc8a_batch_unlock():
    # ISSUE: 90 01 02 02 02 93 opens channels 2, 10 and 18 of board 1 (S1 = channels 1-8).
    request = BCC.unlock_many(1, [2, 10, 18])
    assert request.pack() == b("90 01 02 02 02 93")
    assert BCC.decode(b("90 01 02 02 02 93"), BCC.REQUESTS) == (6, BatchUnlock(1, b("02 02 02")))
    assert request.channels == [2, 10, 18] and request.expected() == ()
    with pytest.raises(ConfigError, match="channels 1..24"):
        BCC.unlock_many(1, [25])


def test_bcc8a_keep_power_and_door_report():
    # ISSUE names the heads 9A (keep power on), 9B (off) and 82 (door report); the rest of
    # each frame is our assumption, the shape of every documented 8A frame (HEAD BOARD CH X
    # BCC): 9A/9B carry 11 like an unlock, 82 carries ST like a query-one reply.
    assert BCC.keep_power(1, 3, True).pack() == b("9A 01 03 11 89")
    assert BCC.keep_power(1, 3, False).pack() == b("9B 01 03 11 88")
    assert BCC.decode(b("9A 01 03 11 89"), BCC.REQUESTS)[1] == KeepPowerOn(1, 3)
    assert BCC.decode(b("9B 01 03 11 88"), BCC.REQUESTS)[1] == KeepPowerOff(1, 3)
    used, report = BCC.decode(b("82 01 03 00 80"))  # door 3 of board 1 now low (open)
    assert used == 5 and report == DoorReport(1, 3, 0)
    assert BCC.reported_input(report) == (3, 0)
    assert BCC.reported_input(DoorReport(1, 3, 0x11)) == (3, 1)


# -- modbus-relay and kerong-cu16 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pulse_ms", "frame"),
    [
        (200, "01 05 02 02 00 02 EC 73"),  # WAVESHARE / DESIGN.md §4: 2 x 100 ms
        (250, "01 05 02 02 00 03 2D B3"),  # ISSUE: never shorter, so 3 x 100 ms
        (201, "01 05 02 02 00 03 2D B3"),
        (50, "01 05 02 02 00 01 AC 72"),  # the shortest pulse still flashes one step
    ],
)
def test_modbus_pulse_is_rounded_up(pulse_ms, frame):
    codec = get_protocol("modbus-relay")
    request = codec.unlock(1, 2, pulse_ms)
    assert request.pack() == b(frame)
    assert isinstance(request, WriteCoil) and request.value * 100 >= pulse_ms


def test_cu16_pulse_time_frame():
    # ISSUE: set pulse time 02 ADDR 37 HI LO 03 SUM in 10 ms units: board 1, 500 ms = 50.
    codec = get_protocol("kerong-cu16")
    request = codec.pulse_time(1, 500)
    assert request.pack() == b("02 10 37 00 32 03 7E")
    assert codec.decode(b("02 10 37 00 32 03 7E"), codec.REQUESTS) == (7, Cu16PulseTime(1, 50))
    assert codec.pulse_time(1, 1234).pulse_ms == 1240  # rounded up to the board's step
    for bad in (0, -10, 655_351, True, "500"):
        with pytest.raises(ConfigError, match="pulse time must be"):
            codec.pulse_time(1, bad)
    with pytest.raises(ConfigError, match="no pulse-time request"):
        get_protocol("kerong-cu48").pulse_time(1, 500)


def test_cu16_scan_skips_the_broadcast_nibble():
    # ISSUE: one driver sends ADDR high nibble F to every board; 15 stays a valid address.
    codec = get_protocol("kerong-cu16")
    assert list(codec.scan_addresses) == list(range(15))
    assert BoardConfig("kerong-cu16", 15).address == 15


def test_status_width_is_checked():
    assert BoardConfig("bcc-8a", 1, channels=20, status_width=24).status_width == 24
    for bad in (20, 0, 72, True, "24"):
        with pytest.raises(ConfigError, match="status_width"):
            BoardConfig("bcc-8a", 1, status_width=bad)
    with pytest.raises(ConfigError, match="status_width"):
        BoardConfig("bcc-8a", 1, channels=32, status_width=24)
    with pytest.raises(ConfigError, match="status_width is for bcc-8a"):
        BoardConfig("kerong-cu48", 1, status_width=48)
    with pytest.raises(ConfigError, match="status_byte_order"):
        BoardConfig("bcc-8a", 1, status_byte_order="middle")


def test_lockbus_refuses_a_cu48_broadcast_as_a_board(make_bus):
    bus: LockBus = make_bus("loop://", "kerong-cu48")
    for call in (lambda: bus.status(10), lambda: bus.unlock(10, 1), lambda: bus.unlock_all(10)):
        with pytest.raises(ConfigError, match="must be 0..9"):
            call()
