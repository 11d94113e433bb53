"""Suite-wide fixtures.

``_check_system_health`` runs around every test and fails the test that leaves threads,
asyncio tasks or child processes behind: a leaked serial reader thread, event-loop task or
broker process would otherwise make a later, unrelated test flaky.

Tasks are looked for in every asyncio event loop the process has made, in any thread and by
any means (``asyncio.run``, ``new_event_loop``, a library's own loop): every stdlib loop
passes through ``BaseEventLoop.__init__``, which registers it in a weak set here. Looking
never creates a loop. A task counts as leaked when it was not pending before the test and is
still pending after it, in a loop left open or in a loop some thread still runs. A loop
closed under a pending task drops it, and asyncio reports "Task was destroyed but it is
pending!" through its logger when the task is collected: that report fails the test too.
(asyncio.run cancels and awaits its tasks on the way out, so it leaves none of these.)

``tests/test_suite_health`` proves the fixture fails a test for each kind of leak.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import threading
import time
import weakref

import pytest
from argon2 import PasswordHasher

from cloud_api.core import security
from tests.support.postgres import PgDatabases

# Staff passwords are hashed with argon2id at a test cost in this process. The production
# cost (argon2-cffi's defaults: about 130 ms a hash or a check on this machine) guards stolen
# hashes against guessing, which no test measures, and hundreds of tests create and log in
# staff: minutes of the suite's CPU. The hashes are the same kind (parameters ride in each
# hash); processes the tests start (API, demo, compose) keep the production cost.
security._hasher = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
security._DUMMY_HASH = security._hasher.hash("xinbao-no-such-user")

# Seconds a test's threads, tasks and processes get to finish after it, when they were told
# to stop. The fixture's own tests shorten it through the environment.
GRACE_S = float(os.environ.get("XINBAO_LEAK_GRACE_S", "5"))

_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _track_every_event_loop() -> None:
    original = asyncio.BaseEventLoop.__init__
    if getattr(original, "tracked_by_conftest", False):
        return

    def __init__(self: asyncio.BaseEventLoop, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        _LOOPS.add(self)

    __init__.tracked_by_conftest = True  # type: ignore[attr-defined]
    asyncio.BaseEventLoop.__init__ = __init__  # type: ignore[method-assign]


_track_every_event_loop()  # at import, before any fixture or test can make a loop


# Which tests started a child process (any subprocess.Popen: a service, a CLI run, a browser,
# asyncio's subprocesses too), by node id. The fast tier (-m "not slow") promises none.
_SPAWNED: dict[str, str] = {}


def _record_every_child_process() -> None:
    original = subprocess.Popen.__init__
    if getattr(original, "recorded_by_conftest", False):
        return

    def __init__(self: subprocess.Popen, args, *rest, **kwargs) -> None:
        current = os.environ.get("PYTEST_CURRENT_TEST")
        if current:
            program = args if isinstance(args, str | bytes | os.PathLike) else args[0]
            _SPAWNED.setdefault(current.rsplit(" (", 1)[0], os.path.basename(str(program)))
        original(self, args, *rest, **kwargs)

    __init__.recorded_by_conftest = True  # type: ignore[attr-defined]
    subprocess.Popen.__init__ = __init__  # type: ignore[method-assign]


_record_every_child_process()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Two workers per core: most of a test's time is spent waiting on a broker, a board, a
    database or a child process, so one worker per core would leave the cores half idle."""
    return 2 * (len(os.sched_getaffinity(0)) or 1)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything imports and collection made (modules, test items, schemas) lives for the
    whole run: freeze it, so the full collection after each test walks only what tests made.
    Without this each collection walks some 200,000 objects: about a quarter of a second per
    test, a fifth of the suite's time."""
    gc.collect()
    gc.freeze()


def _children() -> set[int]:
    """PIDs of this process's live (non-zombie) children, read from /proc."""
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == me and state != "Z":
            found.add(int(entry))
    return found


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def _pending_tasks() -> set[asyncio.Task]:
    """Unfinished tasks of every event loop made so far (open, running or closed)."""
    found: set[asyncio.Task] = set()
    for loop in list(_LOOPS):
        try:
            tasks = asyncio.all_tasks(loop)
        except RuntimeError:
            # The loop's thread kept changing its task set while we looked: it is busy, so
            # look again on the next pass.
            continue
        found |= {t for t in tasks if not t.done()}
    return found


class _DestroyedPendingTasks(logging.Handler):
    """Hears asyncio's "Task was destroyed but it is pending!" (a loop closed under a task)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.tasks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Task was destroyed but it is pending"):
            task = next((x for x in message.splitlines() if x.startswith("task:")), message)
            self.tasks.append(task.removeprefix("task: "))


@pytest.fixture(autouse=True)
def _check_system_health(request):
    threads_before = _threads()
    children_before = _children()
    tasks_before = _pending_tasks()
    destroyed = _DestroyedPendingTasks()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(destroyed)
    try:
        yield
    finally:
        gc.collect()  # a dropped task in a reference cycle is reported when collected
        asyncio_log.removeHandler(destroyed)
    # Give threads, tasks and processes that were told to stop a moment to finish.
    deadline = time.monotonic() + GRACE_S
    while True:
        new_threads = _threads() - threads_before
        new_children = _children() - children_before
        new_tasks = _pending_tasks() - tasks_before
        if not (new_threads or new_children or new_tasks) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    problems = []
    if new_threads:
        problems.append(f"threads left running: {sorted(t.name for t in new_threads)}")
    if new_children:
        problems.append(f"child processes left running: {sorted(new_children)}")
    if new_tasks:
        names = sorted(f"{t.get_name()} ({t.get_coro()!r})" for t in new_tasks)
        problems.append(f"asyncio tasks left pending: {names}")
    if destroyed.tasks:
        problems.append(f"asyncio tasks destroyed while pending: {destroyed.tasks}")
    spawned = _SPAWNED.pop(request.node.nodeid, None)
    if spawned and request.node.get_closest_marker("slow") is None:
        problems.append(
            f"started a child process ({spawned}) but is not marked slow: the fast tier "
            '(-m "not slow") starts none; add @pytest.mark.slow'
        )
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def pg_databases():
    """This run's (this worker's) PostgreSQL databases: ``fresh()`` one per test, given back
    when the test is over (tests/support/postgres.py), all dropped at the end."""
    dbs = PgDatabases("xinbao_test")
    yield dbs
    dbs.close()


@pytest.fixture
def pg_url(pg_databases):
    """A PostgreSQL database of this test's own, migrated and empty."""
    url = pg_databases.fresh()
    yield url
    pg_databases.give_back(url)
