"""Property tests of the sans-IO codecs: every message round-trips, line noise never raises
and never conjures a frame, and a stream decodes the same however it is split.

Two kinds of noise: "safe" noise that cannot start a frame (so every frame must come out,
exactly), and any noise at all, truncated frames and corrupted copies of frames. With the
latter a decoder can only promise what a real line allows: it never raises, it yields only
frames whose exact bytes are on the line, and it yields every intact frame it is in step
with when the frame starts. The one way to lose an intact frame is a false frame that starts
in the junk before it, passes its checksum by luck and runs into it (the decoder cannot know
it was false); then the lost frame lies inside the false one's span, and nowhere else.
"""

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
    (kerong.Cu48bUnknown77, "data"): (12, 12),
    (bcc8a.BatchUnlock, "mask"): (3, 3),
    (modbus_relay.Inputs, "data"): (1, 12),
}
# An 8A status reply is framed on its board's width, so the stream properties are checked
# for each width (8..64 inputs); its length-unknown kind is framed on silence and has its
# own tests in test_bcc8a_framing.py.
SIZED_8A = [bcc8a.BoardStateReply.sized(n) for n in range(1, bcc8a.MAX_DATA + 1)]


def frames_of(kind: type[Frame]) -> st.SearchStrategy[Frame]:
    fields = {}
    for field in dataclasses.fields(kind):
        if not field.compare:
            continue  # not on the wire (an 8A query's expected width): keep its default
        if (kind, field.name) in BYTES_FIELDS:
            low, high = BYTES_FIELDS[kind, field.name]
            fields[field.name] = st.binary(min_size=low, max_size=high)
        elif issubclass(kind, bcc8a.BoardStateReply) and field.name == "data":
            fields[field.name] = st.binary(min_size=kind.DATA, max_size=kind.DATA)
        else:
            fields[field.name] = st.sampled_from(kind.RANGES[field.name])
    return st.builds(kind, **fields)


def kinds_of(codec: LockProtocol) -> list[type[Frame]]:
    kinds = [*codec.REQUESTS, *codec.REPLIES, *codec.NOTICES]
    if bcc8a.BoardStateReply in kinds:
        kinds.remove(bcc8a.BoardStateReply)
        kinds += SIZED_8A
    return list(dict.fromkeys(kinds))


ALL_KINDS = [(name, kind) for name in PROTOCOLS for kind in kinds_of(get_protocol(name))]


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


def decode_spans(
    codec: LockProtocol, kind: type[Frame], chunks: list[bytes]
) -> list[tuple[int, int, Frame]]:
    """Feed ``chunks`` as they would arrive, then flush (``final=True``: the line went
    quiet); every frame with the span ``(start, end)`` of the stream it was taken from."""
    buffer = b""
    offset = 0  # stream position of buffer[0]
    found = []
    for i, chunk in enumerate(chunks):
        buffer += chunk
        last = i == len(chunks) - 1
        while buffer:
            used, frame = codec.decode(buffer, (kind,), final=last)
            if used == 0:
                assert not last, "a final decode always makes progress"
                break
            assert 0 < used <= len(buffer)
            if frame is not None:
                found.append((offset, offset + used, frame))
            buffer = buffer[used:]
            offset += used
    return found


def decode_stream(codec: LockProtocol, kind: type[Frame], chunks: list[bytes]) -> list[Frame]:
    return [frame for _, _, frame in decode_spans(codec, kind, chunks or [b""])]


@settings(max_examples=300)
@given(st.sampled_from(ALL_KINDS).flatmap(lambda nk: st.tuples(st.just(nk), frames_of(nk[1]))))
def test_every_message_round_trips(case):
    (name, kind), frame = case
    codec = get_protocol(name)
    raw = frame.pack()
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


# -- any junk around frames ---------------------------------------------------------------


@st.composite
def junk(draw, codec: LockProtocol, kind: type[Frame]) -> bytes:
    """What a line can carry between real frames: nothing, any bytes at all, the start of a
    frame that was cut off, or a whole frame with one byte spoilt (checksum or body)."""
    how = draw(st.sampled_from(["none", "any", "truncated", "corrupted", "mixed"]))
    if how == "none":
        return b""
    if how == "any":
        return draw(st.binary(min_size=1, max_size=16))
    if how == "mixed":
        return draw(junk(codec, kind)) + draw(junk(codec, kind))
    raw = draw(frames_of(kind)).pack()
    if how == "truncated":
        return raw[: draw(st.integers(1, len(raw) - 1))]
    at = draw(st.integers(0, len(raw) - 1))
    flip = draw(st.integers(1, 255))
    return raw[:at] + bytes([raw[at] ^ flip]) + raw[at + 1 :]


@st.composite
def junky_stream(draw):
    """(codec, kind, stream, [(start, frame)] of the intact frames that were sent)."""
    codec, kind, frames = draw(protocol_and_frames())
    stream = b""
    sent = []
    for frame in frames:
        raw = frame.pack()
        stream += draw(junk(codec, kind))
        sent.append((len(stream), frame))
        stream += raw
    stream += draw(junk(codec, kind))
    return codec, kind, stream, sent


@settings(max_examples=1500, deadline=None)
@given(junky_stream())
def test_any_junk_never_raises_conjures_or_loses_a_frame(case):
    codec, kind, stream, sent = case
    spans = decode_spans(codec, kind, [stream])
    for start, end, frame in spans:
        # Only frames whose exact bytes are on the line, checksum and all.
        assert stream[start:end] == frame.pack()
    taken = {(start, frame) for start, _, frame in spans}
    for start, frame in sent:
        if (start, frame) in taken:
            continue
        # Lost only inside a frame that began in the junk before it and checked out.
        assert any(s < start < e for s, e, _ in spans), (stream.hex(" "), start, frame)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_any_junk_split_anywhere_decodes_as_a_whole(data):
    codec, kind, stream, _ = data.draw(junky_stream())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert decode_stream(codec, kind, chunks) == decode_stream(codec, kind, [stream])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_after_a_quiet_stretch_no_frame_is_lost(data):
    """Junk followed by as many bytes that start no frame as the longest frame is long (what
    a quiet line gives a resync point): no junk can run into the next frame, so every intact
    frame comes out, at its own position."""
    codec, kind, frames = data.draw(protocol_and_frames())
    assume(codec.starts is not None)  # Modbus RTU has no start byte that silence can avoid
    quiet = bytes([next(b for b in range(0x100) if b not in codec.starts)]) * 18
    stream = b""
    sent = []
    for frame in frames:
        stream += data.draw(junk(codec, kind)) + quiet
        sent.append((len(stream), frame))
        stream += frame.pack()
    taken = {(start, frame) for start, _, frame in decode_spans(codec, kind, [stream])}
    assert set(sent) <= taken


def test_a_stray_head_byte_before_an_8a_reply_is_flushed():
    """The known case: ``80 | 80 00 00 33 B3``. The stray 80 could still start a reply of up
    to 12 bytes, so a streaming decoder waits; once the line is quiet (``final``) the head
    is given up and the reply behind it found."""
    codec = get_protocol("bcc-8a")
    stream = bytes.fromhex("80 80 00 00 33 B3")
    reply = bcc8a.BoardStateReply(board=0, data=b"\x00")
    assert reply.pack() == stream[1:]
    assert codec.decode(stream, (bcc8a.BoardStateReply,)) == (0, None)  # waiting for more
    assert codec.decode(stream, (bcc8a.BoardStateReply,), final=True) == (1, None)
    assert codec.decode_all(stream, (bcc8a.BoardStateReply,)) == [reply]
