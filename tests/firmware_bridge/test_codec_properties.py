"""Property tests of the sans-IO codecs: every message round-trips, line noise never raises
and never conjures a frame, and a stream decodes the same however it is split."""

from __future__ import annotations

import dataclasses

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from firmware_bridge.protocols import (
    PROTOCOLS,
    Frame,
    LockProtocol,
    bcc8a,
    get_protocol,
    kerong,
    modbus_relay,
)

# Bytes fields of frames: (min, max) length; other fields come from the class's RANGES.
BYTES_FIELDS = {
    (kerong.Cu16StatusReply, "locks"): (2, 2),
    (kerong.Cu16StatusReply, "sensors"): (2, 2),
    (kerong.Cu48StatusReply, "locks"): (6, 6),
    (kerong.Cu48bStatusReply, "locks"): (6, 6),
    (kerong.Cu48bStatusReply, "sensors"): (6, 6),
    (bcc8a.BoardStateReply, "data"): (1, bcc8a.MAX_DATA),
    (modbus_relay.Inputs, "data"): (1, 12),
}


def frames_of(kind: type[Frame]) -> st.SearchStrategy[Frame]:
    fields = {}
    for field in dataclasses.fields(kind):
        if (kind, field.name) in BYTES_FIELDS:
            low, high = BYTES_FIELDS[kind, field.name]
            fields[field.name] = st.binary(min_size=low, max_size=high)
        else:
            fields[field.name] = st.sampled_from(kind.RANGES[field.name])
    return st.builds(kind, **fields)


def kinds_of(codec: LockProtocol) -> list[type[Frame]]:
    return list(dict.fromkeys([*codec.REQUESTS, *codec.REPLIES]))


ALL_KINDS = [(name, kind) for name in PROTOCOLS for kind in kinds_of(get_protocol(name))]


def ambiguous(codec: LockProtocol, kind: type[Frame], raw: bytes) -> bool:
    """A bcc-8a query-all reply whose data holds 33 and a fitting XOR at the right spot also
    reads as a shorter reply: a property of the format (see bcc8a's docstring)."""
    return kind is bcc8a.BoardStateReply and kind.match(raw) != len(raw)


@st.composite
def protocol_and_frames(draw, max_frames: int = 4):
    name, kind = draw(st.sampled_from(ALL_KINDS))
    codec = get_protocol(name)
    frames = draw(st.lists(frames_of(kind), min_size=1, max_size=max_frames))
    return codec, kind, frames


def noise(codec: LockProtocol) -> st.SearchStrategy[bytes]:
    """Line noise that cannot start a frame: no start byte (Modbus: no unicast address)."""
    if codec.starts is None:
        alphabet = [0x00, *range(0xF8, 0x100)]
    else:
        alphabet = [x for x in range(0x100) if x not in codec.starts]
    return st.lists(st.sampled_from(alphabet), max_size=12).map(bytes)


def decode_stream(codec: LockProtocol, kind: type[Frame], chunks: list[bytes]) -> list[Frame]:
    buffer = b""
    found = []
    for chunk in chunks:
        buffer += chunk
        while buffer:
            used, frame = codec.decode(buffer, (kind,))
            if used == 0:
                break
            assert 0 < used <= len(buffer)
            buffer = buffer[used:]
            if frame is not None:
                found.append(frame)
    return found


@settings(max_examples=300)
@given(st.sampled_from(ALL_KINDS).flatmap(lambda nk: st.tuples(st.just(nk), frames_of(nk[1]))))
def test_every_message_round_trips(case):
    (name, kind), frame = case
    codec = get_protocol(name)
    raw = frame.pack()
    assume(not ambiguous(codec, kind, raw))
    assert codec.decode(raw, (kind,)) == (len(raw), frame)
    assert type(frame).unpack(raw) == frame
    if name != "bcc-8a" and kind in codec.REPLIES:
        # Outside bcc-8a, replies decode unambiguously even without saying what we await.
        assert codec.decode(raw) == (len(raw), frame)


@settings(max_examples=300)
@given(st.data())
def test_noise_around_frames_yields_exactly_the_frames(data):
    codec, kind, frames = data.draw(protocol_and_frames())
    stream = data.draw(noise(codec))
    for frame in frames:
        assume(not ambiguous(codec, kind, frame.pack()))
        stream += frame.pack() + data.draw(noise(codec))
    assert decode_stream(codec, kind, [stream]) == frames


@settings(max_examples=300)
@given(st.data())
def test_split_at_any_point_gives_the_same_frames(data):
    codec, kind, frames = data.draw(protocol_and_frames())
    stream = b"".join(f.pack() + data.draw(noise(codec)) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert decode_stream(codec, kind, chunks) == decode_stream(codec, kind, [stream])


@settings(max_examples=500)
@given(st.sampled_from(PROTOCOLS), st.binary(max_size=64), st.booleans())
def test_random_bytes_never_raise_and_only_yield_frames_they_contain(name, raw, requests):
    codec = get_protocol(name)
    kinds = codec.REQUESTS if requests else codec.REPLIES
    buffer = raw
    while buffer:
        used, frame = codec.decode(buffer, kinds)
        if used == 0:
            assert len(buffer) < 64  # only a possible frame start may wait for more
            break
        if frame is not None:
            # A frame only comes out of bytes that are exactly that frame, checksum and all.
            assert frame.pack() == buffer[:used]
        buffer = buffer[used:]


@given(st.sampled_from(ALL_KINDS).flatmap(lambda nk: st.tuples(st.just(nk), frames_of(nk[1]))))
def test_a_corrupted_checksum_never_decodes(case):
    (name, kind), frame = case
    codec = get_protocol(name)
    raw = frame.pack()
    bad = raw[:-1] + bytes([raw[-1] ^ 0x5A])
    assert all(f != frame for f in codec.decode_all(bad, (kind,)))
