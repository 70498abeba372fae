"""The typer application behind the ``seqlvm`` console script."""

import typer

app = typer.Typer(help="seqlvm: sequential latent-variable models.", no_args_is_help=True)


def main() -> None:
    app()
