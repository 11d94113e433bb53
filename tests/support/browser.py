"""Debian's chromium through Playwright (sync API), an app served over real HTTP, screenshots.

- ``launch_chromium()``: a context manager giving a headless Browser (fails the test with the
  apt command when chromium is missing).
- ``serve(app)``: uvicorn in a thread on a free port, lifespan on (so the app's MQTT bridge
  runs); ``(server, thread, base_url)``; stop with ``stop_serving(server, thread)``. An app
  that must know its own address before it is built (links in its SMS) is given a socket
  bound beforehand: ``serve(app, sock)`` (``bound_socket()``).
- ``screenshot(page, name)``: the page as it is now, kept in test-artifacts/ for a person.
"""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Playwright's 5 s default for expect() is shorter than a big page takes to render when the
# whole suite runs beside it on two cores (CI once saw the API docs heading drawn just after
# 5 s). A page that never shows what is expected still fails, only later.
expect.set_options(timeout=15_000)


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def bound_socket() -> tuple[socket.socket, str]:
    """A socket on a free local port, and the base URL it will be served at."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def serve(app, sock: socket.socket | None = None) -> tuple[uvicorn.Server, threading.Thread, str]:
    if sock is None:
        sock, _ = bound_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dash-api")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def stop_serving(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=30)


def screenshot(page: Page, name: str) -> None:
    # Bytes written here, not screenshot(path=...): Playwright would write the file on a
    # thread pool of its own that outlives the test.
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{name}.png").write_bytes(page.screenshot(full_page=True))
