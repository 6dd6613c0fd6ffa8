"""Command-line interface: a thin Typer layer over the library API."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def main() -> None:
    """gkdcn: geochemical anomaly patterns with geology-guided deformable convolutions."""
