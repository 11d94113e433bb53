"""``xinbao demo`` as a newcomer runs it: a real child process, its output line by line.

``run_demo`` (a fixture in tests/e2e/conftest.py) starts ``DemoRun``s and kills what is left
at the end. The child gets a clean environment (no XINBAO_* or MQTT_URL from the machine)
plus what the test adds.
"""

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

FREE_PORTS = ["--api-port", "0", "--kiosk-port", "0", "--sim-port", "0", "--mqtt-port", "0"]
START_TIMEOUT_S = 90
SCENARIO_TIMEOUT_S = 240


class DemoRun:
    """``xinbao demo ...`` as a child process; its output collected line by line."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("XINBAO_")}
        clean.pop("MQTT_URL", None)
        env = {**clean, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "xinbao.cli", "demo", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="demo-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if regex.search(line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output}")

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.finish(timeout=30)
