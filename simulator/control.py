"""HTTP control API for testers: look at every door, open/close doors, move items, faults.

Plain stdlib ``ThreadingHTTPServer``: the simulator must stay importable and runnable with no
web stack. Every answer is JSON; bad input of any kind gets a 4xx JSON error and changes
nothing. ``GET /`` is the testers' web panel (static files from ``simulator/panel``, served
under ``/panel/NAME``); the panel itself only calls the JSON endpoints below.

    GET    /boards                                   every compartment of every board
    POST   /boards/{b}/channels/{c}/door  {"action": "open" | "close", "by"?: "tester"|"forced"}
    POST   /boards/{b}/channels/{c}/item  {"action": "put" | "take"}
    GET    /faults                                   active faults
    POST   /faults  {"board": b, "fault": name, "channel"?: c, "params"?: {...}}
    DELETE /faults[?board=b&fault=name]              clear (all when no filter)
    GET    /fault-kinds                              faults one can inject, with parameters
    GET    /truth[?since=seq&kind=k&limit=n]         ground-truth events (limit: the last n)
On a cabinet with several buses add ``?bus=name`` (or "bus" in the body) to pick the bus.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from simulator import panel
from simulator.endpoints import bind_listener
from simulator.errors import (
    DoorError,
    EndpointError,
    FaultError,
    SimulatorError,
    UnknownCompartment,
)
from simulator.faults import FAULT_KINDS
from simulator.truth import EVENT_KINDS

MAX_BODY = 64 * 1024
MAX_TRUTH_LIMIT = 10_000
_CHANNEL_ACTION = re.compile(r"^/boards/(\d{1,6})/channels/(\d{1,6})/(door|item)$")
_PANEL_PREFIX = "/panel/"


@dataclass(frozen=True)
class _File:
    """A non-JSON answer: a panel page or asset."""

    body: bytes
    content_type: str


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlServer:
    def __init__(self, sims: list[Any], host: str, port: int) -> None:
        self.sims = sims
        listener = bind_listener(host, port)  # clear EndpointError for a port in use
        listener.setblocking(True)
        try:
            self._server = _Server(listener, self)
        except OSError as err:
            listener.close()
            raise EndpointError(f"cannot serve on {host}:{port}: {err}") from err
        h, p = self._server.server_address[:2]
        self.url = f"http://{h}:{p}"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="sim-control",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    # -- resolving names ------------------------------------------------------------------

    def sim_for(self, board: int, bus: str | None) -> Any:
        candidates = [s for s in self.sims if bus is None or s.name == bus]
        if bus is not None and not candidates:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no bus named {bus!r}")
        having = [s for s in candidates if board in {b.address for b in s.boards}]
        if not having:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no board {board}")
        if len(having) > 1:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"board {board} is on several buses: add bus")
        return having[0]


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close (block_on_close), so nothing outlives stop().
    daemon_threads = False

    def __init__(self, listener: Any, control: ControlServer) -> None:
        self.control = control
        super().__init__(listener.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.server_address = listener.getsockname()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "xinbao-sim"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return  # testers read the ground truth, not an access log

    # -- plumbing -------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            status, payload = self._route(method, url.path.rstrip("/") or "/", query)
        except ApiError as err:
            status, payload = err.status, {"error": err.message}
        except DoorError as err:
            status, payload = HTTPStatus.CONFLICT, {"error": str(err)}
        except UnknownCompartment as err:
            status, payload = HTTPStatus.NOT_FOUND, {"error": str(err)}
        except (FaultError, SimulatorError) as err:
            status, payload = HTTPStatus.BAD_REQUEST, {"error": str(err)}
        except (TypeError, ValueError) as err:
            # Input shapes the checks above did not foresee: still the caller's mistake.
            status, payload = HTTPStatus.BAD_REQUEST, {"error": f"bad request: {err}"}
        if isinstance(payload, _File):
            self._send(status, payload.body, payload.content_type)
        else:
            body = json.dumps(payload, ensure_ascii=False).encode()
            self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # The panel polls; an old cached state or an old panel.js would mislead a tester.
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {err}") from None
        if not isinstance(body, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return body

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- routes ---------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str]) -> tuple[HTTPStatus, Any]:
        control = self.server.control
        routes = {
            ("GET", "/"): self._index,
            ("GET", "/boards"): self._boards,
            ("GET", "/faults"): self._faults,
            ("POST", "/faults"): self._inject,
            ("DELETE", "/faults"): self._clear,
            ("GET", "/truth"): self._truth,
            ("GET", "/fault-kinds"): self._fault_kinds,
        }
        handler = routes.get((method, path))
        if handler is not None:
            return handler(query)
        if path.startswith(_PANEL_PREFIX):
            if method != "GET":
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed here")
            return self._panel_asset(path[len(_PANEL_PREFIX) :])
        match = _CHANNEL_ACTION.match(path)
        if match:
            if method != "POST":
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed here")
            board, channel, what = int(match[1]), int(match[2]), match[3]
            body = self._body()
            sim = control.sim_for(board, _text(body.get("bus", query.get("bus")), "bus"))
            return self._channel_action(sim, board, channel, what, body)
        if any(p == path for _, p in routes):
            raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed on {path}")
        raise ApiError(HTTPStatus.NOT_FOUND, f"no such resource {path}")

    def _selected(self, query: dict[str, str]) -> list[Any]:
        bus = query.get("bus")
        sims = [s for s in self.server.control.sims if bus is None or s.name == bus]
        if not sims:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no bus named {bus!r}")
        return sims

    def _boards(self, query: dict[str, str]) -> tuple[HTTPStatus, Any]:
        return HTTPStatus.OK, {"boards": [b for s in self._selected(query) for b in s.snapshot()]}

    def _faults(self, query: dict[str, str]) -> tuple[HTTPStatus, Any]:
        faults = [{"bus": s.name, **f.to_dict()} for s in self._selected(query) for f in s.faults()]
        return HTTPStatus.OK, {"faults": faults}

    def _inject(self, query: dict[str, str]) -> tuple[HTTPStatus, Any]:
        body = self._body()
        unknown = set(body) - {"board", "fault", "channel", "params", "bus"}
        if unknown:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, f"unknown field(s): {', '.join(sorted(unknown))}"
            )
        board = _integer(body.get("board"), "board")
        channel = body.get("channel")
        if channel is not None:
            channel = _integer(channel, "channel")
        fault = _text(body.get("fault"), "fault")
        if fault is None:
            raise ApiError(HTTPStatus.BAD_REQUEST, "fault is required")
        params = body.get("params") or {}
        if not isinstance(params, dict) or set(params) & {"board", "fault", "channel"}:
            raise ApiError(HTTPStatus.BAD_REQUEST, "params must be an object of fault parameters")
        sim = self.server.control.sim_for(board, _text(body.get("bus", query.get("bus")), "bus"))
        record = sim.inject(board, fault, channel, **params)
        return HTTPStatus.CREATED, {"bus": sim.name, **record.to_dict()}

    def _clear(self, query: dict[str, str]) -> tuple[HTTPStatus, Any]:
        body = self._body()
        board = body.get("board", query.get("board"))
        fault = _text(body.get("fault", query.get("fault")), "fault")
        board = _integer(board, "board") if board is not None else None
        sims = (
            [self.server.control.sim_for(board, query.get("bus"))]
            if board is not None
            else self._selected(query)
        )
        cleared = sum(s.clear(board, fault) for s in sims)
        return HTTPStatus.OK, {"cleared": cleared}

    def _truth(self, query: dict[str, str]) -> tuple[HTTPStatus, Any]:
        since = _integer(query["since"], "since") if "since" in query else None
        limit = _integer(query["limit"], "limit") if "limit" in query else None
        if limit is not None and not 1 <= limit <= MAX_TRUTH_LIMIT:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"limit must be 1..{MAX_TRUTH_LIMIT}")
        kind = query.get("kind")
        if kind is not None and kind not in EVENT_KINDS:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown event kind {kind!r}")
        truth = self.server.control.sims[0].truth
        last_seq = truth.last_seq  # read first: events recorded meanwhile come next time
        found = [e for e in truth.events(kind, since) if e.seq <= last_seq]
        if limit is not None:
            found = found[-limit:]
        return HTTPStatus.OK, {"events": [e.to_dict() for e in found], "last_seq": last_seq}

    def _fault_kinds(self, query: dict[str, str]) -> tuple[HTTPStatus, Any]:
        kinds = [
            {"fault": k.name, "per_channel": k.per_channel, "params": k.params, "help": k.help}
            for k in FAULT_KINDS.values()
        ]
        return HTTPStatus.OK, {"kinds": kinds}

    def _panel_asset(self, name: str) -> tuple[HTTPStatus, _File]:
        try:
            body, content_type = panel.asset(name)
        except panel.AssetNotFound:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such panel file {name!r}") from None
        return HTTPStatus.OK, _File(body, content_type)

    def _channel_action(
        self, sim: Any, board: int, channel: int, what: str, body: dict[str, Any]
    ) -> tuple[HTTPStatus, Any]:
        action = body.get("action")
        if what == "door":
            if action == "open":
                by = body.get("by", "tester")
                if by not in ("tester", "forced"):
                    raise ApiError(HTTPStatus.BAD_REQUEST, "by must be 'tester' or 'forced'")
                changed = sim.open_door(board, channel, by=by)
            elif action == "close":
                sim.board(board).compartment(channel)  # 404 before anything else
                if not sim.close_door(board, channel):
                    raise ApiError(HTTPStatus.CONFLICT, "the door does not close (left_open)")
                changed = True
            else:
                raise ApiError(HTTPStatus.BAD_REQUEST, "action must be 'open' or 'close'")
        elif action == "put":
            sim.put_item(board, channel)
            changed = True
        elif action == "take":
            sim.take_item(board, channel)
            changed = True
        else:
            raise ApiError(HTTPStatus.BAD_REQUEST, "action must be 'put' or 'take'")
        state = sim.compartment(board, channel)
        return HTTPStatus.OK, {"changed": changed, "board": board, **state.to_dict()}

    def _index(self, query: dict[str, str]) -> tuple[HTTPStatus, _File]:
        page = panel.index_page(self.server.control.sims)
        return HTTPStatus.OK, _File(page.encode("utf-8"), panel.CONTENT_TYPES[".html"])


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value):
        return int(value)
    raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer, not {value!r}")


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be a string")
