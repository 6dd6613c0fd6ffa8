"""gkdcn report: the HTML report of a comparison run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gkdcn.cli.common import (
    Overwrite,
    console,
    friendly,
)


@friendly
def report(
    run_dir: Annotated[Path, typer.Argument(help="A comparison run folder.")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file (default RUN_DIR/report.html).")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Build a self-contained HTML report from a comparison run."""
    from gkdcn.report import build_report

    path = build_report(run_dir, out, overwrite=overwrite)
    console.print(f"wrote report: {path}")
