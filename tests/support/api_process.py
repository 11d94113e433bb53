"""``xinbao api`` as a real child process, which a test can SIGKILL mid-journey.

The in-process TestClient app ends gracefully (its lifespan stops the bridge); a crashed
API process does not: its bridge never acknowledges what it was holding, its transactions
die half way. This runs the same command a deployment runs, on a port of its own, with the
demo secrets (so the tests' locker keys match) and a stable MQTT client id (so the process
started after the crash resumes the crashed one's persistent session, as a restarted
service does).
"""

import os
import sys
from pathlib import Path

from cloud_api.core.config import DEMO_MASTER_SECRET, DEMO_TOKEN_SECRET
from tests.support.child_process import ServiceProcess
from tests.support.waiting import free_port


class ApiProcess(ServiceProcess):
    """``start()``, ``stop()`` and ``kill()`` (SIGKILL: no lifespan, no PUBACK for what the
    bridge held, no clean disconnect)."""

    what = "xinbao api"
    start_timeout_s = 60.0
    stop_timeout_s = 20.0

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
        super().__init__(self.dir / f"api-{client_id}.log", self.url + "/openapi.json")
        env = {k: v for k, v in os.environ.items() if not k.startswith("XINBAO_")}
        env.update(
            PYTHONUNBUFFERED="1",
            DATABASE_URL=db_url,
            XINBAO_DEMO="1",
            # The demo makes up its secrets per process: this one must share the tests'.
            XINBAO_MASTER_SECRET=DEMO_MASTER_SECRET,
            XINBAO_TOKEN_SECRET=DEMO_TOKEN_SECRET,
            XINBAO_MQTT_URL=mqtt_url,
            XINBAO_MQTT_CLIENT_ID=client_id,
            XINBAO_MQTT_COMMAND_TIMEOUT_SECONDS=str(command_timeout_s),
            XINBAO_SMS_INTERVAL_SECONDS="0.5",
            XINBAO_MQTT_STAFF_ROUND_SECONDS="0.5",
        )
        self._env = env

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "xinbao.cli",
            "api",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def env(self) -> dict[str, str]:
        return self._env
