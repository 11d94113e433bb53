"""``xinbao sim door|item|fault|truth`` as real subprocesses against a running simulator's
control API: each command's effect is checked in the simulator itself (its compartments,
faults and ground truth), and every failure is one ``error:`` line with its exit code."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from simulator import BoardSpec, Simulator
from simulator.tester_cli import EXIT_BAD_REQUEST, EXIT_REFUSED, EXIT_UNREACHABLE
from tests.support.cli import one_line_error, xinbao
from tests.support.waiting import free_port

pytestmark = pytest.mark.slow


def sim_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return xinbao("sim", *args)


@pytest.fixture
def running() -> Iterator[tuple[Simulator, list[str]]]:
    """A simulator with its control API up, and the ``--control`` option that reaches it."""
    specs = [BoardSpec("kerong-cu16", 1), BoardSpec("kerong-cu16", 2)]
    with Simulator(specs, wire_timing=False) as sim:
        url = sim.start_control("127.0.0.1", 0)
        yield sim, ["--control", url.removeprefix("http://")]


def test_doors_and_items(running):
    sim, control = running
    where = ["--board", "2", "--channel", "3", *control]

    result = sim_cli("door", "open", *where)
    assert result.returncode == EXIT_REFUSED
    assert "latched" in one_line_error(result)
    assert not sim.compartment(2, 3).door_open

    result = sim_cli("door", "open", "--forced", *where)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "board 2 channel 3: door open\n"
    assert [e.by for e in sim.truth.events("door_opened")] == ["forced"]

    result = sim_cli("door", "open", *where)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "board 2 channel 3: door open (it already was)\n"

    assert sim_cli("item", "put", *where).stdout == "board 2 channel 3: 1 item inside\n"
    assert sim_cli("item", "put", *where).stdout == "board 2 channel 3: 2 items inside\n"
    assert sim_cli("item", "take", *where).stdout == "board 2 channel 3: 1 item inside\n"
    assert sim.compartment(2, 3).items == 1

    result = sim_cli("door", "close", *where)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "board 2 channel 3: door shut\n"
    assert sim.compartment(2, 3).locked

    result = sim_cli("item", "take", *where)
    assert result.returncode == EXIT_REFUSED
    assert "the door is shut" in one_line_error(result)
    assert sim.compartment(2, 3).items == 1


def test_faults(running):
    sim, control = running
    result = sim_cli("fault", "inject", "garbage", "--board", "1",
                     "--param", "bytes=FA FD 99 99", *control)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "board 1: garbage injected\n"
    result = sim_cli("fault", "inject", "slow", "--board", "2", "--param", "seconds=0.5", *control)
    assert result.returncode == 0, result.stderr
    result = sim_cli("fault", "inject", "jammed", "--board", "2", "--channel", "7", *control)
    assert result.stdout == "board 2 channel 7: jammed injected\n"
    faults = {(f.kind, f.board, f.channel): f.params for f in sim.faults()}
    assert faults == {
        ("garbage", 1, None): {"bytes": bytes.fromhex("FA FD 99 99")},
        ("slow", 2, None): {"seconds": 0.5},
        ("jammed", 2, 7): {},
    }

    result = sim_cli("fault", "list", *control)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "board 1: garbage bytes=FA FD 99 99",
        "board 2: slow seconds=0.5",
        "board 2 channel 7: jammed",
    ]
    kinds = sim_cli("fault", "kinds", *control).stdout
    assert "duplicate_address" in kinds and "seconds=2.0" in kinds

    result = sim_cli("fault", "clear", "--board", "2", "--fault", "slow", *control)
    assert result.stdout == "1 fault cleared\n"
    assert sorted(f.kind for f in sim.faults()) == ["garbage", "jammed"]
    assert sim_cli("fault", "clear", *control).stdout == "2 faults cleared\n"
    assert sim.faults() == []
    assert sim_cli("fault", "list", *control).stdout == "no faults\n"


def test_truth(running):
    sim, control = running
    sim.inject(1, "forced_open", channel=4)
    sim.put_item(1, 4)
    result = sim_cli("truth", *control)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["fault_injected", "door_opened", "item_put"]
    assert lines[1].endswith("door_opened board 1 channel 4 by forced")

    result = sim_cli("truth", "--kind", "item_put", "--json", *control)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["kind"], e["board"], e["channel"]) for e in events] == [("item_put", 1, 4)]
    assert events == [e.to_dict() for e in sim.truth.events("item_put")]

    since = sim.truth.last_seq
    sim.take_item(1, 4)
    result = sim_cli("truth", "--since", str(since), "--limit", "1", *control)
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["item_taken"]


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["door", "open", "--board", "9", "--channel", "1"], "no board 9"),
        (["door", "open", "--board", "1", "--channel", "99", "--forced"], "99"),
        (["item", "put", "--board", "1", "--channel", "0"], "channel"),
        (["fault", "inject", "gremlins", "--board", "1"], "unknown fault 'gremlins'"),
        (["fault", "inject", "absent", "--board", "1", "--channel", "2"], "whole board"),
        (["fault", "inject", "slow", "--board", "1", "--param", "minutes=3"], "minutes"),
        (["fault", "inject", "slow", "--board", "1", "--param", "seconds"], "NAME=VALUE"),
        (["truth", "--kind", "explosion"], "unknown event kind"),
    ],
)
def test_bad_requests_change_nothing(running, args, text):
    sim, control = running
    before = sim.truth.last_seq
    result = sim_cli(*args, *control)
    assert result.returncode == EXIT_BAD_REQUEST
    assert text in one_line_error(result)
    assert sim.truth.last_seq == before
    assert sim.faults() == []


def test_control_api_unreachable():
    control = f"127.0.0.1:{free_port()}"
    result = sim_cli("door", "open", "--board", "1", "--channel", "1", "--control", control)
    assert result.returncode == EXIT_UNREACHABLE
    line = one_line_error(result)
    assert line.startswith(f"error: cannot reach the simulator control API at http://{control}")

    result = sim_cli("truth", "--control", "nowhere")
    assert result.returncode == EXIT_BAD_REQUEST
    assert "--control wants HOST:PORT" in one_line_error(result)
