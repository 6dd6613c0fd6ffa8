"""gkdcn grid: point geochemistry gridded into one GeoTIFF per element."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from gkdcn.cli.common import (
    Overwrite,
    console,
    friendly,
    say,
)


@friendly
def grid(
    samples: Annotated[
        Path, typer.Argument(help="Point samples: CSV with coordinate columns, or a vector file.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for <element>.tif: a study's elements folder.")],
    x: Annotated[str, typer.Option(help="x column of a CSV or Excel table (any case).")] = "x",
    y: Annotated[str, typer.Option(help="y column of a CSV or Excel table (any case).")] = "y",
    crs: Annotated[
        str | None, typer.Option(help="CRS of CSV coordinates, e.g. EPSG:32645.")
    ] = None,
    columns: Annotated[
        str | None, typer.Option(help="Comma-separated columns to grid (default: all numeric).")
    ] = None,
    cell: Annotated[
        float | None, typer.Option(help="Cell size in map units (default: from the spacing).")
    ] = None,
    like: Annotated[
        Path | None, typer.Option(help="Grid onto the grid of this raster instead.")
    ] = None,
    to_crs: Annotated[
        str | None,
        typer.Option(help="Projected CRS to grid in (default for lon/lat: the UTM zone)."),
    ] = None,
    method: Annotated[str, typer.Option(help="idw or verde-spline.")] = "idw",
    max_distance: Annotated[
        float | None,
        typer.Option(help="Cells farther than this from every sample are nodata (map units)."),
    ] = None,
    nodata: Annotated[
        list[float] | None, typer.Option(help="Missing-value code in the samples (repeatable).")
    ] = None,
    below_detection: Annotated[
        str,
        typer.Option(
            help="Values below detection (-d, <d, BDL, n.d., zeros, below a detection-limit "
            "column): half (d/2), nodata, or keep (negative numbers and zeros kept as they are)."
        ),
    ] = "half",
    survey_column: Annotated[
        str | None,
        typer.Option(help="Column of survey codes (warns when survey medians differ > 10x)."),
    ] = None,
    level: Annotated[
        str,
        typer.Option(
            help="Levelling by survey: none, quantile (each survey matched to the pooled "
            "distribution) or robust-z (each survey's log median and MAD set to the pooled ones)."
        ),
    ] = "none",
    overwrite: Overwrite = False,
) -> None:
    """Grid point geochemistry (CSV, Excel or a vector file) into one GeoTIFF per element.

    With a cross-validated error; every rule applied is stated.
    """
    from gkdcn.data.gridding import (
        CV_FILE,
        BelowDetection,
        GriddingOptions,
        GridMethod,
        LevelMethod,
        format_cross_validation,
        grid_file,
        parse_columns,
    )

    options = GriddingOptions(
        x=x, y=y, crs=crs, columns=parse_columns(columns), cell=cell, like=like, to_crs=to_crs,
        # Plain str options, so a wrong value gets grid_file's one-line error (it checks both).
        method=cast("GridMethod", method),
        max_distance=max_distance, nodata=tuple(nodata or ()),
        below_detection=cast("BelowDetection", below_detection),
        survey_column=survey_column, level=cast("LevelMethod", level),
    )  # fmt: skip
    log = lambda text: console.print(f"note: {text}", soft_wrap=True)  # noqa: E731
    warn = lambda text: say("warning:", text)  # noqa: E731
    result = grid_file(samples, out, options, overwrite=overwrite, log=log, warn=warn)
    # soft_wrap: the table's lines stay whole in a log, whatever the terminal width.
    console.print(format_cross_validation(result.cross_validation), soft_wrap=True)
    console.print(
        f"wrote {len(result.layers)} element grids ({result.grid.height} x {result.grid.width}) "
        f'and {CV_FILE} to {out}; use it as [elements] path = "{out}", or run '
        f"gkdcn init {out.parent} with the deposits and faults there",
        soft_wrap=True,
    )
