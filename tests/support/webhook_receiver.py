"""A webhook subscriber for tests: a real HTTP server (http.server, in a thread) on a port of
its own, which a test can stop (the port then refuses connections), start again on the same
port, and tell how to answer.

Every request that reached the handler is kept as a ``Delivery`` (headers, raw body, parsed
JSON, the status answered), duplicates and refused ones included, so a test sees exactly what
a subscriber's logs would show.
"""

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.waiting import free_port


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    arrived: float  # time.monotonic() when the request came in (before any slow answer)

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers.get("x-xinbao-event-id", "")


#: Decides the answer to one request from its parsed body (default: 204 to everything).
Answer = Callable[[dict], int]


class WebhookReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/xinbao"
        self.deliveries: list[Delivery] = []
        self.answer: Answer = lambda _body: 204
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- what arrived -----------------------------------------------------------------------

    def all(self) -> list[Delivery]:
        """Every request, in the order they came in."""
        with self._lock:
            return sorted(self.deliveries, key=lambda d: d.arrived)

    def accepted(self) -> list[Delivery]:
        """The deliveries answered 2xx, in arrival order."""
        return [d for d in self.all() if 200 <= d.status < 300]

    def accepted_types(self) -> list[str]:
        return [d.json["type"] for d in self.accepted()]

    # -- life -------------------------------------------------------------------------------

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    status = receiver.answer(json.loads(body))
                except ValueError:
                    status = 400
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                            arrived,
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = False
        self._server.block_on_close = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-rx"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Down: the port refuses connections until ``start`` again."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = self._thread = None
