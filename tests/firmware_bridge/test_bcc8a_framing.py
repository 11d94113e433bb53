"""8A status replies are as long as their board is wide and their data may hold ``33`` and a
fitting XOR (tracker issue 12: ``80 01 00 33 B2 33 33`` is one whole 24-channel reply), so
they are framed on the board's width, or on the line going quiet while it is unknown.

Properties: for every channel count 1..64, any status round-trips through encode (the
simulator's board side, and the codec's frame) -> stream decode with the line split
anywhere -> the channel levels, in either byte order; and back-to-back replies of a known
width never run together, whatever their data.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import BoardConfig
from firmware_bridge.protocols import bcc8a, get_protocol
from simulator.board import PhantomBoard
from simulator.protocols.bcc8a import Bcc8a as BoardSide
from simulator.spec import BoardSpec

CODEC = get_protocol("bcc-8a")
ORDERS = st.sampled_from([None, "last", "first"])


def width_of(channels: int) -> int:
    return -(-channels // 8) * 8


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(min(c, len(data)) for c in cuts)
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def stream_decode(chunks: list[bytes], kinds, *, silence_at_end: bool) -> list[bcc8a.Frame]:
    """Feed ``chunks`` as a port delivers them; with ``silence_at_end`` the line then goes
    quiet (the transaction's ``final`` flush)."""
    buffer, frames = b"", []
    for i, chunk in enumerate(chunks):
        buffer += chunk
        final = silence_at_end and i == len(chunks) - 1
        while buffer:
            used, frame = CODEC.decode(buffer, kinds, final=final)
            if used == 0:
                break
            buffer = buffer[used:]
            if frame is not None:
                frames.append(frame)
    assert buffer == b""
    return frames


class LevelsBoard(PhantomBoard):
    """A board-side view reading fixed input levels, for the simulator's reply builder."""

    def __init__(self, spec: BoardSpec, levels: list[int]) -> None:
        super().__init__(spec)
        self._levels = levels

    def levels(self) -> list[int]:
        return list(self._levels)


@st.composite
def board_status(draw):
    channels = draw(st.integers(1, bcc8a.MAX_DATA * 8))
    levels = draw(st.lists(st.integers(0, 1), min_size=channels, max_size=channels))
    return channels, levels, draw(ORDERS)


def simulated_reply(channels: int, levels: list[int], order: str | None) -> bytes:
    spec = BoardSpec("bcc-8a", 1, channels=channels, status_byte_order=order)
    reply = BoardSide().respond(
        BoardSide().parse(bytes.fromhex("80 01 00 33 B2"))[1], LevelsBoard(spec, levels)
    )
    assert reply is not None
    return reply


@settings(max_examples=400, deadline=None)
@given(board_status(), st.lists(st.integers(0, 12), max_size=6), st.booleans())
def test_any_status_round_trips_with_any_split(status, cuts, width_known):
    channels, levels, order = status
    raw = simulated_reply(channels, levels, order)
    assert len(raw) == 2 + width_of(channels) // 8 + 2
    request = CODEC.query_all(1, channels, width_of(channels) if width_known else None)
    # A known width frames the reply on its length; an unknown one on the silence after it.
    frames = stream_decode(split(raw, cuts), request.expected(), silence_at_end=True)
    assert len(frames) == 1 and request.answered_by(frames[0]) and frames[0].pack() == raw
    config = BoardConfig("bcc-8a", 1, channels=channels, status_byte_order=order)
    got, _ = CODEC.inputs(frames[0], config)
    assert got[:channels] == levels
    assert CODEC.reply_width(frames[0]) == width_of(channels)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, bcc8a.MAX_DATA),
    st.lists(st.binary(min_size=1, max_size=bcc8a.MAX_DATA), min_size=1, max_size=4),
    st.lists(st.integers(0, 60), max_size=8),
)
def test_replies_of_a_known_width_never_run_together(data_bytes, payloads, cuts):
    """Whatever their data hold (33s and lucky XORs included), back-to-back replies framed
    on their width come out one by one and whole, however the line splits them."""
    kind = bcc8a.BoardStateReply.sized(data_bytes)
    replies = [kind(1, (p * data_bytes)[:data_bytes]) for p in payloads]
    stream = b"".join(r.pack() for r in replies)
    frames = stream_decode(split(stream, cuts), (kind,), silence_at_end=False)
    assert frames == replies


@given(st.binary(min_size=1, max_size=bcc8a.MAX_DATA), ORDERS)
def test_a_reply_cut_at_a_lucky_33_is_not_taken_early(data, order):
    """The first ``33 BCC`` that checks out ends nothing while the line still talks."""
    raw = bcc8a.BoardStateReply(1, data).pack()
    for end in range(5, len(raw)):
        assert CODEC.decode(raw[:end], bcc8a.QueryAll.REPLIES) == (0, None)
    assert CODEC.decode(raw, bcc8a.QueryAll.REPLIES, final=True) == (
        len(raw),
        bcc8a.BoardStateReply(1, data),
    )


def test_the_issue_example_round_trips():
    # Tracker issue 12: 80 01 00 33 B2 33 33, S3=00, S2=33, S1=B2.
    raw = bytes.fromhex("80 01 00 33 B2 33 33")
    levels = [0, 1, 0, 0, 1, 1, 0, 1] + [1, 1, 0, 0, 1, 1, 0, 0] + [0] * 8
    assert simulated_reply(24, levels, None) == raw
    for cuts in ([], [5], [3, 5], [1, 2, 3, 4, 5, 6]):
        for width in (24, None):
            request = CODEC.query_all(1, 24, width)
            frames = stream_decode(split(raw, cuts), request.expected(), silence_at_end=True)
            assert [f.pack() for f in frames] == [raw]
