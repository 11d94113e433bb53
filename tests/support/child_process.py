"""A test's own child processes: output kept in a log, readiness polled, stopped politely.

- ``stop_child(proc, timeout)``: SIGTERM, then SIGKILL if the child is still there after
  ``timeout`` seconds, so a stuck child never outlives its test.
- ``kill_child(proc)``: SIGKILL, for tests of what a crash leaves behind.
- ``ServiceProcess``: a service run with ``python -m xinbao.cli ...`` that answers HTTP once
  it is up (``xinbao api``, ``xinbao controller``); subclasses name the command, the
  environment and the URL that answers 200 when the service is ready.
"""

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.waiting import wait_until


def stop_child(
    proc: subprocess.Popen,
    timeout: float,
    stuck: Callable[[subprocess.Popen], None] | None = None,
) -> int:
    """The child's exit code after SIGTERM, or after SIGKILL when SIGTERM was not enough.

    ``stuck(proc)`` runs first in that case, while the child still lives (to make it say
    where it hangs); it may raise, once it has ended the child itself.
    """
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if stuck is not None:
            stuck(proc)
        proc.kill()
        return proc.wait(5)


def kill_child(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


class ServiceProcess:
    """``start()``, ``stop()`` (SIGTERM) and ``kill()`` (SIGKILL) of one service child.

    stdout and stderr are appended to ``log``, so a service started again after a crash
    keeps the first run's lines; a child that exits while starting fails the test with the
    log's tail.
    """

    what = "the service"  # names it in failures
    start_timeout_s = 30.0
    stop_timeout_s = 15.0

    def __init__(self, log: Path, ready_url: str) -> None:
        self.log = log
        self.ready_url = ready_url
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONUNBUFFERED="1")

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv(), stdout=out, stderr=subprocess.STDOUT, env=self.env()
            )
        wait_until(self._ready, self.start_timeout_s, f"{self.what} (log: {self.log})")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.what} exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.ready_url, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as after a power cut or an OOM kill."""
        if self.proc is not None:
            kill_child(self.proc)
            self.proc = None

    def stop(self) -> int | None:
        """SIGTERM; the exit code, or None when it was not running."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        return stop_child(proc, self.stop_timeout_s, self._ignored_sigterm)

    def _ignored_sigterm(self, proc: subprocess.Popen) -> None:
        """Called before the SIGKILL that follows an unanswered SIGTERM; nothing by default."""
