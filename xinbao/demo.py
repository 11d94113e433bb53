"""``xinbao demo``: the whole system on one machine, with nothing to install or configure.

    xinbao demo                      # run until Ctrl-C; prints addresses and credentials
    xinbao demo --scenario full      # drive the whole journey, exit 0 on success

Exit status: 0 stopped cleanly (or the journey passed), 1 a step or a component failed,
2 bad arguments, a port in use, or an unusable data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import httpx
import typer

from xinbao.demo_processes import DemoError, UsageError, resolve_ports

T = TypeVar("T")

USAGE = (
    "Run the whole system on embedded defaults (SQLite, embedded MQTT broker, console SMS, "
    "simulated cabinet): `xinbao demo`, or `xinbao demo --scenario full` to drive one "
    "applicant's whole journey and exit 0 on success."
)
SMS_ECHO_INTERVAL_S = 1.0


class Scenario(StrEnum):
    full = "full"


def say(line: str) -> None:
    print(line, flush=True)


def demo_command(
    scenario: Annotated[
        Scenario | None,
        typer.Option(
            help="Drive a journey instead of waiting: `xinbao demo --scenario full` runs one "
            "applicant from drop-off to pickup, printing each step, and exits 0 on success."
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(help="Where the demo keeps its database, config and logs (reused)."),
    ] = Path("xinbao-data"),
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Wipe the data directory's demo data first.")
    ] = False,
    api_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Cloud API and dashboard (0: any free).")
    ] = 8000,
    kiosk_port: Annotated[
        int, typer.Option(min=0, max=65535, help="The cabinet's kiosk page (0: any free).")
    ] = 8080,
    sim_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Simulator panel for testers (0: any free).")
    ] = 8700,
    mqtt_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="Embedded MQTT broker; 0 (the default) takes any free port and prints it, "
            "since machines often run their own broker on 1883.",
        ),
    ] = 0,
    mqtt_url: Annotated[
        str | None,
        typer.Option(
            envvar="MQTT_URL",
            help="Use this broker (mqtt://user:password@host:port) instead of the embedded one.",
        ),
    ] = None,
) -> None:
    from xinbao.demo_stack import DemoOptions, split_mqtt_url

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    wanted = {"api": api_port, "kiosk": kiosk_port, "sim": sim_port, "mqtt": mqtt_port}
    if mqtt_url is not None:
        wanted["mqtt"] = 0  # no embedded broker: its port is not needed
    try:
        if mqtt_url is not None:
            split_mqtt_url(mqtt_url)
        ports = resolve_ports(wanted, {name: f"--{name}-port" for name in wanted})
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(err.exit_code) from None
    options = DemoOptions(data_dir=data_dir, fresh=fresh, ports=ports, mqtt_url=mqtt_url)
    code = asyncio.run(_main(options, scenario))
    raise typer.Exit(code)


demo_command.__doc__ = USAGE


async def _until(work: Awaitable[T], stop: asyncio.Event) -> tuple[bool, T | None]:
    """Run ``work`` unless ``stop`` is set first: (finished, result)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
    if task.done():
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False, None


async def _main(options, scenario: Scenario | None) -> int:
    from xinbao.demo_scenario import run_full_journey
    from xinbao.demo_stack import DemoStack

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = DemoStack(options, say)
    code = 0
    try:
        finished, _ = await _until(stack.start(), stop)
        if finished:
            _banner(stack)
            if scenario is Scenario.full:
                finished, _ = await _until(run_full_journey(stack, say), stop)
            else:
                say("running; press Ctrl-C to stop")
                await _serve(stack, stop)
                finished = True
        if not finished:
            say("interrupted")
    except DemoError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        code = err.exit_code
    finally:
        say("stopping ...")
        await stack.stop()
        say("stopped")
    return code


async def _serve(stack, stop: asyncio.Event) -> None:
    """Until Ctrl-C/SIGTERM: watch the children and show each SMS the console 'sends'."""
    seen: set[str] = set()
    first = True
    while not stop.is_set():
        stack.check_children()
        # The echo is a nicety: a slow or restarting API must not end the demo.
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            seen, first = await _echo_sms(stack, seen, first)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SMS_ECHO_INTERVAL_S)


async def _echo_sms(stack, seen: set[str], first: bool) -> tuple[set[str], bool]:
    response = await stack.http.get(
        f"{stack.api_url}/api/v1/sms/console-inbox",
        headers=stack.staff_headers,
        params={"limit": 50},
    )
    if response.status_code != 200:
        return seen, first
    for sms in reversed(response.json()):
        if sms["sid"] not in seen:
            seen.add(sms["sid"])
            if not first:
                say(f"SMS to {sms['to']}: {sms['body']}")
    return seen, False


def _banner(stack) -> None:
    from xinbao.demo_setup import LOCKER_ID, STAFF_USERNAME

    state = stack.state
    lines = [
        "",
        "Xinbao demo is up",
        f"  staff dashboard    {stack.api_url}/dashboard/",
        f"  cabinet kiosk      {stack.kiosk_url}/",
        f"  simulator panel    {stack.sim_url}/",
        f"  API docs           {stack.api_url}/docs",
        f"  locker             {LOCKER_ID} (8 compartments: kerong-cu16 board 1, bcc-8a board 2)",
        f"  MQTT broker        {stack.broker.url if stack.broker else 'external'}",
        "demo staff (dashboard: user name + password + TOTP; cabinet: staff number + the",
        "  staff pass the dashboard issues for the cabinet, under Lockers)",
        f"  user name          {STAFF_USERNAME}",
        f"  password           {state.staff_password}",
        f"  TOTP secret        {state.totp_secret}",
        f"  otpauth URI        {state.otpauth_uri}",
        "integrator (approval system)",
        f"  API key            {state.api_key}   (header X-API-Key)",
        f"logs in {stack.data.log_dir}",
        "",
    ]
    for line in lines:
        say(line)
