"""``xinbao sim door|item|fault|truth``: a tester's hands on a running simulator, from a shell.

Each command is one call to the simulator's HTTP control API (``xinbao sim boards
--control HOST:PORT``), so it works against a simulator in another process or on another
machine, exactly as the tester panel does:

    xinbao sim door open  --board 1 --channel 3 --control 127.0.0.1:8765
    xinbao sim item put   --board 1 --channel 3 --control 127.0.0.1:8765
    xinbao sim fault inject garbage --board 1 --param bytes="FA FD 99 99" --control ...
    xinbao sim fault clear --board 1 --control ...
    xinbao sim truth --kind lock_pulse --limit 5 --control ...

Errors are one line on stderr. Exit codes: 0 done; 2 refused as a bad request (unknown
board, channel, fault or parameter); 3 control API unreachable or answering nonsense;
4 refused by the physics (a latched door, a door that will not close, an empty compartment).
"""

from __future__ import annotations

import enum
import json
from typing import Any

import httpx
import typer

EXIT_BAD_REQUEST, EXIT_UNREACHABLE, EXIT_REFUSED = 2, 3, 4
CONTROL_HELP = "The simulator's control API, HOST:PORT (as given to `sim boards --control`)."
CONTROL = typer.Option(..., "--control", envvar="XINBAO_SIM_CONTROL", help=CONTROL_HELP)
BOARD = typer.Option(..., "--board", help="Board address.")
CHANNEL = typer.Option(..., "--channel", help="Channel (compartment) on the board, from 1.")
BUS = typer.Option(None, "--bus", help="Bus name, on a cabinet with several buses.")
TIMEOUT_S = 5.0


class DoorAction(enum.StrEnum):
    open = "open"
    close = "close"


class ItemAction(enum.StrEnum):
    put = "put"
    take = "take"


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _base_url(control: str) -> str:
    text = control.strip().removeprefix("http://").rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise _fail(f"--control wants HOST:PORT, not {control!r}", EXIT_BAD_REQUEST)
    return f"http://{text}"


def _call(control: str, method: str, path: str, **kwargs: Any) -> Any:
    """The JSON answer of one control API call; any failure is a one-line error and exit."""
    base = _base_url(control)
    try:
        with httpx.Client(base_url=base, timeout=TIMEOUT_S) as client:
            response = client.request(method, path, **kwargs)
    except httpx.TimeoutException:
        raise _fail(
            f"the simulator control API at {base} did not answer", EXIT_UNREACHABLE
        ) from None
    except httpx.TransportError as err:
        reason = str(err) or type(err).__name__
        raise _fail(
            f"cannot reach the simulator control API at {base}: {reason}", EXIT_UNREACHABLE
        ) from None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.is_success and isinstance(payload, dict):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        message = payload["error"]
        if response.status_code == 409:
            raise _fail(message, EXIT_REFUSED)
        if 400 <= response.status_code < 500:
            raise _fail(message, EXIT_BAD_REQUEST)
    raise _fail(
        f"unexpected answer from {base}{path}: HTTP {response.status_code}", EXIT_UNREACHABLE
    )


def _where(board: int, channel: int | None) -> str:
    return f"board {board}" + (f" channel {channel}" if channel is not None else "")


def door_command(
    action: DoorAction = typer.Argument(..., help="open or close"),
    board: int = BOARD,
    channel: int = CHANNEL,
    forced: bool = typer.Option(False, "--forced", help="Open a latched door by force."),
    bus: str | None = BUS,
    control: str = CONTROL,
) -> None:
    """Open or close a compartment door, as a person at the cabinet would."""
    body: dict[str, Any] = {"action": action.value}
    if forced:
        body["by"] = "forced"
    if bus is not None:
        body["bus"] = bus
    state = _call(control, "POST", f"/boards/{board}/channels/{channel}/door", json=body)
    now = "open" if state.get("door_open") else "shut"
    unchanged = "" if state.get("changed") else " (it already was)"
    typer.echo(f"{_where(board, channel)}: door {now}{unchanged}")


