"""A real Mosquitto on a free port, which a test can stop, restart and configure."""

import os
import subprocess
from pathlib import Path

from tests.support.child_process import stop_child
from tests.support.waiting import free_port, listening, wait_until

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")


def available() -> bool:
    return MOSQUITTO.exists()


class Mosquitto:
    """``Mosquitto(dir).start()``; ``url`` for clients; ``stop()`` / ``restart()`` keep the port.

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
            f"log_dest file {self.log}",
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
            stop_child(self.proc, 10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
