import typer


def controller_command() -> None:
    raise typer.Exit(2)
