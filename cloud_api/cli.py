import typer

audit_app = typer.Typer(no_args_is_help=True)


def api_command() -> None:
    raise typer.Exit(2)
