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
PROGRESS = typer.Option(
    None,
    "--progress/--no-progress",
    help="one stderr line per address tried (default: when stderr is a terminal)",
)

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
    progress: bool | None = PROGRESS,
    verbose: bool = VERBOSE,
) -> None:
    """List the boards that answer a status query (progress on stderr as it goes)."""
    with _one_line_errors(verbose):
        wanted = _addresses(addresses) if addresses else None
        with _open(port, protocol, baud, timeout, 0, rs485) as bus:
            found = bus.survey(wanted, progress=_progress(progress, protocol))
    for address in found.answered:
        typer.echo(f"board {address}: answers")
    if found.garbled:
        garbled = sorted(found.garbled)
        which = ("address " if len(garbled) == 1 else "addresses ") + ", ".join(map(str, garbled))
        raise _fail(f"{which} answered garbled (two boards on one DIP address?)", EXIT_GARBLED)
    if not found.answered:
        line = baud or get_protocol(protocol).baud
        raise _fail(
            f"no {protocol} board answered on {port} at {line} baud: check the baud rate, the "
            "protocol (xinbao board detect tries them all) and the A/B wiring",
            EXIT_SILENT,
        )


def _progress(wanted: bool | None, what: str) -> _ScanProgress | None:
    """Progress lines for a technician at a terminal; a script's stderr keeps one line per
    failure unless it asks for them."""
    on = sys.stderr.isatty() if wanted is None else wanted
    return _ScanProgress(what) if on else None


class _ScanProgress:
    """One stderr line per address tried: where the scan is and what it found so far."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.found: list[int] = []

    def __call__(self, address: int, tried: int, of: int, verdict: str) -> None:
        if verdict == "answers":
            self.found.append(address)
        so_far = ", ".join(map(str, self.found)) or "none"
        typer.echo(
            f"{self.what}: [{tried}/{of}] address {address}: {verdict} (found so far: {so_far})",
            err=True,
        )


def _bauds(protocol: str, wanted: list[int] | None) -> list[int]:
    """The protocol's own baud rate first, then the other rates such boards are set to."""
    own = get_protocol(protocol).baud
    return wanted or [own, *(b for b in (9600, 19200) if b != own)]


@board_app.command(epilog=EXIT_HELP)
def detect(
    port: str = PORT,
    protocols: str | None = typer.Option(
        None, "--protocols", help=f"comma-separated (default: all: {', '.join(PROTOCOLS)})"
    ),
    bauds: str | None = typer.Option(
        None, "--bauds", help="comma-separated rates (default: each protocol's, 9600, 19200)"
    ),
    addresses: str | None = typer.Option(
        None, "--addresses", help="which addresses to try (default: each protocol's DIP range)"
    ),
    timeout: float | None = typer.Option(
        0.2, "--timeout", help="seconds to wait for each reply (raise it on slow adapters)"
    ),
    rs485: bool = RS485,
    progress: bool | None = PROGRESS,
    verbose: bool = VERBOSE,
) -> None:
    """Find which protocol the boards on a bus speak: every protocol at its usual baud rates,
    each address of its DIP range. Prints one line per protocol and rate that found boards."""
    with _one_line_errors(verbose):
        names = [n.strip() for n in protocols.split(",")] if protocols else list(PROTOCOLS)
        for name in names:
            get_protocol(name)  # an unknown name is refused before the port is touched
        rates = _numbers(bauds, "--bauds") if bauds else None
        wanted = _addresses(addresses) if addresses else None
        found: list[tuple[str, int, list[int]]] = []
        garbled: set[int] = set()
        for name in names:
            for rate in _bauds(name, rates):
                candidates = wanted
                if wanted is not None:
                    candidates = [a for a in wanted if a in get_protocol(name).addresses]
                with _open(port, name, rate, timeout, 0, rs485) as bus:
                    result = bus.survey(candidates, progress=_progress(progress, f"{name} {rate}"))
                garbled.update(result.garbled)
                if result.answered:
                    found.append((name, rate, result.answered))
                    break  # this protocol answers at this rate: the others add nothing
    for name, rate, answered in found:
        boards = ", ".join(map(str, answered))
        typer.echo(f"{name} at {rate} baud: board{'s' if len(answered) > 1 else ''} {boards}")
    if not found:
        hint = " (something answered garbled: wiring or noise?)" if garbled else ""
        raise _fail(
            f"no board answered on {port} with any protocol tried{hint}: check power, the "
            "A/B wiring and the adapter",
            EXIT_SILENT,
        )


def _numbers(text: str, option: str) -> list[int]:
    try:
        found = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, not {text!r}") from None
    if not found or any(n <= 0 for n in found):
        raise ConfigError(f"{option} takes positive numbers, not {text!r}")
    return found


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


