"""Ports and child processes of the demo: pick or check ports, start, watch and stop children.

Children run in their own session, so a Ctrl-C in the terminal reaches only the demo, which
then stops them in order (controller first, so its last events still reach the cloud). They
also die with the demo if it is killed outright (``xinbao.demo_child``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"


class DemoError(RuntimeError):
    """A failure the user must read: printed as one line, never as a traceback."""

    exit_code = 1


class UsageError(DemoError):
    """Bad arguments, a taken port, an unusable data directory."""

    exit_code = 2


@dataclass
class Ports:
    api: int
    kiosk: int
    sim: int
    mqtt: int


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The servers set SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _any_free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        if port not in taken:
            return port


def resolve_ports(wanted: Mapping[str, int], options: Mapping[str, str]) -> Ports:
    """Check each wanted port (0 = pick a free one); a clear UsageError if one is taken.

    ``options`` maps each name to the command-line option that sets it, for the message.
    """
    fixed = [p for p in wanted.values() if p]
    if len(set(fixed)) != len(fixed):
        raise UsageError(f"the same port is given twice: {sorted(fixed)}")
    chosen: dict[str, int] = {}
    for name, port in wanted.items():
        if port and not _port_free(port):
            raise UsageError(
                f"port {port} on {HOST} is in use ({options[name]}): stop what uses it, "
                f"choose another port, or pass {options[name]} 0 for any free port"
            )
        chosen[name] = port
    taken = set(fixed)
    for name, port in chosen.items():
        if not port:
            chosen[name] = _any_free_port(taken)
            taken.add(chosen[name])
    return Ports(**chosen)


class Child:
    """One ``xinbao`` subcommand as a child process, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Call from the event loop's (main) thread: Linux sends the parent-death signal when
        # the forking THREAD ends, so a child forked from a worker thread would die with it.
        env = {**self.env, "XINBAO_DEMO_PARENT_PID": str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "xinbao.demo_child", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def exit_code(self) -> int | None:
        """None while running (or never started)."""
        return self._process.poll() if self._process else None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def died(self) -> DemoError:
        return DemoError(
            f"the {self.name} stopped unexpectedly (exit {self.exit_code}); "
            f"last lines of {self.log_path}:\n{self.tail()}"
        )

    async def stop(self, timeout: float = 10.0) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        for _ in range(int(timeout / 0.05)):
            if process.poll() is not None:
                return
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.to_thread(process.wait)


async def wait_for_http(
    client: httpx.AsyncClient, url: str, child: Child, timeout: float, what: str
) -> httpx.Response:
    """Poll ``url`` until it answers 200; fail early if the child process died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "no answer"
    while loop.time() < deadline:
        if child.exit_code is not None:
            raise child.died()
        try:
            response = await client.get(url, timeout=2.0)
        except httpx.HTTPError as err:
            last = f"{err.__class__.__name__}"
        else:
            if response.status_code == 200:
                return response
            last = f"HTTP {response.status_code}"
        await asyncio.sleep(0.2)
    raise DemoError(
        f"the {what} did not come up at {url} within {timeout:.0f} s ({last}); "
        f"see {child.log_path}:\n{child.tail()}"
    )
