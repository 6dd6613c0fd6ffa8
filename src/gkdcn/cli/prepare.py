"""gkdcn prepare: read and align a study, cut its samples, print a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gkdcn.cli.common import (
    DataDir,
    Overwrite,
    console,
    friendly,
    read_config,
)


@friendly
def prepare(
    config: Annotated[Path, typer.Argument(help="Study config (TOML).")],
    data_dir: DataDir = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the prepared dataset (default: print only).")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Read and align the inputs, place the sites, cut the samples; print a summary."""
    from gkdcn.console import format_summary
    from gkdcn.data.study import build_samples, check_window, load_study, save_prepared, summarize

    cfg = read_config(config, data_dir)
    if out is not None:
        from gkdcn.io.atomic import check_writable

        check_writable(out, overwrite, inputs=[config, *cfg.input_paths()], folder=True)
    study = load_study(cfg)
    check_window(study, config)
    samples, splits = build_samples(study)
    console.print(format_summary(summarize(study, samples, splits)))
    if out is not None:
        save_prepared(study, out, overwrite=overwrite, inputs=[config])
        console.print(f"wrote prepared dataset to {out}")
