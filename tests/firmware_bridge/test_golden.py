"""Golden vectors: literal bytes from DESIGN.md §4, which took them from open drivers written
against real boards. Both directions: the requests we build and the replies we decode.

Public sources found for the bytes (read for the facts only; no code taken):

- kerong-cu16: suryavirkapur/kerong-lib, include/kerong/kerong_client.hpp and
  src/kerong_client.cpp (STX ADDR CMD ETX SUM with ADDR = board<<4 | lock, CMD 30 status /
  31 unlock, a 9-byte 02 ADDR 35 L1-8 L9-16 IR1-8 IR9-16 03 SUM reply, SUM = byte sum);
  julio-alv/lkaas-kerong, src/kerong/command.rs (unlock 02 n 31 03 n+36, i.e. board 0 locks
  1..16 = 02 00 31 03 36 ... 02 0F 31 03 45).
- kerong-cu48b: AshurkovAV/KerongConsole, "KerongConsole/Коды для контролера запрос
  ответ.txt" (captured: query 02 00 00 60 03 65, reply 02 00 00 75 + 12 x 00 + 03 7A noted
  "all cells open", unlocks 02 00 LOCK 61 03 SUM with LOCK 0-based) and
  KerongCore/Helpers/CodesClass.cs (the same query; its unlock puts the lock in byte 1: one
  of the disagreements DESIGN.md keeps configurable).
- modbus-relay: the Waveshare wiki, https://www.waveshare.com/wiki/Modbus_RTU_Relay
  ("Development Protocol": FC05 flash at 0x0200+ch with a 100 ms count), and for the FC02
  door inputs the board that has them, https://www.waveshare.com/wiki/Modbus_RTU_Relay_(D).
- bcc-8a: the "锁控板通讯协议和规格书" spec at
  https://blog.csdn.net/u012909822/article/details/147892413 (unlock 8A 01 01 11 9B ->
  8A 01 01 00 8A, open-all 8A 01 00 11 9A, query one 80 01 01 33 B3 -> 80 01 01 00 80, ST 11
  = lock shut); the query-all vectors are DESIGN.md §4's (a Python driver sending
  80 01 00 33 B2 is in the search index, but its repository could not be identified).
- kerong-cu48: Kerong's own "CU48 Protocol And Introduction" v2.1 (2020-03-23), a copy in
  Boudha25/CasierIntelligent, Datasheet/cu48-protocol-and-introduction-v2.1.pdf; its frames
  are in test_vendor_vectors.py, with the other facts of tracker issue 12.
"""

from __future__ import annotations

import pytest

from firmware_bridge import BoardConfig
from firmware_bridge.protocols import get_protocol
from firmware_bridge.protocols.bcc8a import (
    BoardStateReply,
    ChannelStateReply,
    QueryAll,
    Unlock,
    UnlockReply,
)
from firmware_bridge.protocols.kerong import (
    Cu16Status,
    Cu16StatusReply,
    Cu48bQuery,
    Cu48bStatusReply,
)
from firmware_bridge.protocols.modbus_relay import Inputs, ReadInputs, WriteCoil


def b(text: str) -> bytes:
    return bytes.fromhex(text)


# (protocol, request built by the codec, expected bytes, source)
REQUESTS = [
    # DESIGN.md §4; format of suryavirkapur/kerong-lib src/kerong_client.cpp: board 1, lock 3.
    ("kerong-cu16", lambda p: p.unlock(1, 2, 500), "02 12 31 03 48"),
    ("kerong-cu16", lambda p: p.query_all(0, 16), "02 00 30 03 35"),
    # DESIGN.md §4 and Kerong's CU48 document v2.1 (LOCK is 0-based).
    ("kerong-cu48", lambda p: p.unlock(1, 2, 500), "02 01 02 51 03 59"),
    ("kerong-cu48", lambda p: p.query_all(1, 48), "02 01 00 50 03 56"),
    # DESIGN.md §4; format of AshurkovAV/KerongConsole's captured codes (LOCK in byte 2).
    ("kerong-cu48b", lambda p: p.unlock(1, 2, 500), "02 01 02 61 03 69"),
    ("kerong-cu48b", lambda p: p.query_all(1, 48), "02 01 00 60 03 66"),
    # DESIGN.md §4, from open drivers for generic 8A/80 RS-485 lock boards.
    ("bcc-8a", lambda p: p.unlock(1, 3, 300), "8A 01 03 11 99"),
    ("bcc-8a", lambda p: p.query_all(1, 24), "80 01 00 33 B2"),
    # https://blog.csdn.net/u012909822/article/details/147892413: lock 1 of board 1, open all.
    ("bcc-8a", lambda p: p.unlock(1, 1, 300), "8A 01 01 11 9B"),
    ("bcc-8a", lambda p: p.unlock_all(1), "8A 01 00 11 9A"),
    ("bcc-8a", lambda p: p.query_one(1, 1), "80 01 01 33 B3"),
    # DESIGN.md §4, https://www.waveshare.com/wiki/Modbus_RTU_Relay: flash ch3 for 200 ms.
    ("modbus-relay", lambda p: p.unlock(1, 2, 200), "01 05 02 02 00 02 EC 73"),
    ("modbus-relay", lambda p: p.query_all(1, 8), "01 02 00 00 00 08 79 CC"),
]


