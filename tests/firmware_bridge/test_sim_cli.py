"""``xinbao board`` as a real subprocess against the simulator: against an in-process
Simulator's pty (and TCP), and against ``xinbao sim boards --pty`` run as a process too.

Checks what a technician and a script see: stdout lines, the --json shape, one-line errors,
exit codes, and that every unlock pulsed exactly once (ground truth).
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_bridge.cli import (
    EXIT_BAD_ARGUMENT,
    EXIT_GARBLED,
    EXIT_JAMMED,
    EXIT_LINK,
    EXIT_SILENT,
)
from simulator import BoardSpec, Simulator
from tests.support.cli import XINBAO, one_line_error, xinbao

pytestmark = pytest.mark.slow

CU16 = ["--protocol", "kerong-cu16"]


@pytest.fixture
def cu16_sim() -> Iterator[Simulator]:
    specs = [BoardSpec("kerong-cu16", a, pulse_ms=100) for a in (1, 2)]
    with Simulator(specs, wire_timing=False, reply_delay=0.0) as sim:
        yield sim


def test_scan_status_unlock_against_a_pty(cu16_sim):
    sim = cu16_sim
    port = ["--port", sim.start_pty()]

    result = xinbao("board", "scan", *port, *CU16, "--addresses", "0-3", "--timeout", "0.5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["board 1: answers", "board 2: answers"]

    since = sim.truth.last_seq
    result = xinbao("board", "unlock", *port, *CU16, "--board", "2", "--channel", "5",
                    "--pulse-ms", "100")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "board 2 channel 5: opened\n"
    pulses = sim.truth.events("lock_pulse", since)
    assert [(p.board, p.channel) for p in pulses] == [(2, 5)]

    sim.put_item(2, 5)
    result = xinbao("board", "status", *port, *CU16, "--board", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # one JSON object on one line
    expected = {
        "board": 2,
        "channels": [
            {"channel": s.channel, "locked": s.locked, "occupied": s.occupied}
            for s in sim.board(2).states()
        ],
    }
    assert json.loads(result.stdout) == expected
    assert expected["channels"][4] == {"channel": 5, "locked": False, "occupied": True}

    result = xinbao("board", "status", *port, *CU16, "--board", "2", "--channels", "6")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "board 2 (kerong-cu16)"
    assert lines[1:] == [
        "  channel  1: locked  empty",
        "  channel  2: locked  empty",
        "  channel  3: locked  empty",
        "  channel  4: locked  empty",
        "  channel  5: open  occupied",
        "  channel  6: locked  empty",
    ]


def test_failures_have_their_exit_codes(cu16_sim):
    sim = cu16_sim
    port = ["--port", sim.start_pty()]
    fast = ["--timeout", "0.1", "--retries", "0"]

    sim.inject(1, "jammed", channel=6)
    since = sim.truth.last_seq
    result = xinbao("board", "unlock", *port, *CU16, "--board", "1", "--channel", "6",
                    "--pulse-ms", "100")  # fmt: skip
    assert result.returncode == EXIT_JAMMED
    assert "board 1 channel 6: pulse sent but the lock still reads locked" in one_line_error(result)
    assert [(p.board, p.channel) for p in sim.truth.events("lock_pulse", since)] == [(1, 6)]

    since = sim.truth.last_seq
    result = xinbao("board", "unlock", *port, *CU16, "--board", "4", "--channel", "1", *fast,
                    "--pulse-ms", "100")  # fmt: skip
    assert result.returncode == EXIT_SILENT
    assert "board 4 channel 1: no response" in one_line_error(result)
    assert sim.truth.events("lock_pulse", since) == []

    sim.inject(2, "duplicate_address")
    result = xinbao("board", "status", *port, *CU16, "--board", "2", *fast)
    assert result.returncode == EXIT_GARBLED
    assert "board 2" in one_line_error(result)

    # Refused before the port is touched: nothing reaches the line.
    since = sim.truth.last_seq
    result = xinbao("board", "unlock", *port, *CU16, "--board", "1", "--channel", "17")
    assert result.returncode == EXIT_BAD_ARGUMENT
    assert "channels 1..16" in one_line_error(result)
    result = xinbao("board", "status", *port, "--protocol", "kerong-cu99", "--board", "1")
    assert result.returncode == EXIT_BAD_ARGUMENT
    assert "unknown lock-board protocol" in one_line_error(result)
    assert sim.truth.events("frame_received", since) == []

    result = xinbao("board", "status", "--port", "/dev/xinbao-no-such-port", *CU16, "--board", "1")
    assert result.returncode == EXIT_LINK
    assert "cannot open serial port" in one_line_error(result)


def test_unlock_of_a_door_forced_open_says_it_was_already_open(cu16_sim):
    """Nobody had read the board in this run (a fresh ``xinbao board`` process): the bus
    reads it before the unlock, so the door found open is reported as such, not "opened"."""
    sim = cu16_sim
    port = ["--port", sim.start_pty()]
    sim.inject(1, "forced_open", channel=3)
    since = sim.truth.last_seq
    result = xinbao("board", "unlock", *port, *CU16, "--board", "1", "--channel", "3",
                    "--pulse-ms", "100")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "board 1 channel 3: was already open\n"
    assert result.stderr == ""
    commands = [e.data["command"] for e in sim.truth.events("frame_received", since)]
    assert commands == ["status", "unlock", "status"]
    assert [(p.board, p.channel) for p in sim.truth.events("lock_pulse", since)] == [(1, 3)]


def test_unlock_on_a_bad_checksum_board_is_one_line_naming_the_channel(cu16_sim):
    sim = cu16_sim
    port = ["--port", sim.start_pty()]
    sim.inject(1, "bad_checksum")
    args = ["board", "unlock", *port, *CU16, "--board", "1", "--channel", "4",
            "--pulse-ms", "100", "--timeout", "0.1", "--retries", "0"]  # fmt: skip
    since = sim.truth.last_seq
    result = xinbao(*args)
    assert result.returncode == EXIT_GARBLED
    line = one_line_error(result)
    assert line.startswith("error: board 1 channel 4: unlock sent, but reading the board after")
    assert "bad checksum" in line
    assert [(p.board, p.channel) for p in sim.truth.events("lock_pulse", since)] == [(1, 4)]

    # --verbose adds the bus's log lines (the garbled look before, the garbled reply...).
    sim.close_door(1, 4)
    result = xinbao(*args, "--verbose")
    assert result.returncode == EXIT_GARBLED
    lines = result.stderr.strip().splitlines()
    assert len(lines) > 1 and lines[-1].startswith("error: board 1 channel 4: unlock sent")
    assert any(line.startswith("WARNING ") for line in lines[:-1])


def test_scan_of_a_duplicate_address_says_garbled(cu16_sim):
    sim = cu16_sim
    port = ["--port", sim.start_pty()]
    sim.inject(2, "duplicate_address")
    scan = ["board", "scan", *port, *CU16, "--timeout", "0.5"]
    result = xinbao(*scan, "--addresses", "2-3")
    assert result.returncode == EXIT_GARBLED
    assert one_line_error(result) == (
        "error: address 2 answered garbled (two boards on one DIP address?)"
    )
    # A good board on the same bus is still listed; the error line follows.
    result = xinbao(*scan, "--addresses", "1-2")
    assert result.returncode == EXIT_GARBLED
    assert result.stdout.splitlines() == ["board 1: answers"]
    assert result.stderr.splitlines() == [
        "error: address 2 answered garbled (two boards on one DIP address?)"
    ]


def test_baud_overrides_the_protocol_default():
    """A cu16 bus whose boards were set to 9600 (the protocol's default is 19200): the pty
    carries the speed pyserial sets, and the simulator hears only a master at its own."""
    spec = BoardSpec("kerong-cu16", 1, pulse_ms=100)
    with Simulator([spec], wire_timing=False, reply_delay=0.0, baud=9600) as sim:
        port = ["--port", sim.start_pty()]
        status = ["board", "status", *port, *CU16, "--board", "1", "--json"]
        result = xinbao(*status, "--timeout", "0.1", "--retries", "0")
        assert result.returncode == EXIT_SILENT
        assert "board 1 did not answer" in one_line_error(result)
        assert [e.data["baud"] for e in sim.truth.events("noise_dropped")] == [19200]

        result = xinbao(*status, "--baud", "9600")
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)["channels"]) == 16
        assert len(sim.truth.events("frame_received")) == 1


def test_scan_over_tcp_with_nobody_there(cu16_sim):
    url = cu16_sim.start_tcp("127.0.0.1", 0)
    result = xinbao("board", "scan", "--port", url, *CU16, "--addresses", "1,2", "--timeout", "0.5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["board 1: answers", "board 2: answers"]
    result = xinbao("board", "scan", "--port", url, *CU16, "--addresses", "5-6", "--timeout", "0.1")
    assert result.returncode == EXIT_SILENT
    assert one_line_error(result).startswith(
        f"error: no kerong-cu16 board answered on {url} at 19200 baud: check the baud rate"
    )


@pytest.fixture
def sim_process(tmp_path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """``xinbao sim boards --pty`` as its own process; stopped with SIGTERM, as by a tester."""
    truth = tmp_path / "truth.jsonl"
    proc = subprocess.Popen(
        [*XINBAO, "sim", "boards", "--protocol", "bcc-8a", "--addresses", "1,2", "--pty",
         "--no-wire-timing", "--truth-log", str(truth)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = proc.stdout.readline()
        assert first.startswith("pty: "), first + proc.stderr.read()
        yield first.removeprefix("pty: ").strip(), proc, truth
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_against_the_simulator_process(sim_process):
    # Timeouts that expect an answer have room for a loaded machine: a board's reply that
    # came after 0.1 s was heard at the next address, and the scan called it garbled.
    device, proc, truth = sim_process
    port = ["--port", device, "--protocol", "bcc-8a"]

    result = xinbao("board", "scan", *port, "--addresses", "0-3", "--timeout", "0.5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["board 1: answers", "board 2: answers"]

    result = xinbao("board", "unlock", *port, "--board", "2", "--channel", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "board 2 channel 3: opened\n"

    result = xinbao("board", "status", *port, "--board", "2", "--json")
    assert result.returncode == 0, result.stderr
    channels = json.loads(result.stdout)["channels"]
    assert len(channels) == 24  # the simulated 8A board's size, read from its reply
    assert [c["channel"] for c in channels if not c["locked"]] == [3]
    assert all(c["occupied"] is None for c in channels)  # 8A frames carry no sensors

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert proc.stdout.read().strip().endswith("stopped")
    events = [json.loads(line) for line in truth.read_text().splitlines()]
    pulses = [(e["board"], e["channel"]) for e in events if e["kind"] == "lock_pulse"]
    assert pulses == [(2, 3)]


@pytest.mark.parametrize(
    ("protocol", "baud"), [("kerong-cu16", 19200), ("bcc-8a", 9600), ("modbus-relay", 9600)]
)
def test_detect_names_the_protocol_the_boards_speak(protocol, baud):
    """Issue 13: technicians often do not know the board model. ``detect`` tries every
    protocol at its usual rates and names the one that answers, with the boards."""
    with Simulator(
        [BoardSpec(protocol, a) for a in (1, 2)], wire_timing=False, reply_delay=0.0
    ) as sim:
        result = xinbao(
            "board", "detect", "--port", sim.start_pty(), "--addresses", "1-2",
            "--timeout", "0.3", "--progress",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{protocol} at {baud} baud: boards 1, 2"]
    # Progress: every address of every protocol tried is one stderr line.
    assert f"{protocol} {baud}: [2/2] address 2: answers (found so far: 1, 2)" in result.stderr


def test_scan_shows_progress_and_says_what_to_check_when_nothing_answers(cu16_sim):
    port = ["--port", cu16_sim.start_pty()]
    result = xinbao("board", "scan", *port, "--protocol", "kerong-cu48", "--addresses", "0-2",
                    "--timeout", "0.1", "--progress")  # fmt: skip
    assert result.returncode == EXIT_SILENT
    lines = result.stderr.strip().splitlines()
    assert lines[:3] == [
        f"kerong-cu48: [{i}/3] address {i - 1}: silent (found so far: none)" for i in (1, 2, 3)
    ]
    assert lines[3] == (
        f"error: no kerong-cu48 board answered on {port[1]} at 19200 baud: check the baud "
        "rate, the protocol (xinbao board detect tries them all) and the A/B wiring"
    )


def test_map_pulses_each_channel_and_writes_the_compartments(cu16_sim, tmp_path):
    """The wiring wizard, scripted with --answers: one pulse per channel in order, the
    technician's answers become the controller's [[compartments]] section."""
    answers = tmp_path / "answers.txt"
    answers.write_text("5 M\n-\n6 l\n")
    out = tmp_path / "compartments.toml"
    since = cu16_sim.truth.last_seq
    result = xinbao(
        "board", "map", "--port", cu16_sim.start_pty(), *CU16, "--boards", "2",
        "--channels", "3", "--answers", str(answers), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pulses = cu16_sim.truth.events("lock_pulse", since)
    assert [(p.board, p.channel) for p in pulses] == [(2, 1), (2, 2), (2, 3)]
    import tomllib

    mapped = tomllib.loads(out.read_text())["compartments"]
    assert mapped == [
        {"number": 5, "size": "M", "board": 2, "channel": 1},
        {"number": 6, "size": "L", "board": 2, "channel": 3},
    ]
    # A malformed answer is one line naming it, and nothing is written.
    answers.write_text("5 M\n5 S\n")
    out.unlink()
    result = xinbao(
        "board", "map", "--port", cu16_sim.start_pty(), *CU16, "--boards", "2",
        "--channels", "3", "--answers", str(answers), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == EXIT_BAD_ARGUMENT
    assert result.stderr.splitlines()[-1].endswith("'5 S'): compartment 5 is already mapped")
    assert not out.exists()
