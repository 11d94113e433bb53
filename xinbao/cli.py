"""The one console script, ``xinbao``: each package contributes its own subcommands."""

import typer

from cloud_api.cli import api_command, audit_app
from firmware_bridge.cli import board_app
from locker_controller.cli import controller_command
from simulator.cli import sim_app
from xinbao.demo import USAGE as DEMO_USAGE
from xinbao.demo import demo_command

app = typer.Typer(
    help="Xinbao 24-hour self-service lockers (信包箱).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(board_app, name="board", help="Commission lock boards on an RS-485 bus.")
app.add_typer(sim_app, name="sim", help="Run virtual lock boards (the hardware simulator).")
app.add_typer(audit_app, name="audit", help="Check and export the audit trail (电子监察).")
app.command("api", help="Serve the cloud REST API.")(api_command)
app.command("controller", help="Run the edge controller of one cabinet.")(controller_command)
app.command("demo", help=DEMO_USAGE)(demo_command)


if __name__ == "__main__":
    app()
