"""The modbus-relay codec is pymodbus framing with our resync loop around it: these pin the
two pymodbus behaviours that made the loop and the custom FC05 PDU necessary (so a pymodbus
upgrade that changes them shows up here), and check that what we send and accept is exactly
what pymodbus builds and decodes.

Byte vectors: DESIGN.md §4, from the Waveshare Modbus RTU Relay wiki
(https://www.waveshare.com/wiki/Modbus_RTU_Relay, "Development Protocol").
"""

from __future__ import annotations

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.bit_message import (
    ReadDiscreteInputsRequest,
    ReadDiscreteInputsResponse,
    WriteSingleCoilRequest,
    WriteSingleCoilResponse,
)

from firmware_bridge.protocols import get_protocol
from firmware_bridge.protocols.modbus_relay import (
    REPLY_FRAMER,
    REQUEST_FRAMER,
    FlashCoil,
    Inputs,
    ReadInputs,
    Refusal,
    WriteCoil,
)

H = bytes.fromhex
GARBAGE = H("FA FD 99 99")  # what a USB adapter says when it wakes up (DESIGN.md §4)
INPUTS_REPLY = H("01 02 01 FB E0 0B")
FLASH_CH3_200MS = H("01 05 02 02 00 02 EC 73")


def test_pymodbus_handle_frame_loses_a_reply_after_garbage():
    # Why the codec runs its own resync loop: FD reads as an exception function code, the
    # five-byte "exception" fails its CRC, and handleFrame consumes the whole buffer.
    stock = FramerRTU(DecodePDU(is_server=False))
    assert stock.handleFrame(GARBAGE + INPUTS_REPLY, 0, 0) == (10, None)
    used, pdu = stock.handleFrame(INPUTS_REPLY, 0, 0)
    assert used == 6 and isinstance(pdu, ReadDiscreteInputsResponse)
    # Our decoder finds the reply behind the same garbage.
    codec = get_protocol("modbus-relay")
    assert codec.decode_all(GARBAGE + INPUTS_REPLY) == [Inputs(board=1, data=H("FB"))]


def test_stock_write_single_coil_cannot_carry_a_pulse_length():
    # Why FC05 is a custom PDU: pymodbus' coil write carries a bit, so "flash for 2 x 100 ms"
    # would go out as FF00 (relay on) and the echo's value would read back as True.
    stock = FramerRTU(DecodePDU(is_server=False))
    frame = stock.buildFrame(WriteSingleCoilRequest(address=0x0202, bits=[2], dev_id=1))
    assert frame[4:6] == H("FF 00")
    used, echo = stock.handleFrame(FLASH_CH3_200MS, 0, 0)
    assert isinstance(echo, WriteSingleCoilResponse) and echo.bits == [True]
    # Ours keeps the value both ways.
    assert WriteCoil(1, 0x0202, 2).pack() == FLASH_CH3_200MS
    assert WriteCoil.unpack(FLASH_CH3_200MS) == WriteCoil(1, 0x0202, 2)


def test_our_fc05_pdu_is_registered_on_our_decoders_only():
    assert REQUEST_FRAMER.decoder.lookupPduClass(FLASH_CH3_200MS) is FlashCoil
    assert REPLY_FRAMER.decoder.lookupPduClass(FLASH_CH3_200MS) is FlashCoil
    # pymodbus' own table is untouched: other code using pymodbus is not affected.
    assert DecodePDU(is_server=False).lookupPduClass(FLASH_CH3_200MS) is WriteSingleCoilResponse


def test_requests_are_pymodbus_frames():
    built = REQUEST_FRAMER.buildFrame(ReadDiscreteInputsRequest(dev_id=1, address=0, count=8))
    assert ReadInputs(1, 0, 8).pack() == built == H("01 02 00 00 00 08 79 CC")
    used, pdu = REQUEST_FRAMER.handleFrame(built, 0, 0)
    assert (used, pdu.dev_id, pdu.address, pdu.count) == (8, 1, 0, 8)


def test_replies_are_decoded_by_pymodbus():
    used, pdu = REPLY_FRAMER.handleFrame(INPUTS_REPLY, 0, 0)
    assert pdu.bits[:8] == [True, True, False, True, True, True, True, True]
    assert Inputs.unpack(INPUTS_REPLY) == Inputs(board=1, data=H("FB"))
    assert Inputs(board=1, data=H("FB")).pack() == INPUTS_REPLY

    exception = REPLY_FRAMER.buildFrame(ExceptionResponse(0x02, 0x02, device_id=1))
    assert Refusal(board=1, function=0x82, code=0x02).pack() == exception
    refusal = Refusal.unpack(exception)
    assert refusal == Refusal(board=1, function=0x82, code=0x02)
    assert refusal.refusal() == "Modbus exception 02 (illegal data address) to function 02"


def test_a_bad_crc_is_rejected_and_the_next_frame_found():
    codec = get_protocol("modbus-relay")
    spoilt = INPUTS_REPLY[:-1] + bytes([INPUTS_REPLY[-1] ^ 0xFF])
    rejected = []
    used, frame = codec.decode(spoilt, on_reject=lambda raw, why: rejected.append((raw, why)))
    assert frame is None and used == 1
    assert rejected == [(spoilt, "bad checksum")]
    assert codec.decode_all(spoilt + INPUTS_REPLY) == [Inputs(board=1, data=H("FB"))]


def test_query_one_reads_one_input_and_picks_it():
    from firmware_bridge import BoardConfig

    codec = get_protocol("modbus-relay")
    config = BoardConfig("modbus-relay", 1)
    request = codec.query_one(1, config.wire_channel(3))
    assert request == ReadInputs(1, start=2, count=1)
    assert request.pack() == REQUEST_FRAMER.buildFrame(
        ReadDiscreteInputsRequest(dev_id=1, address=2, count=1)
    )
    assert codec.channel_inputs(request, Inputs(1, H("00")), config, 3) == (0, None)
    assert codec.channel_inputs(request, Inputs(1, H("01")), config, 3) == (1, None)
