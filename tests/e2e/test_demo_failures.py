"""``xinbao demo --scenario full`` when something goes wrong, and against a real broker.

A failing step ends the run with exit status 1 and a line naming the step, never a
traceback: first with the cabinet's lock boards unpowered (the simulator's ``absent`` fault,
injected through its control API as a tester would), then for replies a step cannot use
(not JSON, a field missing, no connection) in the journey itself. ``--mqtt-url`` and
``MQTT_URL`` put the demo on a real Mosquitto instead of the embedded broker.
"""

import asyncio
import re
import signal

import httpx
import pytest

from tests.support.demo_run import SCENARIO_TIMEOUT_S, START_TIMEOUT_S
from tests.support.waiting import free_port, wait_until
from xinbao.demo_scenario import FullJourney, StepFailed

PORTS = ["--api-port", "0", "--kiosk-port", "0", "--mqtt-port", "0"]


def _steps_ok(lines) -> list[str]:
    """The names of the steps printed as passed, in order."""
    found = (re.search(r"\[\s*\d+/\d+\] (.*?) \.\.\. ok", line) for line in lines)
    return [m.group(1) for m in found if m]


@pytest.mark.slow
def test_a_failing_step_is_named_and_the_exit_status_is_1(run_demo, tmp_path):
    sim_port = free_port()
    demo = run_demo(
        "--scenario",
        "full",
        "--data-dir",
        str(tmp_path / "data"),
        "--sim-port",
        str(sim_port),
        *PORTS,
    )
    sim = f"http://127.0.0.1:{sim_port}"

    def boards_unpowered() -> bool:
        try:
            for board, bus in ((1, "cu16"), (2, "bcc8a")):
                r = httpx.post(
                    f"{sim}/faults", json={"board": board, "bus": bus, "fault": "absent"}
                )
                assert r.status_code == 201, r.text
        except httpx.HTTPError:
            return False  # the simulator is not up yet
        return True

    wait_until(boards_unpowered, 90, "the demo's simulator panel")
    code = demo.finish(timeout=SCENARIO_TIMEOUT_S)
    assert code == 1, demo.output
    failed = "error: step 'drop-off code typed at the kiosk' failed: door 3 did not open"
    assert failed in demo.output, demo.output
    assert "Traceback" not in demo.output
    # Every step before it passed and was printed; none after it ran.
    assert (
        _steps_ok(demo.lines)[-1] == "code lost: a new one asked for at the kiosk, received by SMS"
    )
    assert "stopped" in demo.lines[-1]


def _cabinet_and_cloud_on(broker) -> bool:
    log = broker.log_text()
    return "as XA-DEMO-1 " in log and "as xinbao-cloud-" in log


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--mqtt-url", "MQTT_URL"])
def test_an_external_broker_carries_the_cabinet_and_the_cloud(run_demo, tmp_path, broker, how):
    """``--mqtt-url`` and ``MQTT_URL`` put the demo on a real Mosquitto instead of the
    embedded broker. (The full journey over Mosquitto is what every e2e test with a real
    controller and cloud does; the demo's own journey runs in tests/e2e/test_demo.py.)"""
    args = ["--data-dir", str(tmp_path / "data"), *PORTS, "--sim-port", "0"]
    if how == "--mqtt-url":
        demo = run_demo(*args, "--mqtt-url", broker.url())
    else:
        demo = run_demo(*args, env={"MQTT_URL": broker.url()})
    try:
        demo.wait_for_line(r"running; press Ctrl-C", START_TIMEOUT_S)
        assert "MQTT broker        external" in demo.output
        wait_until(
            lambda: _cabinet_and_cloud_on(broker),
            timeout=30,
            what="the cabinet and the cloud on the broker",
        )
        demo.process.send_signal(signal.SIGINT)
        assert demo.finish(timeout=30) == 0, demo.output
    finally:
        demo.kill()


# --- the journey's own error handling, against scripted replies ----------------------------


class _Stack:
    """What FullJourney uses of DemoStack, its HTTP client answering from a script."""

    api_url = "http://api.test"
    kiosk_url = "http://kiosk.test"
    sim_url = "http://sim.test"
    integrator_headers = {"X-API-Key": "k"}
    staff_headers = {"Authorization": "Bearer t"}

    def __init__(self, handler) -> None:
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))

    def check_children(self) -> None:
        pass


def _run(handler) -> tuple[StepFailed, list[str]]:
    said: list[str] = []

    async def go() -> None:
        stack = _Stack(handler)
        try:
            await FullJourney(stack, said.append, step_timeout=5).run()
        finally:
            await stack.http.aclose()

    with pytest.raises(StepFailed) as failed:
        asyncio.run(go())
    return failed.value, said


def test_a_reply_that_is_not_json_names_the_step():
    failed, said = _run(lambda request: httpx.Response(201, text="<html>proxy error</html>"))
    assert failed.step == "webhook receiver started, subscribed (admin API)"
    assert "unexpected reply (JSONDecodeError" in str(failed)
    assert _steps_ok(said) == []


def test_a_reply_missing_a_field_names_the_step():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/handovers/dropoff":
            return httpx.Response(201, json={"state": "reserved"})  # no "id"
        if request.url.path == "/api/v1/api-keys":
            return httpx.Response(200, json=[{"id": 1, "name": "k", "active": True}])
        if request.url.path == "/api/v1/webhooks/subscribers":
            return httpx.Response(201, json={"secret": "s"})
        return httpx.Response(201, json={})

    failed, said = _run(handler)
    assert failed.step == "drop-off reserved"
    assert "unexpected reply (KeyError: 'id')" in str(failed)
    assert _steps_ok(said) == [
        "webhook receiver started, subscribed (admin API)",
        "record created (integrator API)",
        "pre-review passed",
    ]


def test_no_connection_names_the_step():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    failed, _ = _run(handler)
    assert failed.step == "webhook receiver started, subscribed (admin API)"
    assert "ConnectError: connection refused" in str(failed)
