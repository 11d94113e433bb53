"""A simulated cabinet and the edge controller as a child process.

``COMPARTMENTS`` is the one wiring both sides use: the cloud registers the locker with it
(``locker_body``) and the controller's TOML lists it, so compartment numbers agree.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from simulator import BoardSpec, Simulator
from tests.support.child_process import ServiceProcess
from tests.support.waiting import free_port

# (number, size, board, channel): two kerong-cu16 boards, mixed sizes.
COMPARTMENTS = [
    (1, "S", 1, 1),
    (2, "S", 1, 2),
    (3, "M", 1, 3),
    (4, "M", 1, 4),
    (5, "M", 2, 1),
    (6, "L", 2, 2),
]


def simulator() -> Simulator:
    """Two kerong-cu16 boards with IR sensors, fast (no wire pacing); use as a context."""
    boards = [
        BoardSpec(protocol="kerong-cu16", address=a, channels=16, pulse_ms=100) for a in (1, 2)
    ]
    return Simulator(boards, wire_timing=False, reply_delay=0.001)


def locker_body(locker_id: str, lat: float = 34.32, lon: float = 109.03) -> dict:
    """The cloud's POST /api/v1/lockers body for this cabinet."""
    return {
        "id": locker_id,
        "site": "国际港务区政务中心",
        "address": "港务大道1号",
        "latitude": lat,
        "longitude": lon,
        "compartments": [
            {"number": n, "size": s, "board": b, "channel": c} for n, s, b, c in COMPARTMENTS
        ],
    }


def controller_toml(
    *,
    locker_id: str,
    locker_key: bytes,
    data_dir: Path,
    serial_port: str,
    kiosk_port: int,
    mqtt_port: int | None,
    mqtt_username: str | None = None,
    mqtt_password: str | None = None,
    lockout_base_s: float = 1.0,
) -> str:
    mqtt = ""
    if mqtt_port is not None:
        mqtt = f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\n'
        if mqtt_username:
            mqtt += f'username = "{mqtt_username}"\npassword = "{mqtt_password}"\n'
        mqtt += "telemetry_interval_s = 1.0\nreconnect_max_s = 1\n"
    compartments = "".join(
        f'[[compartments]]\nnumber = {n}\nsize = "{s}"\nboard = {b}\nchannel = {c}\n\n'
        for n, s, b, c in COMPARTMENTS
    )
    return f"""locker_id = "{locker_id}"
locker_key_hex = "{locker_key.hex()}"
data_dir = "{data_dir}"
poll_interval_s = 0.05
debounce_polls = 2
door_left_open_after_s = 5.0
lockout_base_s = {lockout_base_s}

{mqtt}
[kiosk]
host = "127.0.0.1"
port = {kiosk_port}

[[buses]]
port = "{serial_port}"
protocol = "kerong-cu16"
# Room for a machine busy with a parallel suite or a soak: at 0.15 s a starved simulator
# thread made a healthy board look silent (model walk seed 1025 under load 15 on 2 cores).
timeout_s = 0.5
  [[buses.boards]]
  address = 1
  channels = 16
  pulse_ms = 100
  [[buses.boards]]
  address = 2
  channels = 16
  pulse_ms = 100

{compartments}"""


class ControllerProcess(ServiceProcess):
    """``xinbao controller --config ...`` as a child; ``start()``, ``stop()``, ``kill()``.

    ``ControllerProcess.for_cabinet(workdir, ...)`` writes the TOML for the cabinet above;
    the controller's own tests write theirs and pass its path. A controller that does not
    end on SIGTERM fails the test, its asyncio tasks and threads' stacks in the log.
    """

    what = "the controller kiosk"

    def __init__(self, config: Path, kiosk_port: int, log: Path) -> None:
        self.config = config
        self.kiosk = f"http://127.0.0.1:{kiosk_port}"
        super().__init__(log, self.kiosk + "/api/status")

    @classmethod
    def for_cabinet(cls, workdir: Path, **toml_args) -> "ControllerProcess":
        """``toml_args`` as for ``controller_toml``; config, data and log in ``workdir``."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        kiosk_port = free_port()
        config = workdir / "controller.toml"
        config.write_text(
            controller_toml(data_dir=workdir / "data", kiosk_port=kiosk_port, **toml_args)
        )
        return cls(config, kiosk_port, workdir / "controller.log")

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "xinbao.cli", "controller", "--config", str(self.config)]

    def _ignored_sigterm(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGUSR2)  # its asyncio tasks go to the log
        proc.send_signal(signal.SIGUSR1)  # and its threads' stacks
        time.sleep(1)
        proc.kill()
        proc.wait(5)
        raise AssertionError(
            f"the controller did not stop on SIGTERM: {self.log.read_text()[-6000:]}"
        )

    def status(self) -> dict:
        return httpx.get(self.kiosk + "/api/status", timeout=5).json()

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(self.kiosk + path, json=body, timeout=10)

    def code(self, code: str) -> httpx.Response:
        return self.post("/api/code", {"code": code})
