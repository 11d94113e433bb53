"""The /metrics gate on a real ``xinbao api`` process listening on every address, with no
token set (loopback only): a client on the machine's network address is refused, and a forged
``X-Forwarded-For: 127.0.0.1`` does not make it loopback (uvicorn believes that header only
from a proxy on loopback). A reverse proxy on loopback that passes the real client's address
gets that client refused too."""

import os
import secrets
import socket
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.child_process import ServiceProcess
from tests.support.waiting import free_port

pytestmark = pytest.mark.slow


def network_address() -> str | None:
    """This machine's own non-loopback IPv4 address (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


class OpenApi(ServiceProcess):
    what = "xinbao api on 0.0.0.0"
    start_timeout_s = 60.0

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        super().__init__(workdir / "api.log", f"http://127.0.0.1:{self.port}/openapi.json")
        self.workdir = workdir

    def argv(self) -> list[str]:
        host = "0.0.0.0"  # noqa: S104 - every address, so the test can come from outside
        return [sys.executable, "-m", "xinbao.cli", "api", "--host", host, "--port", str(self.port)]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XINBAO_")}
        return env | {
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": f"sqlite:///{self.workdir / 'api.db'}",
            "XINBAO_MASTER_SECRET": secrets.token_urlsafe(32),
            "XINBAO_TOKEN_SECRET": secrets.token_urlsafe(32),
            "XINBAO_API_WORKERS": "1",
        }


def test_only_loopback_scrapes_and_a_forged_forwarded_for_does_not_help(tmp_path):
    outside = network_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    api = OpenApi(tmp_path)
    api.start()
    try:
        local = httpx.get(f"http://127.0.0.1:{api.port}/metrics", timeout=10)
        assert local.status_code == 200 and "xinbao_http_requests_total" in local.text
        for headers in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"X-Real-IP": "127.0.0.1"}):
            r = httpx.get(f"http://{outside}:{api.port}/metrics", headers=headers, timeout=10)
            assert r.status_code == 403, (headers, r.text)
            assert r.json()["reason"] == "metrics_address"
            assert "xinbao_" not in r.text
        # A proxy on this machine passing on its client's address: that client is refused.
        proxied = httpx.get(
            f"http://127.0.0.1:{api.port}/metrics",
            headers={"X-Forwarded-For": "198.51.100.7"},
            timeout=10,
        )
        assert proxied.status_code == 403, proxied.text
    finally:
        api.stop()
