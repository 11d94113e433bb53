"""The autouse health fixture (tests/conftest.py) fails a test for each kind of leak, and
passes one that cleans up: an inner pytest session, run in a subprocess with the suite's own
conftest, is the test subject (run in this process, its leaks would be this test's leaks)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each runs whole pytest sessions in child processes

SUITE_CONFTEST = Path(__file__).parent.parent / "conftest.py"

INNER_TESTS = """
import asyncio
import subprocess
import sys
import threading

import pytest


@pytest.mark.slow
def test_clean_threads_tasks_and_processes():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="joined-thread")
    thread.start()
    stop.set()
    thread.join()
    subprocess.run([sys.executable, "-c", "pass"], check=True)

    async def main():
        asyncio.create_task(asyncio.sleep(30))  # asyncio.run cancels it on the way out

    asyncio.run(main())


def test_leaks_a_thread():
    threading.Thread(target=threading.Event().wait, args=(30,), name="leaky-thread",
                     daemon=True).start()


@pytest.mark.slow
@pytest.mark.slow
def test_leaks_a_child_process():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(4)"])


def test_leaks_a_task_in_a_loop_left_open():
    loop = asyncio.new_event_loop()
    loop.create_task(asyncio.sleep(30), name="task-in-open-loop")


def test_leaks_a_task_in_a_loop_of_another_thread():
    def worker():
        loop = asyncio.new_event_loop()

        async def main():
            asyncio.get_running_loop().create_task(asyncio.sleep(30), name="task-of-thread")

        loop.run_until_complete(main())  # the thread ends; its loop keeps the task

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()


def test_leaks_a_task_in_a_loop_closed_under_it():
    loop = asyncio.new_event_loop()
    loop.create_task(asyncio.sleep(30), name="task-of-closed-loop")
    loop.close()


def test_starts_a_child_process_but_is_not_marked_slow():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""

INNER_INI = """[pytest]
markers =
    slow: starts child processes
"""


# The suite runs under pytest-xdist: the fixture must catch every leak in a worker too.
@pytest.fixture(params=[[], ["-n", "2"]], ids=["one process", "xdist workers"])
def inner(request, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.RunResult:
    pytester.makeconftest(SUITE_CONFTEST.read_text())
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_inner=INNER_TESTS)
    # A short grace period: every leak here is meant to outlive it.
    monkeypatch.setenv("XINBAO_LEAK_GRACE_S", "0.5")
    # The suite's conftest imports the suite's helpers (tests.support).
    monkeypatch.setenv("PYTHONPATH", str(SUITE_CONFTEST.parent.parent))
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", *request.param, timeout=120
    )


def test_each_kind_of_leak_fails_its_test_and_a_clean_test_passes(inner):
    # 7 tests pass their body; the 5 leaky ones and the unmarked child-starter then fail in
    # the fixture's teardown.
    inner.assert_outcomes(passed=7, errors=6)
    output = inner.stdout.str()
    errors = [line for line in output.splitlines() if line.startswith("ERROR test_inner.py::")]
    assert sorted(e.split("::")[1].split()[0] for e in errors) == [
        "test_leaks_a_child_process",
        "test_leaks_a_task_in_a_loop_closed_under_it",
        "test_leaks_a_task_in_a_loop_left_open",
        "test_leaks_a_task_in_a_loop_of_another_thread",
        "test_leaks_a_thread",
        "test_starts_a_child_process_but_is_not_marked_slow",
    ]
    assert "threads left running: ['leaky-thread']" in output
    assert "child processes left running: [" in output
    assert "started a child process (python" in output and "is not marked slow" in output
    # A pending task is reported as left pending while its loop lives, or as destroyed while
    # pending once the garbage collector has taken its loop: either way its test fails.
    for task in ("task-in-open-loop", "task-of-thread", "task-of-closed-loop"):
        assert f"asyncio tasks left pending: ['{task} (" in output or (
            f"asyncio tasks destroyed while pending: [\"<Task pending name='{task}'" in output
        ), task
