"""`xinbao api --host --port` as a real process on an empty database (a fresh PostgreSQL
database, a new SQLite file): it migrates, serves /openapi.json and an authorised request,
and stops cleanly on SIGTERM and SIGINT with no process left behind."""

import os
import secrets
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cloud_api.conftest import pg_admin
from tests.support.postgres import pg_url
from tests.support.waiting import free_port, listening, wait_until

pytestmark = pytest.mark.slow

XINBAO = Path(sys.executable).with_name("xinbao")
ADMIN = ("first-admin", "first admin password")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'api.db'}"
        return
    name = f"xinbao_api_proc_{uuid.uuid4().hex[:8]}"
    pg_admin(f"CREATE DATABASE {name}")
    yield pg_url(name)
    pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _serve(database_url: str, port: int, log) -> subprocess.Popen:
    # A production-like start: no demo, real secrets, background work on.
    env = {k: v for k, v in os.environ.items() if not k.startswith("XINBAO_")}
    env |= {
        "DATABASE_URL": database_url,
        "XINBAO_MASTER_SECRET": secrets.token_urlsafe(32),
        "XINBAO_TOKEN_SECRET": secrets.token_urlsafe(32),
        "XINBAO_FIRST_ADMIN_USERNAME": ADMIN[0],
        "XINBAO_FIRST_ADMIN_PASSWORD": ADMIN[1],
        "XINBAO_SCHEDULER_INTERVAL_SECONDS": "0.2",
        "XINBAO_SMS_INTERVAL_SECONDS": "0.2",
        # Production's default is a worker per core: two here, whatever the host, so the
        # clean stop below covers a supervisor and its workers.
        "XINBAO_API_WORKERS": "2",
    }
    return subprocess.Popen(
        [str(XINBAO), "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_api_process_serves_and_stops_cleanly(empty_database, tmp_path, stop_with):
    port = free_port()
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        proc = _serve(empty_database, port, log)
        try:
            wait_until(
                lambda: listening(port) or proc.poll() is not None,
                timeout=60,
                what="the API to listen",
            )
            assert proc.poll() is None, log_path.read_text()
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=30) as http:
                spec = http.get("/openapi.json")
                assert spec.status_code == 200
                assert "/api/v1/lockers" in spec.json()["paths"]
                assert http.get("/api/v1/lockers").status_code == 401
                token = http.post(
                    "/api/v1/staff/login", json={"username": ADMIN[0], "password": ADMIN[1]}
                )
                assert token.status_code == 200, token.text
                headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
                me = http.get("/api/v1/staff/me", headers=headers)
                assert me.status_code == 200 and me.json()["role"] == "admin"
                assert http.get("/api/v1/lockers", headers=headers).json() == []
            proc.send_signal(stop_with)
            # uvicorn shuts down gracefully, then may re-raise the signal it caught (exit by
            # that signal, as a supervisor expects); the log below shows the clean shutdown.
            assert proc.wait(timeout=60) in (0, -stop_with), log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    output = log_path.read_text()
    assert "Application startup complete" in output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output, output


def test_api_process_refuses_default_secrets(empty_database, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("XINBAO_")}
    env["DATABASE_URL"] = empty_database
    done = subprocess.run(
        [str(XINBAO), "api", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "XINBAO_MASTER_SECRET is not set" in done.stderr
    assert "Traceback" not in done.stderr
