"""Suite-wide fixtures.

``_check_system_health`` runs around every test and fails the test that leaves threads,
asyncio tasks or child processes behind: a leaked serial reader thread or broker process
would otherwise make a later, unrelated test flaky.
"""

import asyncio
import os
import threading
import time

import pytest


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


def _leftover_tasks() -> set[asyncio.Task]:
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return set()
    if loop.is_closed():
        return set()
    return {t for t in asyncio.all_tasks(loop) if not t.done()}


@pytest.fixture(autouse=True)
def _check_system_health(request):
    threads_before = _threads()
    children_before = _children()
    yield
    # Give threads and processes that were told to stop a moment to finish.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        new_threads = {t for t in _threads() - threads_before if not t.daemon or t.is_alive()}
        new_children = _children() - children_before
        if not new_threads and not new_children:
            break
        time.sleep(0.05)
    new_threads = _threads() - threads_before
    new_children = _children() - children_before
    tasks = _leftover_tasks()
    problems = []
    if new_threads:
        problems.append(f"threads left running: {sorted(t.name for t in new_threads)}")
    if new_children:
        problems.append(f"child processes left running: {sorted(new_children)}")
    if tasks:
        problems.append(f"asyncio tasks left pending: {tasks}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
