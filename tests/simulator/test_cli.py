"""``xinbao sim boards`` as a real process: prints where to connect, serves, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
import serial

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "xinbao.cli", "sim", "boards"]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_endpoints(proc: subprocess.Popen) -> dict[str, str]:
    found = {}
    for line in proc.stdout:
        if line.startswith("simulating"):
            return found
        kind, _, where = line.strip().partition(": ")
        found[kind] = where
    raise AssertionError(f"simulator exited early: {proc.stderr.read()}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    return proc.returncode, out, err


@pytest.mark.parametrize(
    ("endpoint", "sig"), [("--pty", signal.SIGINT), ("--tcp=127.0.0.1:0", signal.SIGTERM)]
)
def test_cli_serves_and_exits_cleanly(endpoint, sig, tmp_path):
    log = tmp_path / "truth.jsonl"
    proc = start(
        "--protocol",
        "kerong-cu16",
        "--addresses",
        "1,2",
        endpoint,
        "--no-wire-timing",
        "--control",
        "127.0.0.1:0",
        "--truth-log",
        str(log),
    )
    try:
        where = read_endpoints(proc)
        url = where.get("pty") or where.get("tcp")
        assert url.startswith("/dev/pts/" if endpoint == "--pty" else "socket://127.0.0.1:")
        with serial.serial_for_url(url, timeout=2, baudrate=19200) as port:
            port.write(bytes.fromhex("02 20 30 03 55"))  # DESIGN.md §4 cu16 format, board 2
            assert port.read(9) == bytes.fromhex("02 20 35 FF FF 00 00 03 58")
        boards = httpx.get(where["control"] + "/boards", timeout=5).json()["boards"]
        assert [b["address"] for b in boards] == [1, 2]
    finally:
        code, out, err = stop(proc, sig)
    assert code == 0 and "stopped" in out and "Traceback" not in err
    kinds = [json.loads(line)["kind"] for line in log.read_text().splitlines()]
    assert "frame_received" in kinds and "reply_sent" in kinds


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--protocol", "kerong-cu99", "--pty"], 2, "unknown protocol"),
        (["--protocol", "kerong-cu16", "--addresses", "1,x", "--pty"], 2, "not a number"),
        (["--protocol", "kerong-cu16", "--addresses", "16", "--pty"], 2, "outside 0..15"),
        (["--protocol", "kerong-cu16", "--tcp", "nohostport"], 2, "HOST:PORT"),
        (["--protocol", "kerong-cu16"], 2, "--tcp"),
        (["--protocol", "kerong-cu16", "--pty", "--baud", "7"], 2, "baud"),
        (["--protocol", "bcc-8a", "--pty", "--truth-log", "/nonexistent/t.jsonl"], 2, "truth log"),
    ],
)
def test_cli_refuses_bad_arguments(args, code, message):
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*CLI, "--protocol", "bcc-8a", "--tcp", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 3
    assert "already in use" in result.stderr and "Traceback" not in result.stderr