@pytest.mark.parametrize(("protocol", "build", "expected"), REQUESTS)
def test_request_bytes(protocol, build, expected):
    assert build(get_protocol(protocol)).pack() == b(expected)


def test_cu16_unlock_vectors_for_every_lock_of_board_0():
    # DESIGN.md §4 and julio-alv/lkaas-kerong src/kerong/command.rs (02 n 31 03 n+36):
    # board 0 locks 1..16 = 02 00 31 03 36 ... 02 0F 31 03 45.
    codec = get_protocol("kerong-cu16")
    frames = [codec.unlock(0, lock - 1, 500).pack() for lock in range(1, 17)]
    assert frames[0] == b("02 00 31 03 36")
    assert frames[-1] == b("02 0F 31 03 45")
    assert [f[1] for f in frames] == list(range(16))


@pytest.mark.parametrize(
    ("protocol", "raw", "kind", "fields"),
    [
        # The requests decode back (the simulator's side of the same vectors).
        ("kerong-cu16", "02 00 30 03 35", Cu16Status, {"board": 0, "lock": 0}),
        # DESIGN.md §4: one cu48b driver sends LOCK byte 30 in its query; both are queries.
        ("kerong-cu48b", "02 01 30 60 03 96", Cu48bQuery, {"board": 1, "lock": 0x30}),
        ("bcc-8a", "8A 01 03 11 99", Unlock, {"board": 1, "channel": 3}),
        ("bcc-8a", "80 01 00 33 B2", QueryAll, {"board": 1}),
        ("modbus-relay", "01 05 02 02 00 02 EC 73", WriteCoil, {"coil": 0x0202, "value": 2}),
        ("modbus-relay", "01 02 00 00 00 08 79 CC", ReadInputs, {"start": 0, "count": 8}),
    ],
)
def test_requests_decode(protocol, raw, kind, fields):
    codec = get_protocol(protocol)
    used, frame = codec.decode(b(raw), codec.REQUESTS)
    assert used == len(b(raw))
    assert isinstance(frame, kind)
    assert {k: getattr(frame, k) for k in fields} == fields


def test_cu48b_captured_reply():
    # DESIGN.md §4, a captured cu48b reply: 02 00 00 75 + 12 x 00 + 03 7A, from
    # AshurkovAV/KerongConsole "KerongConsole/Коды для контролера запрос ответ.txt", where it
    # is noted "all cells open": input 0 = open, so the default polarity (1 = locked) fits.
    raw = b("02 00 00 75" + " 00" * 12 + " 03 7A")
    codec = get_protocol("kerong-cu48b")
    used, frame = codec.decode(raw)
    assert used == 18
    assert frame == Cu48bStatusReply(board=0, locks=bytes(6), sensors=bytes(6))
    levels, sensors = codec.inputs(frame, BoardConfig("kerong-cu48b", 0))
    assert levels == [0] * 48 and sensors == [0] * 48
    # The same file: "02 00 00 75 01 00 ... 03 7B - lock closed" for cell one.
    one_shut = b("02 00 00 75 01" + " 00" * 11 + " 03 7B")
    levels, _ = codec.inputs(codec.decode(one_shut)[1], BoardConfig("kerong-cu48b", 0))
    assert levels[:2] == [1, 0]


def test_bcc8a_24_channel_reply_with_channel_3_low():
    # DESIGN.md §4, from open 8A-board drivers: 80 01 00 00 FB 33 49; the last data byte
    # holds channels 1-8, and the length (3 data bytes) comes from the frame.
    raw = b("80 01 00 00 FB 33 49")
    codec = get_protocol("bcc-8a")
    used, frame = codec.decode(raw, QueryAll(1, width=24).expected())
    assert used == 7
    assert frame.data == b("00 00 FB") and frame.board == 1
    # With no width known, the reply ends where the line goes quiet.
    assert codec.decode(raw, QueryAll.REPLIES) == (0, None)
    assert codec.decode(raw, QueryAll.REPLIES, final=True) == (7, BoardStateReply(1, frame.data))
    levels, _ = codec.inputs(frame, BoardConfig("bcc-8a", 1))
    assert len(levels) == 24
    assert levels[:8] == [1, 1, 0, 1, 1, 1, 1, 1]
    assert levels[8:] == [0] * 16


