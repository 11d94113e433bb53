"""``xinbao sim``: run virtual lock boards until Ctrl-C or SIGTERM.

    xinbao sim boards --protocol kerong-cu16 --addresses 1,2 --channels 16 --pty
    xinbao sim boards --protocol bcc-8a --addresses 1 --tcp 127.0.0.1:7000 --control 127.0.0.1:8700

It prints one line per endpoint (``pty: /dev/pts/7``, ``tcp: socket://127.0.0.1:7000``,
``control: http://127.0.0.1:8700``) so scripts can read where to connect.
Exit codes: 0 stopped cleanly, 2 bad arguments, 3 an endpoint could not be opened.

``xinbao sim door|item|fault|truth ... --control HOST:PORT`` act on a running simulator
through its control API (simulator/tester_cli.py).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import typer

from simulator.errors import EndpointError, SimulatorError
from simulator.sim import BOARD_THINK_S, Simulator
from simulator.spec import PROTOCOLS, BoardSpec
from simulator.tester_cli import door_command, fault_app, item_command, truth_command

sim_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

EXIT_USAGE, EXIT_ENDPOINT = 2, 3


@sim_app.callback()
def _group() -> None:
    """Virtual lock boards on a virtual RS-485 bus (the hardware simulator)."""


def parse_addresses(text: str) -> list[int]:
    """``"1,2,5-7"`` -> [1, 2, 5, 6, 7]; raises ValueError with a readable message."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"empty board address in {text!r}")
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high) if high else int(low)
        except ValueError:
            raise ValueError(f"board address {part!r} is not a number") from None
        if last < first or last - first > 255:
            raise ValueError(f"bad address range {part!r}")
        out.extend(range(first, last + 1))
    if len(set(out)) != len(out):
        raise ValueError(f"a board address appears twice in {text!r}")
    return out


def parse_host_port(text: str, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{option} wants HOST:PORT (port 0..65535), not {text!r}")
    return host.strip("[]"), int(port)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@sim_app.command("boards")
def boards_command(
    protocol: str = typer.Option(..., help=f"One of: {', '.join(PROTOCOLS)}."),
    addresses: str = typer.Option("1", help="Board addresses, e.g. 1,2 or 0-3."),
    channels: int | None = typer.Option(None, help="Channels per board (default: board size)."),
    tcp: str | None = typer.Option(None, help="Serve on HOST:PORT (port 0 = any free port)."),
    pty: bool = typer.Option(False, "--pty", help="Serve on a new pseudo-terminal."),
    baud: int | None = typer.Option(None, help="Line speed for wire timing."),
    control: str | None = typer.Option(None, help="HTTP control API on HOST:PORT."),
    wire_timing: bool = typer.Option(True, "--wire-timing/--no-wire-timing"),
    reply_delay: float = typer.Option(
        BOARD_THINK_S,
        help="Board think time before replying, s (1 ms: a board that answers at once; "
        "real firmware may take longer, see simulator/sim.py).",
    ),
    locked_level: int = typer.Option(1, help="Input level meaning locked/closed (0 or 1)."),
    silent_unlock: bool = typer.Option(
        False, help="kerong-cu16/cu48b: no status frame after unlock (cu48 never sends one)."
    ),
    reports_doors: bool = typer.Option(
        False, help="bcc-8a: push an 82 door report whenever a door opens or shuts."
    ),
    truth_log: Path | None = typer.Option(None, help="Write the ground truth here (JSON lines)."),
) -> None:
    """Run boards on one bus until Ctrl-C / SIGTERM."""
    if not tcp and not pty:
        raise _fail("give --tcp HOST:PORT and/or --pty", EXIT_USAGE)
    try:
        addrs = parse_addresses(addresses)
        tcp_at = parse_host_port(tcp, "--tcp") if tcp else None
        control_at = parse_host_port(control, "--control") if control else None
        specs = [
            BoardSpec(
                protocol=protocol,
                address=a,
                channels=channels,
                locked_level=locked_level,
                answers_unlock=False if silent_unlock else None,  # None: as the protocol
                reports_doors=reports_doors,
            )
            for a in addrs
        ]
        sim = Simulator(specs, wire_timing=wire_timing, reply_delay=reply_delay, baud=baud)
    except (ValueError, SimulatorError) as err:
        raise _fail(str(err), EXIT_USAGE) from None
    try:
        # Opened now, so a bad path is refused before serving, not lost at the end of a run.
        log_file = truth_log.open("w", encoding="utf-8") if truth_log is not None else None
    except OSError as err:
        raise _fail(f"cannot write the truth log {truth_log}: {err.strerror}", EXIT_USAGE) from None

    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        try:
            if pty:
                typer.echo(f"pty: {sim.start_pty()}")
            if tcp_at:
                typer.echo(f"tcp: {sim.start_tcp(*tcp_at)}")
            if control_at:
                typer.echo(f"control: {sim.start_control(*control_at)}")
        except EndpointError as err:
            raise _fail(str(err), EXIT_ENDPOINT) from None
        typer.echo(f"simulating {len(specs)} {protocol} board(s) at {addresses}; Ctrl-C to stop")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if log_file is not None:
            with log_file:
                sim.truth.dump_jsonl(log_file)
    typer.echo("stopped")


# A tester's hands on a running simulator, through its control API.
sim_app.command("door")(door_command)
sim_app.command("item")(item_command)
sim_app.add_typer(fault_app, name="fault")
sim_app.command("truth")(truth_command)
