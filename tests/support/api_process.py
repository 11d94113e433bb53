"""``xinbao api`` as a real child process, which a test can SIGKILL mid-journey.

The in-process TestClient app ends gracefully (its lifespan stops the bridge); a crashed
API process does not: its bridge never acknowledges what it was holding, its transactions
die half way. This runs the same command a deployment runs, on a port of its own, with the
demo secrets (so the tests' locker keys match) and a stable MQTT client id (so the process
started after the crash resumes the crashed one's persistent session, as a restarted
service does).
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.waiting import free_port, wait_until


class ApiProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        db_url: str,
        mqtt_url: str,
        client_id: str,
        command_timeout_s: float = 5,
    ) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / f"api-{client_id}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("XINBAO_")}
        env.update(
            PYTHONUNBUFFERED="1",
            DATABASE_URL=db_url,
            XINBAO_DEMO="1",
            XINBAO_MQTT_URL=mqtt_url,
            XINBAO_MQTT_CLIENT_ID=client_id,
            XINBAO_MQTT_COMMAND_TIMEOUT_SECONDS=str(command_timeout_s),
            XINBAO_SMS_INTERVAL_SECONDS="0.5",
        )
        self._env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "xinbao.cli",
                    "api",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
            )
        wait_until(self._ready, 60, f"the API process (log: {self.log})")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"xinbao api exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.url + "/openapi.json", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no lifespan, no PUBACK for what the bridge held, no clean disconnect."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
