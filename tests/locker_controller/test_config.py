"""Config files with mistakes are refused with a message naming the line and the field."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_bridge.protocols.bcc8a import byte_order
from locker_controller.config import parse_config
from locker_controller.errors import ConfigError
from tests.locker_controller.conftest import controller_toml
from xinbao.codes import derive_locker_key


def good(tmp_path: Path) -> str:
    return controller_toml(tmp_path / "data", "/dev/null", kiosk_port=8080, mqtt_port=1883)


def line_of(source: str, text: str, nth: int = 1) -> int:
    found = [i for i, line in enumerate(source.splitlines(), 1) if text in line]
    return found[nth - 1]


def test_the_sample_config_loads(tmp_path):
    cfg = parse_config(good(tmp_path))
    assert cfg.locker_id == "XA-TEST-1"
    assert cfg.mqtt is not None and cfg.mqtt.port == 1883 and not cfg.mqtt.tls
    assert [c.number for c in cfg.compartments] == list(range(1, 9))
    assert len(cfg.locker_key) == 32


@pytest.mark.parametrize(
    ("old", "new", "field", "place"),
    [
        ("channel = 3", 'channel = "three"', "compartments.2.channel", "compartment 3, channel"),
        ('size = "M"', 'size = "XL"', "compartments.2.size", "compartment 3, size"),
        ("address = 2", "address = 999", "buses.0.boards.1.address", "bus 1, board 999, address"),
        ("poll_interval_s = 0.05", "poll_interval_s = -1", "poll_interval_s", "poll_interval_s"),
        (
            'protocol = "kerong-cu16"',
            'protocol = "kerong-cu99"',
            "buses.0.protocol",
            "bus 1, protocol",
        ),
        (
            "telemetry_interval_s = 1.0",
            "telemetry_interval_s = 1.0\ncolour = 1",
            "mqtt.colour",
            "mqtt, colour",
        ),
        ("channel = 4", "channel = 40", "compartments.3", "compartment 4"),
        (
            "reconnect_max_s = 2",
            'reconnect_max_s = 2\nca_file = "/nonexistent/ca.pem"',
            "mqtt.ca_file",
            "mqtt, ca_file",
        ),
    ],
)
def test_mistakes_name_line_and_field(tmp_path, old, new, field, place):
    """The line, and the setting in words: compartments by their number, buses and boards
    counted from 1 (issue 13: today's 0-based "compartments.2.size" misled technicians)."""
    nth = 1
    source = good(tmp_path)
    assert old in source
    bad = source.replace(old, new, 1)
    with pytest.raises(ConfigError) as caught:
        parse_config(bad)
    err = caught.value
    assert err.field == field
    anchor = new.splitlines()[-1]
    expected_line = line_of(bad, anchor, nth)
    if field == "compartments.3":  # a cross-field check points at the entry's header
        expected_line = line_of(bad, "[[compartments]]", 4)
    assert err.line == expected_line, str(err)
    assert str(err).startswith(f"config, line {expected_line}, {place}: "), str(err)
    assert "Input should" not in str(err) and "Extra inputs" not in str(err), str(err)


def test_toml_syntax_error_names_the_line(tmp_path):
    source = good(tmp_path).replace('size = "S"', "size = S", 1)
    with pytest.raises(ConfigError) as caught:
        parse_config(source)
    assert caught.value.line == line_of(source, "size = S")


def test_both_or_no_key_is_refused(tmp_path):
    source = re.sub(
        r'master_key_hex = "[0-9a-f]*"',
        f'locker_key_hex = "{derive_locker_key(b"master", "XA-0001").hex()}"',
        good(tmp_path),
        count=1,
    )
    assert parse_config(source).locker_key_hex is not None
    both = f'master_key_hex = "{"22" * 32}"\n' + source
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config(both)
    neither = "\n".join(
        line for line in source.splitlines() if not line.startswith("locker_key_hex")
    )
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config(neither)


@pytest.mark.slow
def test_cli_refuses_a_bad_config_without_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(good(tmp_path).replace("board = 2", "board = 9", 1))
    run = subprocess.run(
        [sys.executable, "-m", "xinbao.cli", "controller", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert "board 9 is not on bus 0" in run.stderr and "line " in run.stderr


def test_bcc_8a_byte_order_follows_the_board_unless_set(tmp_path):
    """A 56-channel 8A board holds channels 1-8 in its first data byte, a 24-channel one in
    its last (docs/commissioning.md): the controller leaves the choice to the protocol unless
    the config names it, and passes the reply width through."""
    source = good(tmp_path).replace('protocol = "kerong-cu16"', 'protocol = "bcc-8a"')
    source = source.replace("address = 2\n", "address = 2\nstatus_width = 56\n", 1)
    boards = {b.address: b for b in parse_config(source).buses[0].board_configs()}
    assert boards[1].status_byte_order is None and boards[2].status_width == 56
    assert byte_order(24, boards[1].status_byte_order) == "last"
    assert byte_order(56, boards[2].status_byte_order) == "first"
    source = source.replace(
        "status_width = 56\n", 'status_width = 56\nstatus_byte_order = "last"\n'
    )
    boards = {b.address: b for b in parse_config(source).buses[0].board_configs()}
    assert byte_order(56, boards[2].status_byte_order) == "last"


@pytest.mark.parametrize("placeholder", ["00" * 32, "11" * 32, "0123456789abcdef" * 4, "ab" * 16])
def test_placeholder_locker_key_is_refused(tmp_path, placeholder):
    """The attack: a cabinet commissioned with a placeholder key (copied from a sample
    config) lets anyone who guesses it compute every code of that cabinet."""
    source = re.sub(
        r'master_key_hex = "[0-9a-f]*"', f'locker_key_hex = "{placeholder}"', good(tmp_path)
    )
    with pytest.raises(ConfigError, match="not a random key"):
        parse_config(source)
