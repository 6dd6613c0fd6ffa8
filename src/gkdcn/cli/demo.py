"""gkdcn demo: the whole pipeline on a generated district."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gkdcn.cli.common import (
    Jobs,
    Overwrite,
    console,
    friendly,
    progress_bar,
    say,
    workers,
)
from gkdcn.config import MAX_SEED


@friendly
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path(
        "gkdcn-demo"
    ),
    overwrite: Overwrite = False,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed of the synthetic district.")
    ] = 0,
    jobs: Jobs = None,
) -> None:
    """Run the whole pipeline on a generated district and write DIR/report.html."""
    from gkdcn.demo import run_demo

    with progress_bar() as progress:
        report_path = run_demo(
            out, overwrite=overwrite, seed=seed, workers=workers(jobs), progress=progress,
            log=lambda text: console.print(text, soft_wrap=True),
        )  # fmt: skip
    console.print()
    say("done.", f"Open the report: {report_path.resolve()}", err=False)