def test_bcc8a_channel_replies():
    # https://blog.csdn.net/u012909822/article/details/147892413: 8A 01 01 00 8A answers an
    # unlock of lock 1 ("opened", on locks whose feedback shorts when shut); 80 01 01 00 80
    # answers a query of lock 1, where ST 11 would mean shut and 00 open.
    codec = get_protocol("bcc-8a")
    unlock = codec.unlock(1, 1, 300)
    used, frame = codec.decode(b("8A 01 01 00 8A"), unlock.REPLIES)
    assert used == 5 and frame == UnlockReply(board=1, channel=1, state=0)
    assert unlock.answered_by(frame)
    query = codec.query_one(1, 1)
    used, frame = codec.decode(b("80 01 01 00 80"), query.REPLIES)
    assert used == 5 and frame == ChannelStateReply(board=1, channel=1, state=0)
    config = BoardConfig("bcc-8a", 1)
    assert codec.channel_inputs(query, frame, config, 1) == (0, None)
    shut = ChannelStateReply(board=1, channel=1, state=0x11)
    assert codec.channel_inputs(query, shut, config, 1) == (1, None)


def test_modbus_read_inputs_reply():
    # DESIGN.md §4, https://www.waveshare.com/wiki/Modbus_RTU_Relay_(D) (the relay board
    # with inputs; the relay-only board has none): read 8 inputs ->
    # 01 02 01 FB E0 0B (input 3 low).
    codec = get_protocol("modbus-relay")
    used, frame = codec.decode(b("01 02 01 FB E0 0B"))
    assert (used, frame) == (6, Inputs(board=1, data=b"\xfb"))
    assert codec.inputs(frame, BoardConfig("modbus-relay", 1))[0][:8] == [1, 1, 0, 1, 1, 1, 1, 1]


def test_modbus_flash_reply_is_an_echo():
    # DESIGN.md §4: the FC05 reply echoes the request.
    codec = get_protocol("modbus-relay")
    request = codec.unlock(1, 2, 200)
    used, frame = codec.decode(b("01 05 02 02 00 02 EC 73"), request.REPLIES)
    assert used == 8 and request.answered_by(frame)


def test_cu16_status_reply_layout():
    # Built from the documented layout (DESIGN.md §4: 02 ADDR 35 L1-8 L9-16 IR1-8 IR9-16 03
    # SUM), not a captured frame: board 1, lock 3 open, IR on channel 16.
    raw = b("02 10 35 FB FF 00 80 03")
    raw += bytes([sum(raw) & 0xFF])
    codec = get_protocol("kerong-cu16")
    used, frame = codec.decode(raw)
    assert used == 9 and isinstance(frame, Cu16StatusReply) and frame.board == 1
    levels, sensors = codec.inputs(frame, BoardConfig("kerong-cu16", 1))
    assert levels[:4] == [1, 1, 0, 1] and sensors[15] == 1 and sum(sensors) == 1


def test_garbage_before_reply_is_skipped():
    # DESIGN.md §4: garbage such as FA FD 99 99 before a reply.
    codec = get_protocol("modbus-relay")
    stream = b("FA FD 99 99 01 02 01 FB E0 0B")
    assert codec.decode_all(stream) == [Inputs(board=1, data=b"\xfb")]
    kerong = get_protocol("kerong-cu16")
    stream = b("FA FD 99 99") + kerong.query_all(0, 16).pack()
    assert kerong.decode_all(stream, kerong.REQUESTS) == [Cu16Status(0)]


def test_truncated_frame_then_good_frame():
    codec = get_protocol("kerong-cu16")
    good = Cu16StatusReply(address=0x10, locks=b"\xff\xff").pack()
    assert codec.decode_all(good[:4] + good) == [Cu16StatusReply(address=0x10, locks=b"\xff\xff")]


def test_bad_checksum_is_reported_and_skipped():
    codec = get_protocol("bcc-8a")
    rejected = []
    used, frame = codec.decode(b("8A 01 03 11 98"), on_reject=lambda raw, why: rejected.append(why))
    assert frame is None and used == 5
    assert rejected == ["bad checksum"]


def test_bcc8a_ambiguity_is_settled_by_the_expected_reply():
    # 80 01 03 00 82 33 33 is a 24-channel query-all reply whose first five bytes are also a
    # valid query-one reply (channel 3, ST 00): the format itself is ambiguous, so the
    # transaction always says which reply it awaits, and how long it is when known.
    codec = get_protocol("bcc-8a")
    raw = b("80 01 03 00 82 33 33")
    assert codec.decode(raw) == (5, ChannelStateReply(board=1, channel=3, state=0))
    assert codec.decode(raw, QueryAll.REPLIES, final=True) == (
        7,
        BoardStateReply(board=1, data=b("03 00 82")),
    )
    used, frame = codec.decode(raw, QueryAll(1, width=24).expected())
    assert used == 7 and frame.data == b("03 00 82")
    full = BoardStateReply(board=1, data=b("03 00")).pack()  # 80 01 03 00 33 B1
    assert codec.decode(full, QueryAll.REPLIES, final=True) == (
        6,
        BoardStateReply(board=1, data=b("03 00")),
    )
