"""gkdcn init: a commented study config from the files found in a folder."""

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
def init(
    data_dir: Annotated[Path, typer.Argument(help="Folder with element grids, deposits, faults.")],
    out: Annotated[
        Path | None, typer.Option(help="Config to write (default DATA_DIR/study.toml).")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Write a commented study.toml from the files found in a folder (every guess stated)."""
    from gkdcn.data.discover import discover, write_study

    found = discover(data_dir)
    for key, lines in found.comments.items():
        for line in lines:
            console.print(f"{key}: {line}", soft_wrap=True)
    for note in found.notes:
        console.print(f"note: {note}", soft_wrap=True)
    path = write_study(found, out, overwrite=overwrite)
    console.print(f"wrote {path}; check it, then run: gkdcn prepare {path}", soft_wrap=True)
