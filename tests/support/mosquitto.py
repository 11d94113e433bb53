"""A real Mosquitto on a free port, which a test can stop, restart and configure."""

import os
import signal
import subprocess
from pathlib import Path

from tests.support.child_process import kill_child, stop_child
from tests.support.waiting import free_port, listening, wait_until

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")


def available() -> bool:
    return MOSQUITTO.exists()


class Mosquitto:
    """``Mosquitto(dir).start()``; ``url`` for clients; ``stop()`` / ``restart()`` keep the port;
    ``pause()`` / ``resume()`` freeze and thaw it (SIGSTOP / SIGCONT), ``kill()`` is SIGKILL.

    Persistence is on, so a restart keeps retained messages and the queued QoS 1 messages of
    persistent sessions, as a production broker does. ``users`` (name -> password) turns
    anonymous access off; ``acl`` is the text of an ACL file.
    """

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.dir}/",
            # Saved on every change, so even a SIGKILLed broker keeps persistent sessions.
            "autosave_on_changes true",
            "autosave_interval 1",
            f"log_dest file {self.log}",
            # As deploy/mosquitto/mosquitto.conf: the default 1000 drops messages to an API
            # process when a whole city of lockers reconnects at once (bench/city_bench.py).
            "max_queued_messages 10000",
            # As deploy/mosquitto/mosquitto.conf: the cloud's in-flight window (the default 20
            # is filled by one locker's messages waiting in the cloud's worker).
            "max_inflight_messages 100",
        ]
        if users:
            passwd = self.dir / "passwd"
            passwd.write_text("")
            for name, password in users.items():
                subprocess.run(
                    [str(MOSQUITTO_PASSWD), "-b", str(passwd), name, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            lines.append(f"acl_file {self.dir / 'acl'}")
        if os.geteuid() == 0:
            # As root mosquitto would drop to its own user, which cannot enter pytest's
            # private tmp directories.
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def url(self, username: str | None = None, password: str | None = None) -> str:
        auth = f"{username}:{password}@" if username else ""
        return f"mqtt://{auth}127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: listening(self.port), 10, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()  # a stopped process cannot act on SIGTERM
            stop_child(self.proc, 10)
            self.proc = None

    # The broker is this test's own child, so the test may freeze and kill it: a frozen
    # broker keeps its TCP connections open but acknowledges nothing.
    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None:
            kill_child(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
