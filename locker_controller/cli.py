"""``xinbao controller --config FILE``: run the edge controller of one cabinet."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from locker_controller.errors import ControllerError


def controller_command(
    config: Annotated[Path, typer.Option("--config", help="The cabinet's TOML config file.")],
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the controller until SIGINT/SIGTERM. Exit 2: bad config; 1: could not start."""
    from locker_controller.app import Controller
    from locker_controller.config import load_config

    # `kill -USR1 <pid>` writes every thread's stack to stderr: how a technician (or a test)
    # finds out where a controller that will not stop is stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_config(config)
    except ControllerError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # `kill -USR2 <pid>`: what every asyncio task is waiting for, on stderr.
        loop.add_signal_handler(signal.SIGUSR2, _print_tasks)
        await Controller(settings).run(stop)

    try:
        asyncio.run(main())
    except ControllerError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


def _print_tasks() -> None:
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
