"""gkdcn predict: map the anomaly probability with one or more model files."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Annotated

import typer

from gkdcn.cli.common import (
    DataDir,
    Device,
    Overwrite,
    SchedulerOption,
    console,
    device_type,
    friendly,
    progress_bar,
)
from gkdcn.config import MAX_BATCH
from gkdcn.errors import GkdcnError


@friendly
def predict(
    models: Annotated[
        list[Path],
        typer.Argument(metavar="MODEL...", help="Model file(s); several form an ensemble."),
    ],
    data: Annotated[
        Path,
        typer.Argument(
            metavar="CONFIG_OR_DATA",
            help="Study config (TOML), element folder or multi-band GeoTIFF.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output GeoTIFF.")],
    data_dir: DataDir = None,
    csv: Annotated[Path | None, typer.Option(help="Also write x, y, probability as CSV.")] = None,
    mc_dropout: Annotated[
        int, typer.Option(help="Monte-Carlo dropout passes (adds a std band).")
    ] = 0,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, max=MAX_BATCH, help="Windows per batch (default: the config's \\[predict])."
        ),
    ] = None,
    block_rows: Annotated[
        int | None,
        typer.Option(
            min=1, max=65_536, help="Rows per streamed block (default: the config's \\[predict])."
        ),
    ] = None,
    device: Device = "auto",
    cog: Annotated[bool, typer.Option(help="Write a Cloud-Optimized GeoTIFF.")] = False,
    overwrite: Overwrite = False,
    scheduler: SchedulerOption = None,
) -> None:
    """Map the anomaly probability of every valid cell onto the element grid (GeoTIFF)."""
    from gkdcn.io.atomic import check_writable
    from gkdcn.predict import MAX_MC_DROPOUT, check_output_names, predict_to_file

    if not 0 <= mc_dropout <= MAX_MC_DROPOUT:
        raise GkdcnError(f"--mc-dropout must be between 0 and {MAX_MC_DROPOUT}, not {mc_dropout}")
    check_output_names(out, csv)

    with contextlib.ExitStack() as stack:
        engine = None
        if scheduler is not None:
            from gkdcn.cluster import open_client, predict_map_on_cluster

            check_writable(out, overwrite)  # before a cluster is started or reached
            client = stack.enter_context(open_client(scheduler))
            engine = functools.partial(predict_map_on_cluster, client)
        progress = stack.enter_context(progress_bar())
        written = predict_to_file(
            models, data, out, csv_path=csv, data_dir=data_dir, mc_dropout=mc_dropout,
            batch_size=batch_size, block_rows=block_rows, device=device_type(device),
            overwrite=overwrite, progress=progress, cog=cog, engine=engine,
        )  # fmt: skip
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"wrote {written[0].with_suffix('.qml')} (QGIS style)")
