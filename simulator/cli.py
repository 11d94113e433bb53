import typer

sim_app = typer.Typer(no_args_is_help=True)