@board_app.command("map", epilog=EXIT_HELP)
def map_cabinet(
    port: str = PORT,
    protocol: str = PROTOCOL,
    boards: str | None = typer.Option(
        None, "--boards", help="board addresses to map, e.g. 1-2 (default: those a scan finds)"
    ),
    channels: int | None = typer.Option(
        None, "--channels", help="locks per board (default: as many as each board reports)"
    ),
    answers: typer.FileText | None = typer.Option(
        None,
        "--answers",
        help="answers to the questions, one line per channel: 'NUMBER SIZE' or '-' (none "
        "opened); for scripts and tests",
    ),
    out: str | None = typer.Option(
        None, "--out", help="write the [[compartments]] TOML here (default: stdout)"
    ),
    pulse_ms: int | None = typer.Option(None, "--pulse-ms", help="lock pulse length"),
    baud: int | None = BAUD,
    timeout: float | None = TIMEOUT,
    rs485: bool = RS485,
    verbose: bool = VERBOSE,
) -> None:
    """Wiring wizard: open each channel of each board in turn, ask which compartment opened
    and its size, and print the controller's [[compartments]] section."""
    ask = _Answers(answers) if answers is not None else _Prompter()
    mapped: list[tuple[int, str, int, int]] = []
    with _one_line_errors(verbose):
        wanted = _addresses(boards) if boards else None
        if wanted is None:
            with _open(port, protocol, baud, timeout, 0, rs485) as bus:
                wanted = bus.survey(progress=_progress(None, protocol)).answered
            if not wanted:
                raise _fail(f"no {protocol} board answered on {port}", EXIT_SILENT)
        configs = [BoardConfig(protocol, b, channels=channels, pulse_ms=pulse_ms) for b in wanted]
        with _open(port, protocol, baud, timeout, 2, rs485, configs) as bus:
            for board in wanted:
                count = channels or len(bus.status(board).channels)
                for channel in range(1, count + 1):
                    outcome = bus.unlock(board, channel).outcome
                    typer.echo(
                        f"board {board} channel {channel}: pulsed ({outcome.value})", err=True
                    )
                    answer = ask(board, channel, {n for n, *_ in mapped})
                    if answer == "quit":
                        break
                    if answer is not None:
                        number, size = answer
                        mapped.append((number, size, board, channel))
                else:
                    continue
                break  # "q": stop the whole walk
    if not mapped:
        raise _fail("no compartment was named: nothing to write", EXIT_BAD_ARGUMENT)
    text = "".join(
        f'[[compartments]]\nnumber = {n}\nsize = "{s}"\nboard = {b}\nchannel = {c}\n\n'
        for n, s, b, c in sorted(mapped)
    )
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
        typer.echo(f"{len(mapped)} compartments written to {out}", err=True)
    else:
        typer.echo(text, nl=False)


_SIZES = ("S", "M", "L", "XL")


def _parse_answer(text: str, taken: set[int]) -> tuple[int, str] | str | None:
    """'12 M' -> (12, 'M'); '-' or '' -> None (nothing opened); 'q' -> 'quit'."""
    words = text.split()
    if not words or words == ["-"]:
        return None
    if words[0].lower() in ("q", "quit"):
        return "quit"
    if len(words) != 2 or not words[0].isdigit() or words[1].upper() not in _SIZES:
        raise ValueError(f"answer 'NUMBER SIZE' (size one of {', '.join(_SIZES)}), '-' or 'q'")
    number = int(words[0])
    if not 1 <= number <= 10_000:
        raise ValueError("a compartment number is 1 to 10000")
    if number in taken:
        raise ValueError(f"compartment {number} is already mapped")
    return number, words[1].upper()


class _Prompter:
    def __call__(self, board: int, channel: int, taken: set[int]):
        while True:
            text = typer.prompt(
                f"board {board} channel {channel}: which compartment opened, and its size "
                "(e.g. '12 M'; '-' none; 'q' stop)",
                default="-",
                show_default=False,
                err=True,
            )
            try:
                return _parse_answer(text, taken)
            except ValueError as err:
                typer.echo(f"  {err}", err=True)


class _Answers:
    def __init__(self, source) -> None:
        self.lines = [line.strip() for line in source.read().splitlines()]
        self.at = 0

    def __call__(self, board: int, channel: int, taken: set[int]):
        if self.at >= len(self.lines):
            return "quit"
        line, self.at = self.lines[self.at], self.at + 1
        try:
            return _parse_answer(line, taken)
        except ValueError as err:
            raise ConfigError(f"--answers line {self.at} ({line!r}): {err}") from None
