import typer


def demo_command() -> None:
    raise typer.Exit(2)
