"""``xinbao api --workers N``: N uvicorn worker processes on one port.

Each worker is a whole API process with its own lifespan, so what "runs once per process"
runs N times. That is by design, and each piece is safe with it (docs/deploy.md "Workers"):

- SMS dispatcher: a message is sent by the worker whose conditional UPDATE moved it to
  ``sending`` (FOR UPDATE SKIP LOCKED first on PostgreSQL): never by two.
- Scheduler: every expiry, reminder and overdue mark is a conditional UPDATE on the handover;
  the loser of a race skips it (tests/cloud_api/test_scheduler_race.py).
- MQTT bridge: each worker is one member of the shared subscription ``$share/<group>/...``,
  so the broker hands each message to one of them; event_id dedupe and the per-locker seq
  order make the split safe (cloud_api/mqtt/ingest.py). Its chores claim their work under the
  locker's ``locker_link`` row lock (staff lists, view pings) or with conditional UPDATEs
  (command timeouts).
- Audit checkpoints: appended under an exclusive lock on the file, and only when the head
  moved past the file's last line, so N workers write one line per change.
- The first admin: created by whichever worker starts first; the others find it.

Two things must differ per worker, and this module provides them:

- The MQTT client id. A configured XINBAO_MQTT_CLIENT_ID is stable so a restarted process
  resumes its persistent session; N workers sharing it would log each other out in a loop.
  Each worker claims a slot (an exclusive ``flock`` on ``slot-<i>.lock`` in the run directory,
  released by the kernel when the worker dies) and appends ``-w<i>``: a worker restarted by
  uvicorn takes the slot its predecessor held, and with it the same session.
- Metrics: prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, wiped at start),
  so a scrape answered by any worker counts the requests of all (cloud_api/metrics/scrape.py).
"""

import fcntl
import logging
import os
import time
from pathlib import Path

from fastapi import FastAPI

log = logging.getLogger(__name__)

RUN_DIR_ENV = "XINBAO_API_RUN_DIR"
WORKERS_ENV = "XINBAO_API_WORKERS"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SLOT_WAIT_S = 10.0
_held: list[int] = []  # the slot lock's file descriptor, open for the life of the worker


def default_workers(demo: bool) -> int:
    """One per core in production; one in the demo (its console SMS inbox and made-up
    secrets belong to one process)."""
    return 1 if demo else max(1, os.cpu_count() or 1)


def prepare_metrics_dir(run_dir: Path) -> str:
    """The directory the workers' metrics files go in, emptied of an earlier run's (their
    counts would be added to this run's): PROMETHEUS_MULTIPROC_DIR if the operator set it,
    else one in the run directory, exported for the workers."""
    chosen = os.environ.get(METRICS_DIR_ENV) or str(run_dir / "metrics")
    path = Path(chosen)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[METRICS_DIR_ENV] = chosen
    return chosen


def claim_slot(run_dir: Path, workers: int) -> int:
    """This worker's number, 0..workers-1: the first slot whose lock no live worker holds."""
    deadline = time.monotonic() + _SLOT_WAIT_S
    while True:
        for slot in range(workers):
            fd = os.open(run_dir / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _held.append(fd)
            return slot
        if time.monotonic() >= deadline:
            # Every slot held (a dead worker's lock not released yet?): a number of our own
            # rather than a client id another worker uses.
            log.warning("no free worker slot in %s: numbering this worker by its pid", run_dir)
            return workers + os.getpid()
        time.sleep(0.1)


def worker_client_id(base: str, slot: int) -> str:
    suffix = f"-w{slot}"
    return base[: 64 - len(suffix)] + suffix


def app_from_environment() -> FastAPI:
    """The uvicorn factory each worker calls: the settings from the environment (checked by
    ``xinbao api`` before it started the workers), its slot's MQTT client id."""
    from cloud_api.core.config import load_settings
    from cloud_api.main import create_app
    from cloud_api.sms.config import SmsSettings

    settings = load_settings()
    run_dir = os.environ.get(RUN_DIR_ENV)
    workers = int(os.environ.get(WORKERS_ENV, "1"))
    if run_dir and settings.mqtt_client_id:
        slot = claim_slot(Path(run_dir), workers)
        client_id = worker_client_id(settings.mqtt_client_id, slot)
        settings = settings.model_copy(update={"mqtt_client_id": client_id})
        log.info("API worker %d (pid %d), MQTT client id %s", slot, os.getpid(), client_id)
    return create_app(settings, sms_settings=SmsSettings())
