"""``xinbao board``: find lock boards on an RS-485 bus, read them, test each lock.

Field technicians run this while commissioning a cabinet, so every failure is one plain line
on stderr and an exit code a script can branch on, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from firmware_bridge.bus import LockBus
from firmware_bridge.config import BoardConfig
from firmware_bridge.errors import (
    BoardTimeout,
    BridgeError,
    ConfigError,
    LinkError,
    ProtocolError,
)
from firmware_bridge.protocols import PROTOCOLS, get_protocol
from firmware_bridge.status import UnlockOutcome

EXIT_BAD_ARGUMENT = 2  # also what typer uses for a malformed command line
EXIT_LINK = 3
EXIT_SILENT = 4
EXIT_GARBLED = 5
EXIT_JAMMED = 6

EXIT_HELP = f"""Exit codes: 0 done; {EXIT_BAD_ARGUMENT} bad argument (protocol, board, channel,
option); {EXIT_LINK} serial port missing or failing; {EXIT_SILENT} board did not answer
(unlock: no response); {EXIT_GARBLED} garbled reply (bad checksum, another board, refusal);
{EXIT_JAMMED} unlock sent but the lock still reads locked (jammed).
Protocols: {", ".join(PROTOCOLS)}."""

board_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Commission lock boards on an RS-485 bus.\n\n" + EXIT_HELP,
)

PORT = typer.Option(..., "--port", help="pyserial URL: /dev/ttyUSB0, socket://h:p, loop://")
PROTOCOL = typer.Option(..., "--protocol", help=f"one of {', '.join(PROTOCOLS)}")
BAUD = typer.Option(None, "--baud", help="line speed (default: the protocol's)")
TIMEOUT = typer.Option(None, "--timeout", help="seconds to wait for each reply")
RETRIES = typer.Option(2, "--retries", help="extra attempts after a silent or garbled reply")
RS485 = typer.Option(False, "--rs485", help="drive RTS for direction (half-duplex adapters)")
VERBOSE = typer.Option(False, "--verbose", "-v", help="log every retry and dropped byte")

_EXIT_FOR: list[tuple[type[BridgeError], int]] = [
    (ConfigError, EXIT_BAD_ARGUMENT),
    (LinkError, EXIT_LINK),
    (BoardTimeout, EXIT_SILENT),
    (ProtocolError, EXIT_GARBLED),
]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def _one_line_errors(verbose: bool) -> Iterator[None]:
    """Bridge errors become one ``error:`` line and their exit code. The bus's own log lines
    (retries, dropped bytes, garbled replies) go to stderr only with --verbose: without it a
    technician sees exactly one line per failure."""
    logger = logging.getLogger("firmware_bridge")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    level = logger.level
    if verbose:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield
    except BridgeError as err:
        code = next(code for kind, code in _EXIT_FOR if isinstance(err, kind))
        raise _fail(str(err), code) from None
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _open(
    port: str,
    protocol: str,
    baud: int | None,
    timeout: float | None,
    retries: int,
    rs485: bool,
    boards: list[BoardConfig] | None = None,
) -> LockBus:
    return LockBus.open(
        port, protocol, baud=baud, boards=boards, rs485=rs485, timeout=timeout, retries=retries
    )


def _addresses(text: str) -> list[int]:
    """``1-4,7`` -> [1, 2, 3, 4, 7]."""
    found: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            found.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ConfigError(
            f"--addresses takes numbers and ranges like 1-4,7, not {text!r}"
        ) from None
    return found


@board_app.command(epilog=EXIT_HELP)
def scan(
    port: str = PORT,
    protocol: str = PROTOCOL,
    baud: int | None = BAUD,
    addresses: str | None = typer.Option(
        None, "--addresses", help="which addresses to try, e.g. 0-15 (default: common DIP range)"
    ),
    timeout: float | None = TIMEOUT,
    rs485: bool = RS485,
    verbose: bool = VERBOSE,
) -> None:
    """List the boards that answer a status query."""
    with _one_line_errors(verbose):
        wanted = _addresses(addresses) if addresses else None
        with _open(port, protocol, baud, timeout, 0, rs485) as bus:
            found = bus.survey(wanted)
    for address in found.answered:
        typer.echo(f"board {address}: answers")
    if found.garbled:
        garbled = sorted(found.garbled)
        which = ("address " if len(garbled) == 1 else "addresses ") + ", ".join(map(str, garbled))
        raise _fail(f"{which} answered garbled (two boards on one DIP address?)", EXIT_GARBLED)
    if not found.answered:
        raise _fail(f"no {protocol} board answered on {port}", EXIT_SILENT)


@board_app.command(epilog=EXIT_HELP)
def status(
    port: str = PORT,
    protocol: str = PROTOCOL,
    board: int = typer.Option(..., "--board", help="board address (DIP switches)"),
    channels: int | None = typer.Option(
        None, "--channels", help="locks wired to the board (default: the protocol's size)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    baud: int | None = BAUD,
    timeout: float | None = TIMEOUT,
    retries: int = RETRIES,
    rs485: bool = RS485,
    verbose: bool = VERBOSE,
) -> None:
    """Print every channel of one board: locked or not, occupied where the board senses it."""
    with _one_line_errors(verbose):
        config = BoardConfig(protocol, board, channels=channels)
        with _open(port, protocol, baud, timeout, retries, rs485, [config]) as bus:
            result = bus.status(board)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(f"board {result.board} ({result.protocol})")
    for ch in result.channels:
        occupied = {None: "", True: "  occupied", False: "  empty"}[ch.occupied]
        typer.echo(f"  channel {ch.channel:2d}: {'locked' if ch.locked else 'open'}{occupied}")


@board_app.command(epilog=EXIT_HELP)
def unlock(
    port: str = PORT,
    protocol: str = PROTOCOL,
    board: int = typer.Option(..., "--board", help="board address (DIP switches)"),
    channel: int = typer.Option(..., "--channel", help="lock to open, numbered from 1"),
    pulse_ms: int | None = typer.Option(None, "--pulse-ms", help="lock pulse length"),
    baud: int | None = BAUD,
    timeout: float | None = TIMEOUT,
    retries: int = RETRIES,
    rs485: bool = RS485,
    verbose: bool = VERBOSE,
) -> None:
    """Open one lock and say what happened (opened, already open, jammed, no response)."""
    with _one_line_errors(verbose):
        config = BoardConfig(protocol, board, pulse_ms=pulse_ms)
        config.check_channel(channel)  # before touching the port
        with _open(port, protocol, baud, timeout, retries, rs485, [config]) as bus:
            result = bus.unlock(board, channel)
    where = f"board {board} channel {channel}"
    messages = {
        UnlockOutcome.OPENED: (f"{where}: opened", 0),
        UnlockOutcome.ALREADY_OPEN: (f"{where}: was already open", 0),
        UnlockOutcome.JAMMED: (f"{where}: pulse sent but the lock still reads locked", EXIT_JAMMED),
        UnlockOutcome.NO_RESPONSE: (f"{where}: no response from the board", EXIT_SILENT),
    }
    message, code = messages[result.outcome]
    if code:
        raise _fail(message, code)
    typer.echo(message)


@board_app.command("pulse-time", epilog=EXIT_HELP)
def pulse_time(
    port: str = PORT,
    protocol: str = PROTOCOL,
    board: int = typer.Option(..., "--board", help="board address (DIP switches)"),
    ms: int = typer.Option(
        ..., "--ms", help="lock pulse in ms (kerong-cu16 keeps 10 ms steps: rounded up)"
    ),
    baud: int | None = BAUD,
    rs485: bool = RS485,
    verbose: bool = VERBOSE,
) -> None:
    """Store a board's own lock pulse length (kerong-cu16 CMD 37). The board confirms
    nothing: open a lock with `unlock` afterwards, and set the controller's pulse_ms to match."""
    with _one_line_errors(verbose):
        config = BoardConfig(protocol, board)
        get_protocol(protocol).pulse_time(board, ms)  # a bad value is refused before the port
        with _open(port, protocol, baud, None, 0, rs485, [config]) as bus:
            stored = bus.set_pulse_time(board, ms)
    typer.echo(f"board {board}: pulse time {stored} ms sent (boards do not confirm it)")
