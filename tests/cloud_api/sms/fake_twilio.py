"""A local stand-in for the Twilio REST API, good enough for twilio-python's Messages calls.

It records every request (method, path, form, Basic auth) and answers from a script: each
``POST .../Messages.json`` takes the next scripted answer (default 201 with a new sid). Accepted
messages are kept, so ``GET .../Messages.json`` lists them the way Twilio does, newest first.
"""

import base64
import json
import threading
import uuid
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from cloud_api.sms.models import utcnow


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    auth: tuple[str, str] | None


@dataclass
class Answer:
    status: int
    code: int | None = None
    message: str = ""
    # Accept the message, then answer with ``status`` anyway (a lost reply).
    accept_anyway: bool = False
    # Answer with this body instead of JSON (a garbled answer from a broken proxy).
    raw: str | None = None


@dataclass
class FakeTwilio:
    server: ThreadingHTTPServer
    thread: threading.Thread
    requests: list[Recorded] = field(default_factory=list)
    script: list[Answer] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def creates(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST"]

    def accept(self, form: dict[str, str]) -> dict:
        message = {
            "sid": "SM" + uuid.uuid4().hex,
            "to": form.get("To"),
            "from": form.get("From"),
            "body": form.get("Body"),
            "status": "queued",
            "date_created": format_datetime(utcnow(), usegmt=True),
        }
        self.messages.append(message)
        return message

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _handler(fake: FakeTwilio):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _auth(self) -> tuple[str, str] | None:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return user, password

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            form = dict(parse_qsl(self.rfile.read(length).decode()))
            parts = urlsplit(self.path)
            with fake.lock:
                fake.requests.append(
                    Recorded("POST", parts.path, dict(parse_qsl(parts.query)), form, self._auth())
                )
                answer = fake.script.pop(0) if fake.script else Answer(201)
                accepted = answer.raw is None and (answer.status == 201 or answer.accept_anyway)
                message = fake.accept(form) if accepted else None
            if answer.raw is not None:
                data = answer.raw.encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif answer.status == 201 and message is not None:
                self._reply(201, message)
            else:
                self._reply(
                    answer.status,
                    {"code": answer.code, "message": answer.message, "status": answer.status},
                )

        def do_GET(self):
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            with fake.lock:
                fake.requests.append(Recorded("GET", parts.path, query, {}, self._auth()))
                found = [
                    m
                    for m in reversed(fake.messages)
                    if m["to"] == query.get("To") and m["from"] == query.get("From")
                ]
            self._reply(
                200,
                {
                    "messages": found,
                    "next_page_uri": None,
                    "page": 0,
                    "page_size": 50,
                    "uri": parts.path,
                },
            )

    return Handler


def start_fake_twilio() -> FakeTwilio:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # replaced below
    server.daemon_threads = False  # so server_close() joins the request threads
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-twilio", daemon=True
    )
    fake = FakeTwilio(server, thread)
    server.RequestHandlerClass = _handler(fake)
    thread.start()
    return fake