def item_command(
    action: ItemAction = typer.Argument(..., help="put or take"),
    board: int = BOARD,
    channel: int = CHANNEL,
    bus: str | None = BUS,
    control: str = CONTROL,
) -> None:
    """Put an item into an open compartment or take one out."""
    body: dict[str, Any] = {"action": action.value}
    if bus is not None:
        body["bus"] = bus
    state = _call(control, "POST", f"/boards/{board}/channels/{channel}/item", json=body)
    items = state.get("items")
    typer.echo(f"{_where(board, channel)}: {items} item{'s' * (items != 1)} inside")


fault_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Inject, clear and list faults on a running simulator.",
)


def _param(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise _fail(f"--param wants NAME=VALUE, not {text!r}", EXIT_BAD_REQUEST)
    try:
        value = json.loads(raw)  # seconds=2.5 is a number; bytes="FA FD" stays text
    except ValueError:
        value = raw
    return name.strip(), value


@fault_app.command("inject")
def fault_inject(
    fault: str = typer.Argument(..., help="Fault kind (`xinbao sim fault kinds` lists them)."),
    board: int = BOARD,
    channel: int | None = typer.Option(None, "--channel", help="Only this channel (door faults)."),
    param: list[str] = typer.Option([], "--param", help="Fault parameter NAME=VALUE."),
    bus: str | None = BUS,
    control: str = CONTROL,
) -> None:
    """Inject a fault (absent, garbage, bad_checksum, slow, jammed, forced_open, ...)."""
    body: dict[str, Any] = {"board": board, "fault": fault}
    if channel is not None:
        body["channel"] = channel
    if param:
        body["params"] = dict(_param(p) for p in param)
    if bus is not None:
        body["bus"] = bus
    record = _call(control, "POST", "/faults", json=body)
    typer.echo(f"{_where(board, record.get('channel'))}: {record.get('fault')} injected")


@fault_app.command("clear")
def fault_clear(
    board: int | None = typer.Option(None, "--board", help="Only this board's faults."),
    fault: str | None = typer.Option(None, "--fault", help="Only faults of this kind."),
    bus: str | None = BUS,
    control: str = CONTROL,
) -> None:
    """Clear faults: all of them, or one board's, or one kind's."""
    query = {k: v for k, v in {"board": board, "fault": fault, "bus": bus}.items() if v is not None}
    cleared = _call(control, "DELETE", "/faults", params=query).get("cleared")
    typer.echo(f"{cleared} fault{'s' * (cleared != 1)} cleared")


@fault_app.command("list")
def fault_list(bus: str | None = BUS, control: str = CONTROL) -> None:
    """The faults active now, one line each."""
    query = {"bus": bus} if bus is not None else {}
    faults = _call(control, "GET", "/faults", params=query).get("faults", [])
    if not faults:
        typer.echo("no faults")
    for fault in faults:
        params = " ".join(f"{k}={v}" for k, v in (fault.get("params") or {}).items())
        line = f"{_where(fault['board'], fault.get('channel'))}: {fault['fault']}"
        typer.echo(f"{line} {params}".rstrip())


@fault_app.command("kinds")
def fault_kinds(control: str = CONTROL) -> None:
    """The faults this simulator can inject, with their parameters."""
    for kind in _call(control, "GET", "/fault-kinds").get("kinds", []):
        params = " ".join(f"{k}={v}" for k, v in kind["params"].items())
        typer.echo(f"{kind['fault']:18} {kind['help']}" + (f" [{params}]" if params else ""))


def truth_command(
    kind: str | None = typer.Option(None, "--kind", help="Only events of this kind."),
    since: int | None = typer.Option(None, "--since", help="Only events after this number."),
    limit: int | None = typer.Option(None, "--limit", help="Only the last N events."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per event."),
    control: str = CONTROL,
) -> None:
    """Read the ground-truth log: what physically happened (pulses, doors, items, faults)."""
    wanted = {"kind": kind, "since": since, "limit": limit}
    query = {k: v for k, v in wanted.items() if v is not None}
    events = _call(control, "GET", "/truth", params=query).get("events", [])
    for event in events:
        if as_json:
            typer.echo(json.dumps(event, ensure_ascii=False))
            continue
        where = ""
        if event.get("board") is not None:
            where = " " + _where(event["board"], event.get("channel"))
        by = f" by {event['by']}" if event.get("by") else ""
        typer.echo(f"{event['seq']:6d} {event['kind']}{where}{by}")
