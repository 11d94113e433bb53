"""Arbitrary bytes on the line never crash a board: they are requests or dropped noise."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import PROTOCOLS, BoardSpec, Simulator
from simulator.link import LinkSession
from simulator.protocols import get_board_protocol


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=64))
def test_parse_always_makes_progress_or_waits(protocol, data):
    parser = get_board_protocol(protocol)
    buffer = data
    while buffer:
        consumed, request = parser.parse(buffer)
        assert 0 <= consumed <= len(buffer)
        if consumed == 0:
            break  # waiting for more bytes is fine; the link drops stale fragments
        assert request is None or request.raw == buffer[:consumed]
        buffer = buffer[consumed:]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.binary(max_size=24), max_size=6))
def test_link_survives_any_bytes(protocol, chunks):
    address = 1
    sim = Simulator([BoardSpec(protocol=protocol, address=address)], wire_timing=False)
    written: list[bytes] = []
    session = LinkSession(sim.bus, sim.truth, lambda b: written.append(b) or len(b), link="fuzz")
    now = 0.0
    for chunk in chunks:
        session.receive(chunk, now)
        session.run_due(now)
        now += 0.01
    session.run_due(now + 1.0)  # past the frame timeout: any fragment is noise now
    assert session.next_due() is None
    received = sum(len(e.data["hex"].split()) for e in sim.truth.events("frame_received"))
    dropped = sum(len(e.data["hex"].split()) for e in sim.truth.events("noise_dropped"))
    assert received + dropped == sum(len(c) for c in chunks)
    assert len(written) == len(sim.truth.events("reply_sent"))
