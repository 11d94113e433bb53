"""``xinbao board`` through typer's CliRunner: output shapes and one-line errors with
distinct exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from firmware_bridge.cli import (
    EXIT_BAD_ARGUMENT,
    EXIT_GARBLED,
    EXIT_JAMMED,
    EXIT_LINK,
    EXIT_SILENT,
    board_app,
)
from tests.firmware_bridge.fake_board import Cu16Board

runner = CliRunner()


def run(*args: str):
    return runner.invoke(board_app, list(args))


def one_line_error(result) -> str:
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def cu16_port(make_peer):
    board = Cu16Board(1)
    peer = make_peer("kerong-cu16", board)
    return board, peer.url


def test_status_json_shape(cu16_port):
    board, url = cu16_port
    board.locked[1] = False
    result = run(
        "status",
        "--port",
        url,
        "--protocol",
        "kerong-cu16",
        "--board",
        "1",
        "--json",
        "--channels",
        "4",
        "--timeout",
        "0.2",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "board": 1,
        "channels": [
            {"channel": 1, "locked": True, "occupied": False},
            {"channel": 2, "locked": False, "occupied": False},
            {"channel": 3, "locked": True, "occupied": False},
            {"channel": 4, "locked": True, "occupied": False},
        ],
    }
    assert result.stdout.startswith('{"board": 1, "channels": [{"channel": 1, "locked": true')


def test_status_table(cu16_port):
    _, url = cu16_port
    result = run("status", "--port", url, "--protocol", "kerong-cu16", "--board", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("channel") == 16 and "locked" in result.stdout


def test_scan_lists_boards(cu16_port):
    _, url = cu16_port
    result = run(
        "scan",
        "--port",
        url,
        "--protocol",
        "kerong-cu16",
        "--addresses",
        "0-2",
        "--timeout",
        "0.05",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["board 1: answers"]


@pytest.mark.parametrize(
    ("jam", "code", "text"), [(False, 0, "opened"), (True, EXIT_JAMMED, "jammed")]
)
def test_unlock_says_what_happened(cu16_port, jam, code, text):
    board, url = cu16_port
    if jam:
        board.jammed.add(3)
    result = run(
        "unlock",
        "--port",
        url,
        "--protocol",
        "kerong-cu16",
        "--board",
        "1",
        "--channel",
        "3",
        "--pulse-ms",
        "50",
    )
    assert result.exit_code == code, result.output
    assert "board 1 channel 3" in result.output
    assert (text in result.output) or (jam and "still reads locked" in result.output)
    assert board.unlocked == [3]


def test_nonexistent_port():
    result = run(
        "status", "--port", "/dev/ttyDOESNOTEXIST", "--protocol", "kerong-cu16", "--board", "1"
    )
    assert result.exit_code == EXIT_LINK
    assert "/dev/ttyDOESNOTEXIST" in one_line_error(result)


def test_silent_board_on_loop():
    result = run(
        "status",
        "--port",
        "loop://",
        "--protocol",
        "kerong-cu16",
        "--board",
        "1",
        "--timeout",
        "0.05",
        "--retries",
        "0",
    )
    assert result.exit_code == EXIT_SILENT
    assert "board 1 did not answer" in one_line_error(result)


def test_bad_checksum(cu16_port):
    board, url = cu16_port
    board.corrupt = True
    result = run(
        "status",
        "--port",
        url,
        "--protocol",
        "kerong-cu16",
        "--board",
        "1",
        "--timeout",
        "0.1",
        "--retries",
        "0",
    )
    assert result.exit_code == EXIT_GARBLED
    assert "bad checksum" in one_line_error(result)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["status", "--protocol", "kerong-cu99", "--board", "1"], "unknown lock-board protocol"),
        (["status", "--protocol", "kerong-cu16", "--board", "16"], "address must be 0..15"),
        (
            ["unlock", "--protocol", "kerong-cu16", "--board", "1", "--channel", "0"],
            "channels 1..16, not 0",
        ),
        (["scan", "--protocol", "kerong-cu16", "--addresses", "one"], "--addresses takes"),
    ],
)
def test_bad_arguments(args, text):
    # /dev/ttyDOESNOTEXIST: the argument is refused before the port is touched.
    result = run(*args, "--port", "/dev/ttyDOESNOTEXIST")
    assert result.exit_code == EXIT_BAD_ARGUMENT
    assert text in one_line_error(result)


@pytest.mark.parametrize("command", [[], ["scan"], ["status"], ["unlock"]])
def test_help_documents_exit_codes(command):
    # `xinbao board` replaces the group help with its own line, so each command repeats them.
    result = run(*command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for code, meaning in [
        (EXIT_LINK, "serial port"),
        (EXIT_SILENT, "did not answer"),
        (EXIT_GARBLED, "garbled"),
        (EXIT_JAMMED, "jammed"),
    ]:
        assert f"{code} " in text and meaning in text
